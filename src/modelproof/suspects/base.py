"""The Suspect protocol and the checks every query and answer goes through.

A :class:`Suspect` is the smallest black box: ``predict(images) -> labels`` plus ``num_classes``,
``input_shape`` and an ``identity`` for reports. ``check_images`` and ``check_labels`` validate what
goes in and what comes back, so a malformed answer is an error, never a match.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from ..util.errors import ConfigError, SuspectError


INT_DTYPES = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)


@runtime_checkable
class Suspect(Protocol):
    """A black-box classifier: float32 NCHW images in [0,1] -> int64 labels of shape (N,)."""

    num_classes: int
    input_shape: tuple[int, int, int]
    identity: str

    def predict(self, images: torch.Tensor) -> torch.Tensor: ...


class BudgetExhausted(SuspectError):
    """Answering a batch would exceed the query budget; nothing of that batch was asked."""


def check_images(images: Any, input_shape: tuple[int, int, int], source: str = "suspect") -> torch.Tensor:
    """``images`` as a contiguous CPU float32 tensor (N, *input_shape) with finite values in [0,1], else ConfigError."""
    if not isinstance(images, torch.Tensor):
        raise ConfigError(f"{source}: queries must be a torch.Tensor, got {type(images).__name__}")
    if images.dtype != torch.float32:
        raise ConfigError(f"{source}: queries must be float32, got {images.dtype}")
    if images.dim() != 4 or tuple(images.shape[1:]) != tuple(input_shape):
        raise ConfigError(f"{source}: expects queries of shape (N, {', '.join(map(str, input_shape))}), "
                          f"got {tuple(images.shape)}")
    x = images.detach().cpu().contiguous()
    if x.numel() and not bool(torch.isfinite(x).all()):
        raise ConfigError(f"{source}: queries contain NaN or infinite values")
    if x.numel() and (float(x.min()) < 0.0 or float(x.max()) > 1.0):
        raise ConfigError(f"{source}: query values must lie in [0, 1], got [{float(x.min()):.3g}, {float(x.max()):.3g}]")
    return x


def check_labels(answer: Any, n: int, num_classes: int, source: str = "suspect") -> torch.Tensor:
    """A suspect's answer as int64 labels (n,), else SuspectError naming what was wrong."""
    if isinstance(answer, np.ndarray):
        answer = torch.from_numpy(np.ascontiguousarray(answer))
    if not isinstance(answer, torch.Tensor):
        raise SuspectError(f"{source} answered a {type(answer).__name__}, expected a tensor of labels")
    if answer.dim() == 2 and answer.shape[1] == 1:
        answer = answer.flatten()
    if answer.dim() != 1 or answer.shape[0] != n:
        raise SuspectError(f"{source} answered shape {tuple(answer.shape)} for {n} queries, expected ({n},)")
    if answer.is_floating_point() and not bool(torch.isfinite(answer).all()):
        raise SuspectError(f"{source} answered NaN or infinite labels")
    if answer.dtype not in INT_DTYPES:
        raise SuspectError(f"{source} answered labels of dtype {answer.dtype}, expected integers")
    labels = answer.to(torch.int64).cpu()
    if n and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise SuspectError(f"{source} answered label(s) outside [0, {num_classes}): "
                           f"{sorted({int(v) for v in labels if not 0 <= int(v) < num_classes})[:5]}")
    return labels


def labels_from_scores(scores: torch.Tensor, n: int, num_classes: int, source: str) -> torch.Tensor:
    """Argmax of (n, num_classes) finite scores; SuspectError on the wrong shape or NaN."""
    if scores.dim() != 2 or tuple(scores.shape) != (n, num_classes):
        raise SuspectError(f"{source} produced scores of shape {tuple(scores.shape)}, expected ({n}, {num_classes})")
    if not bool(torch.isfinite(scores).all()):
        raise SuspectError(f"{source} produced NaN or infinite scores")
    return scores.argmax(dim=1).to(torch.int64).cpu()


def input_digests(images: torch.Tensor) -> list[str]:
    """SHA-256 of each input's little-endian float32 bytes (what the query log stores instead of inputs)."""
    arr = np.ascontiguousarray(images.detach().cpu().numpy().astype("<f4", copy=False))
    return [hashlib.sha256(row.tobytes()).hexdigest() for row in arr]


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()
