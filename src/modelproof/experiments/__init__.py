"""Experiments: the grid of protections x attacks x negatives, its cache, executors and report; the demo.

``load_config`` reads a TOML grid (``experiments/*.toml``), ``run_experiment`` runs it (cached,
resumable, local processes or Ray) and writes the payoff tables and the HTML report; ``run_demo`` is
the end-to-end story on the bundled digits. ``populations``, ``metrics`` and ``plots`` hold the
suspect populations, ROC / ARUC metrics and curves of the fingerprint benchmarks. Heavy optional
extras (matplotlib, jinja2, Ray) are imported on use.
"""

from __future__ import annotations

from .config import ExperimentConfig
from .demo import run_demo
from .parse import load_config, parse_config
from .run import run_experiment

__all__ = ["ExperimentConfig", "load_config", "parse_config", "run_demo", "run_experiment"]
