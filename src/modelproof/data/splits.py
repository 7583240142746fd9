"""Datasets: float32 images in [0,1] (NCHW) with integer labels, and the owner/attacker/test split.

Every loader returns a :class:`Dataset`; :func:`load_splits` turns a named dataset into the three
disjoint parts the rest of the package uses. The attacker's share is all an attack may see.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from . import loaders
from .dataset import Dataset
from ..util.errors import DataError

DATASETS = ("digits", "mnist", "fashion-mnist", "cifar10", "cifar100", "npz", "folder")


@dataclass(frozen=True)
class Splits:
    """Disjoint owner / attacker / test parts of one dataset."""

    owner: Dataset
    attacker: Dataset
    test: Dataset

    @property
    def num_classes(self) -> int:
        return self.owner.num_classes

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return self.owner.input_shape


def concat(parts: list[Dataset], name: str | None = None) -> Dataset:
    """Concatenate datasets that share class names and image shape."""
    if not parts:
        raise DataError("cannot concatenate an empty list of datasets")
    first = parts[0]
    for p in parts[1:]:
        if p.class_names != first.class_names or p.input_shape != first.input_shape:
            raise DataError(f"cannot concatenate {p.name} {p.input_shape} with {first.name} {first.input_shape}")
    return Dataset(torch.cat([p.images for p in parts]), torch.cat([p.labels for p in parts]),
                   first.class_names, name or first.name, dict(first.meta))


def split_dataset(data: Dataset, fractions: tuple[float, float, float] = (0.5, 0.3, 0.2), *, seed: int = 0) -> Splits:
    """Split ``data`` into owner / attacker / test parts, stratified by class, deterministic in ``seed``."""
    if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1.0) > 1e-6:
        raise DataError(f"split fractions must be three non-negative numbers summing to 1, got {fractions}")
    gen = torch.Generator().manual_seed(seed)
    buckets: list[list[int]] = [[], [], []]
    for c in range(data.num_classes):
        idx = torch.nonzero(data.labels == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=gen)].tolist()
        a = round(len(idx) * fractions[0])
        b = a + round(len(idx) * fractions[1])
        buckets[0] += idx[:a]
        buckets[1] += idx[a:b]
        buckets[2] += idx[b:]
    parts = []
    for role, bucket in zip(("owner", "attacker", "test"), buckets):
        if not bucket:
            raise DataError(f"the {role} split of {data.name} would be empty with fractions {fractions}")
        order = torch.tensor(bucket)[torch.randperm(len(bucket), generator=gen)]
        parts.append(data.subset(order, name=f"{data.name}/{role}"))
    return Splits(*parts)


def load_digits(size: int | None = None) -> Dataset:
    """scikit-learn's bundled 8x8 handwritten digits (1,797 images), optionally resized."""
    from sklearn.datasets import load_digits as _sk_digits

    bunch = _sk_digits()
    x = torch.from_numpy(bunch.images.astype(np.float32) / 16.0).unsqueeze(1)
    y = torch.from_numpy(bunch.target.astype(np.int64))
    data = Dataset(x, y, tuple(str(i) for i in range(10)), "digits")
    return data.resized(size) if size else data


def load_dataset(name: str, root: str | Path | None = None, *, split: str = "train", size: int | None = None) -> Dataset:
    """Load a dataset by name. ``root`` is the folder holding its files (unused for ``digits``).

    ``split`` is ``train`` or ``test`` for datasets that ship both; ``size`` resizes square images.
    """
    if name == "digits":
        return load_digits(size)
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; expected one of {', '.join(DATASETS)}")
    if root is None:
        raise DataError(f"dataset {name!r} needs a folder: pass --data-dir (root=...)")
    if split not in ("train", "test"):
        raise DataError(f"split must be 'train' or 'test', got {split!r}")
    data = loaders.load(name, Path(root), split, size=size)
    return data.resized(size) if size else data


def load_splits(name: str = "digits", root: str | Path | None = None, *, size: int | None = None,
                attacker_fraction: float = 0.3, test_fraction: float = 0.2, seed: int = 0) -> Splits:
    """Owner / attacker / test splits of a named dataset.

    Datasets with an official test set keep it as ``test`` and split their training set between
    owner and attacker; the others (digits, npz, folder) are split three ways.
    """
    if not 0.0 < attacker_fraction < 1.0:
        raise DataError(f"attacker_fraction must lie in (0, 1), got {attacker_fraction}")
    if name in ("mnist", "fashion-mnist", "cifar10", "cifar100"):
        train = load_dataset(name, root, split="train", size=size)
        test = load_dataset(name, root, split="test", size=size)
        parts = _two_way(train, attacker_fraction, seed)
        return Splits(parts[0], parts[1], Dataset(test.images, test.labels, test.class_names, f"{name}/test"))
    data = load_dataset(name, root, size=size)
    owner_fraction = 1.0 - attacker_fraction - test_fraction
    return split_dataset(data, (owner_fraction, attacker_fraction, test_fraction), seed=seed)


def _two_way(data: Dataset, attacker_fraction: float, seed: int) -> tuple[Dataset, Dataset]:
    gen = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(data), generator=gen)
    cut = round(len(data) * (1.0 - attacker_fraction))
    return data.subset(perm[:cut], f"{data.name}/owner"), data.subset(perm[cut:], f"{data.name}/attacker")
