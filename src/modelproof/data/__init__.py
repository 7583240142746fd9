"""Datasets: the Dataset type (float images in [0,1], NCHW, integer labels), owner/attacker/test splits,
the readers of the published file formats, and checksum-verified downloads."""

from __future__ import annotations

from .dataset import Dataset
from .splits import DATASETS, Splits, concat, load_dataset, load_digits, load_splits, split_dataset
from .download import download_dataset

__all__ = [
    "DATASETS", "Dataset", "Splits", "concat", "download_dataset", "load_dataset", "load_digits",
    "load_splits", "split_dataset"
]
