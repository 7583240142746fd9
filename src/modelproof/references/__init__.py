"""Reference populations: independent models trained once (or brought by the user) with a manifest,
split per key into selection references (choose the key) and calibration references (bound its null);
the calibration of a key's null on them, and the finished key (calibrated and self-checked)."""

from __future__ import annotations

from .calibration import DEFAULT_REFERENCES, MIN_REFERENCES, Reference, calibrate, match_count, reference_from_spec
from .population import train_references
from .finalize import FinalKey, finalize_key
from .store import Population, add_models, default_dir
from .build import build_population, ensure_population
from .sets import ReferenceSets, check_disjoint, reference_sets

__all__ = [
    "DEFAULT_REFERENCES", "FinalKey", "MIN_REFERENCES", "Population", "Reference", "ReferenceSets", "add_models",
    "build_population", "calibrate", "check_disjoint", "default_dir", "ensure_population", "finalize_key",
    "match_count", "reference_from_spec", "reference_sets", "train_references"
]
