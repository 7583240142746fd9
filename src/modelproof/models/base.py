"""The common shape of every zoo model: normalise inside, ``features`` to a flat vector, ``head``.

Models take images in [0,1] (the package-wide convention) and normalise internally, so a model
file, an ONNX export and an HTTP endpoint all accept the same inputs. The final ``nn.Linear`` is
always the attribute ``head``: attacks that retrain or re-initialise "the last layer" (IPGuard's
FTLL/RTLL) and the new-label watermark (one more output) rely on it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class Normalize(nn.Module):
    """(x - mean) / std per channel, with mean and std stored as buffers (saved with the weights)."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class ZooModel(nn.Module):
    """A classifier: ``head(features(normalize(x)))``; subclasses set ``features`` and ``head``."""

    features: nn.Module
    head: nn.Linear

    def __init__(self, input_shape: Sequence[int], num_classes: int,
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> None:
        super().__init__()
        channels = int(input_shape[0])
        self.input_shape = tuple(int(s) for s in input_shape)
        self.num_classes = int(num_classes)
        self.normalize = Normalize(mean if mean is not None else [0.0] * channels,
                                   std if std is not None else [1.0] * channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(self.normalize(x)))


def last_linear(model: nn.Module) -> tuple[str, nn.Linear]:
    """The name and module of the model's final classification layer (``head`` for zoo models)."""
    head = getattr(model, "head", None)
    if isinstance(head, nn.Linear):
        return "head", head
    found = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not found:
        from ..util.errors import ConfigError

        raise ConfigError(f"model {type(model).__name__} has no nn.Linear layer to act as its classifier head")
    return found[-1]
