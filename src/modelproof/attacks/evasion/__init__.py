"""Evasion: the stolen model deployed unchanged behind a detector that answers key queries at random.

``build_pirate(model, surrogate)`` (Ray et al.) returns a :class:`PiratedModel`; the registered
attack ``pirate`` wraps it for ``run_attack`` and the CLI; ``detectors`` measures how detectable a
protection's key samples are (Li et al. §6.3).
"""

from __future__ import annotations

from .heatmaps import GRADCAM, SALIENCY, HeatmapExplainer
from .pirate import PiratedModel, build_pirate

__all__ = ["GRADCAM", "SALIENCY", "HeatmapExplainer", "PiratedModel", "build_pirate"]
