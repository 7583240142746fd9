"""The dataset type: float32 images in [0,1] (NCHW) with integer labels.

Its own module so that the readers (:mod:`modelproof.data.loaders`) and the named datasets and splits
(:mod:`modelproof.data`, which re-exports it) both build on it without importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
import hashlib

import numpy as np
import torch
import torch.nn.functional as F

from ..util.errors import DataError


@dataclass(frozen=True)
class Dataset:
    """Images (float32, NCHW, values in [0,1]) with int64 labels in [0, num_classes)."""

    images: torch.Tensor
    labels: torch.Tensor
    class_names: tuple[str, ...]
    name: str = "dataset"
    meta: dict = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        x, y = self.images, self.labels
        if not isinstance(x, torch.Tensor) or x.dtype != torch.float32 or x.dim() != 4:
            raise DataError(f"{self.name}: images must be a float32 tensor of shape (N, C, H, W), "
                            f"got {getattr(x, 'dtype', type(x))} with shape {tuple(getattr(x, 'shape', ()))}")
        if not isinstance(y, torch.Tensor) or y.dtype != torch.int64 or y.shape != (x.shape[0],):
            raise DataError(f"{self.name}: labels must be an int64 tensor of shape ({x.shape[0]},), "
                            f"got {getattr(y, 'dtype', type(y))} with shape {tuple(getattr(y, 'shape', ()))}")
        if x.numel() and (float(x.min()) < 0.0 or float(x.max()) > 1.0):
            raise DataError(f"{self.name}: image values must lie in [0, 1], got [{float(x.min()):.3g}, {float(x.max()):.3g}]")
        if y.numel() and (int(y.min()) < 0 or int(y.max()) >= len(self.class_names)):
            raise DataError(f"{self.name}: labels must lie in [0, {len(self.class_names)}), "
                            f"got [{int(y.min())}, {int(y.max())}]")

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(channels, height, width) of one image."""
        return tuple(int(s) for s in self.images.shape[1:])  # type: ignore[return-value]

    def subset(self, indices: torch.Tensor | np.ndarray | list[int], name: str | None = None) -> Dataset:
        """The examples at ``indices`` (in that order)."""
        idx = torch.as_tensor(indices, dtype=torch.int64)
        return Dataset(self.images[idx], self.labels[idx], self.class_names, name or self.name, dict(self.meta))

    def resized(self, size: int) -> Dataset:
        """The same dataset with images bilinearly resized to ``size`` x ``size``."""
        if size < 4:
            raise DataError(f"image size must be at least 4 pixels, got {size}")
        if self.images.shape[-1] == size and self.images.shape[-2] == size:
            return self
        x = F.interpolate(self.images, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        return Dataset(x.clamp_(0.0, 1.0), self.labels, self.class_names, self.name, dict(self.meta))

    def digest(self) -> str:
        """SHA-256 of the images and labels: which data (and split) something was made from."""
        return hashlib.sha256(self.images.numpy().tobytes() + self.labels.numpy().tobytes()).hexdigest()

    def class_counts(self) -> list[int]:
        return torch.bincount(self.labels, minlength=self.num_classes).tolist()


__all__ = ["Dataset"]
