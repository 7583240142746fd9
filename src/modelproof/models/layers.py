"""Small shared pieces of the zoo: input-size checks, flat feature sizes, conv + BatchNorm blocks."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..util.errors import ConfigError


def require_min_side(arch: str, input_shape: Sequence[int], minimum: int) -> None:
    """Raise ConfigError unless both spatial sides of ``input_shape`` (C, H, W) are at least ``minimum``."""
    height, width = int(input_shape[1]), int(input_shape[2])
    if min(height, width) < minimum:
        raise ConfigError(
            f"architecture {arch!r} cannot handle input shape {tuple(int(s) for s in input_shape)}: "
            f"height and width must be at least {minimum} (minimum input shape "
            f"({int(input_shape[0])}, {minimum}, {minimum}))")


def flat_size(module: nn.Module, input_shape: Sequence[int]) -> int:
    """Number of features ``module`` produces per image, found by a dummy forward pass (eval mode, no grad).

    Eval mode keeps dropout from drawing random numbers and BatchNorm from updating its statistics.
    """
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            out = module(torch.zeros(1, *(int(s) for s in input_shape)))
    finally:
        module.train(was_training)
    return int(out.flatten(1).shape[1])


def conv_bn(in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
            groups: int = 1) -> nn.Sequential:
    """Conv (no bias: the BatchNorm after it has one) followed by BatchNorm2d; "same" padding."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2,
                  groups=groups, bias=False),
        nn.BatchNorm2d(out_channels),
    )


def global_pool() -> nn.Sequential:
    """Adaptive average pooling to 1x1 followed by flattening: [N, C, H, W] -> [N, C]."""
    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
