"""Suspects: anything that answers labels for a batch of images; the query wrapper and its log; local
adapters (torch, ONNX, scikit-learn) and the HTTP client."""

from __future__ import annotations

from .base import BudgetExhausted, Suspect, check_images, check_labels, input_digests
from .queried import QueriedSuspect
from .local import OnnxSuspect, SklearnSuspect, TorchSuspect, open_suspect, train_random_forest
from .http.client import HttpSuspect

__all__ = [
    "BudgetExhausted", "HttpSuspect", "OnnxSuspect", "QueriedSuspect", "SklearnSuspect", "Suspect",
    "TorchSuspect", "check_images", "check_labels", "input_digests", "open_suspect", "train_random_forest"
]
