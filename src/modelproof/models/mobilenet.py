"""MobileNetV2 for small images (Sandler et al. 2018, CIFAR strides of kuangliu/pytorch-cifar).

Inverted residual blocks: a 1x1 expansion (skipped when the expansion factor is 1), a 3x3
depthwise convolution carrying the stride, a linear 1x1 projection; each convolution has
BatchNorm, the first two ReLU6. The residual connection is used when the block keeps stride 1
and its width, as in the paper.

CIFAR changes, as kuangliu: the stem is a 3x3 stride-1 convolution (ImageNet: stride 2) and the
second stage has stride 1 (ImageNet: 2), so a 32x32 image reaches the last stages at 4x4.
Choices where kuangliu departs from the paper, we keep the paper: ReLU6 instead of ReLU, no 1x1
expansion when t = 1, and no 1x1 projection shortcut on stride-1 blocks that change width (those
blocks have no shortcut). The trunk ends with a 1x1 convolution to 1,280 channels and adaptive
average pooling, so any input of at least 1x1 works; the head is ``Linear(1280, num_classes)``.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from .base import ZooModel
from .layers import conv_bn, global_pool

MIN_SIDE = 1

# (expansion t, output channels c, repeats n, first stride s), kuangliu's CIFAR strides.
MOBILENETV2_CONFIG: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1),
    (6, 24, 2, 1),  # stride 2 on ImageNet
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
STEM_CHANNELS = 32
LAST_CHANNELS = 1280


class InvertedResidual(nn.Module):
    """Expand (1x1) -> depthwise 3x3 (stride) -> linear project (1x1), with a residual when shapes match."""

    def __init__(self, in_channels: int, out_channels: int, expansion: int, stride: int) -> None:
        super().__init__()
        hidden = in_channels * expansion
        layers: list[nn.Module] = []
        if expansion != 1:
            layers += [*conv_bn(in_channels, hidden, 1), nn.ReLU6()]
        layers += [*conv_bn(hidden, hidden, 3, stride, groups=hidden), nn.ReLU6()]
        layers += [*conv_bn(hidden, out_channels, 1)]
        self.body = nn.Sequential(*layers)
        self.use_residual = stride == 1 and in_channels == out_channels

    def forward(self, x: Tensor) -> Tensor:
        """body(x) + x when the block keeps its shape, else body(x)."""
        out = self.body(x)
        return out + x if self.use_residual else out


class MobileNetV2(ZooModel):
    """MobileNetV2 (width multiplier 1.0) with CIFAR strides: stem -> 17 inverted residuals -> 1x1
    conv to 1,280 -> global average pool -> head."""

    def __init__(self, input_shape: Sequence[int], num_classes: int, mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None) -> None:
        super().__init__(input_shape, num_classes, mean, std)
        layers: list[nn.Module] = [*conv_bn(self.input_shape[0], STEM_CHANNELS, 3), nn.ReLU6()]
        channels = STEM_CHANNELS
        for expansion, out_channels, repeats, stride in MOBILENETV2_CONFIG:
            for i in range(repeats):
                layers.append(InvertedResidual(channels, out_channels, expansion, stride if i == 0 else 1))
                channels = out_channels
        layers += [*conv_bn(channels, LAST_CHANNELS, 1), nn.ReLU6()]
        self.features = nn.Sequential(*layers, *global_pool())
        self.head = nn.Linear(LAST_CHANNELS, num_classes)
