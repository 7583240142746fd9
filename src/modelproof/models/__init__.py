"""The model zoo: classifiers that take [0,1] images, normalise inside, and expose ``features`` and ``head``.

``build_model(name, num_classes, input_shape, seed=...)`` builds any architecture in
``ARCHITECTURES`` deterministically; ``describe(name)`` says what it is in one line.
"""

from __future__ import annotations

from .base import Normalize, ZooModel, last_linear
from .registry import ARCHITECTURES, ArchSpec, architecture_record, build_from_record, build_model, describe

__all__ = [
    "ARCHITECTURES",
    "ArchSpec",
    "Normalize",
    "ZooModel",
    "architecture_record",
    "build_from_record",
    "build_model",
    "describe",
    "last_linear",
]
