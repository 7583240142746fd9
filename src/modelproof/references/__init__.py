"""Reference populations: independent models, the calibration of a key's null on them, and the
finished key (calibrated and self-checked)."""

from __future__ import annotations

from .calibration import DEFAULT_REFERENCES, MIN_REFERENCES, Reference, calibrate, match_count, reference_from_spec
from .population import train_references
from .finalize import FinalKey, finalize_key

__all__ = [
    "DEFAULT_REFERENCES", "FinalKey", "MIN_REFERENCES", "Reference", "calibrate", "finalize_key",
    "match_count", "reference_from_spec", "train_references"
]
