"""VGG-11/13/16/19 for small images (CIFAR-style, with BatchNorm), after kuangliu/pytorch-cifar.

Each 3x3 convolution is followed by BatchNorm and ReLU; "M" is a 2x2 max pool. To accept images
smaller than 32x32 (28x28 digits, 8x8 digits), the spatial size is tracked at build time and a
max pool that would shrink a side below 1 is skipped. The trunk ends with adaptive average
pooling to 1x1, so the head is always ``Linear(512, num_classes)``.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from ..util.errors import ConfigError
from .base import ZooModel
from .layers import global_pool

# Channel configurations of kuangliu/pytorch-cifar (models/vgg.py); "M" = 2x2 max pool.
VGG_CONFIGS: dict[int, tuple[int | str, ...]] = {
    11: (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    13: (64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    16: (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"),
    19: (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
         512, 512, 512, 512, "M"),
}

MIN_SIDE = 1


def vgg_trunk(config: Sequence[int | str], in_channels: int, height: int, width: int) -> nn.Sequential:
    """Conv-BN-ReLU layers and max pools from ``config``, skipping pools that would empty a side.

    Choice: the convolutions carry no bias (kuangliu's do), since the BatchNorm right after them
    cancels a bias exactly; the function computed is the same and no parameter is left dead.
    """
    layers: list[nn.Module] = []
    channels = in_channels
    for item in config:
        if item == "M":
            if min(height, width) >= 2:
                layers.append(nn.MaxPool2d(2))
                height, width = height // 2, width // 2
            continue
        out = int(item)
        layers += [nn.Conv2d(channels, out, 3, padding=1, bias=False), nn.BatchNorm2d(out), nn.ReLU()]
        channels = out
    return nn.Sequential(*layers)


class VGG(ZooModel):
    """VGG-``depth`` (11, 13, 16 or 19) with BatchNorm: conv trunk -> global average pool -> head."""

    def __init__(self, input_shape: Sequence[int], num_classes: int, mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None, *, depth: int = 16) -> None:
        super().__init__(input_shape, num_classes, mean, std)
        if depth not in VGG_CONFIGS:
            raise ConfigError(f"VGG depth must be one of {sorted(VGG_CONFIGS)}, got {depth!r}")
        config = VGG_CONFIGS[depth]
        c, h, w = self.input_shape
        self.depth = int(depth)
        self.features = nn.Sequential(*vgg_trunk(config, c, h, w), *global_pool())
        width_out = [item for item in config if item != "M"][-1]
        self.head = nn.Linear(int(width_out), num_classes)
