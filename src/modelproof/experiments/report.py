"""``write_report(out)``: one self-contained HTML page from an experiment folder's results.

No network, no external scripts, fonts or styles: CSS is inline and figures are PNG data URIs.
A tiny inline script marks the page once every image has decoded (``data-images-ok`` and
``data-images-broken`` on ``<body>``), which the headless-browser test reads. Key samples are
shown only when the config's ``report.show_keys`` is true (off by default: key samples are secret
until you choose to show them); the config is shown with its ``secret`` values redacted (every key's
secret is derived from them). An evidence report (``modelproof.verification.report``) never shows either.
"""

from __future__ import annotations

import json
import platform
import re
from collections import defaultdict
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

from ..util.errors import ConfigError
from ..util.files import atomic_write_bytes
from .payoff import attack_summaries, cell_words, payoff_cells, protection_summaries

TEMPLATE = "report.html.j2"  # beside this module (package data)


def redact_secrets(config_text: str) -> str:
    """A config's TOML text with the value of every ``secret = ...`` line replaced by ``"[redacted]"``."""
    return re.sub(r'(?m)^(\s*secret\s*=\s*).*$', r'\1"[redacted]"', config_text)


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version(), "platform": platform.platform()}
    for dist in ("modelproof", "torch", "numpy", "scikit-learn", "matplotlib", "jinja2", "ray"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return out


def _fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _count(value: float | None) -> str:
    """A mean number of queries as a whole number (one cannot ask 30.4 questions)."""
    return "-" if value is None else str(round(value))


def _sci(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.1e}" if value > 0 else "<1e-300"  # a p-value below the smallest float, not zero


def _group(title: str, rows: list[dict]) -> dict:
    from .figures import robustness_curves, roc_figure

    from .survival import LEGEND, survival_matrices

    cells = payoff_cells(rows)
    protections = protection_summaries(rows)
    (survival,) = survival_matrices(rows)
    return {"title": title, "survival": survival, "legend": LEGEND, "attacks": list(dict.fromkeys(c.attack for c in cells)), "protections": protections,
            "cells": {(c.protection, c.attack): c for c in cells}, "by_attack": attack_summaries(rows),
            "special": [r for r in rows if r.get("attack_kind") in ("evasion", "forgery") and r["role"] == "positive"],
            "curves": robustness_curves(rows),
            "roc": roc_figure({p.protection: p.roc for p in protections if p.roc})}


def _key_previews(out: Path, rows: list[dict], show: bool) -> list[tuple[str, str]]:
    """A key-sample grid per protection (its first key in the rows), read from the cached protect result."""
    from .figures import key_grid

    grids: dict[str, str] = {}
    for r in rows:
        path = out / "cache" / "protect" / f"{r['key_hash']}.json"
        if show and r["protection"] not in grids and path.is_file():
            preview = json.loads(path.read_text()).get("preview")
            if preview:
                grids[r["protection"]] = key_grid(preview)
    return list(grids.items())


def write_report(out: str | Path) -> Path:
    """Write ``out/report.html`` from ``out/results.json`` and the cache; returns its path."""
    try:
        import jinja2
    except ImportError:
        raise ConfigError("the experiment report needs jinja2: pip install 'modelproof[report]'") from None
    out = Path(out)
    if not (out / "results.json").is_file():
        raise ConfigError(f"{out} holds no experiment results (results.json); run `modelproof experiment run` first")
    rows = json.loads((out / "results.json").read_text())
    config_text = (out / "config.toml").read_text() if (out / "config.toml").is_file() else ""
    failures = json.loads((out / "failures.json").read_text()) if (out / "failures.json").is_file() else []
    by_group: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for r in rows:
        by_group[(r["dataset"], r["host"])].append(r)
    import tomllib

    raw = tomllib.loads(config_text) if config_text else {}
    ver = raw.get("verification", {})
    plaus = raw.get("plausibility", {})
    from importlib.resources import files

    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    template = files("modelproof.experiments").joinpath(TEMPLATE).read_text(encoding="utf-8")
    html = env.from_string(template).render(
        name=raw.get("experiment", {}).get("name", out.name),
        cells=len({r["config_hash"] for r in rows if r["role"] == "positive"}),
        rows=len(rows), created=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        verification=f"{ver.get('mode', 'fixed')}, alpha {ver.get('alpha', 0.01)}, budget {ver.get('budget', 'none')}",
        rule=", ".join(f"{k} {v}" for k, v in plaus.items()) or "max_drop 0.03",
        groups=[_group(f"{d} / {h}", g) for (d, h), g in by_group.items()],
        keys=_key_previews(out, rows, raw.get("report", {}).get("show_keys", False)),
        failures=failures, config=redact_secrets(config_text), versions=_versions(), fmt=_fmt, sci=_sci, count=_count,
        words=cell_words)
    path = out / "report.html"
    atomic_write_bytes(path, html.encode())
    return path
