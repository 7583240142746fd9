"""GoogLeNet (Szegedy et al. 2015) for small images, the CIFAR version of kuangliu/pytorch-cifar
that the blind-watermark paper's Table 1 lists (its authors' code builds on that repository).

Stem: a 3x3 convolution to 192 channels (ImageNet: 7x7 stride 2, max pool, two more convs).
Then inception blocks 3a, 3b, a 3x3 stride-2 max pool, 4a-4e, a max pool, 5a, 5b. Each inception
block has four branches concatenated: 1x1; 1x1 -> 3x3; 1x1 -> 3x3 -> 3x3 (kuangliu's stand-in for
the paper's 5x5); 3x3 max pool -> 1x1; each convolution with BatchNorm and ReLU. The trunk ends
with global average pooling (kuangliu: an 8x8 average pool, which needs 32x32 inputs), so any
side works and the head is ``Linear(1024, num_classes)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .base import ZooModel
from .layers import conv_bn, global_pool

MIN_SIDE = 1

# (in, 1x1, 3x3 reduce, 3x3, double-3x3 reduce, double-3x3, pool projection), Szegedy et al. Table 1.
INCEPTION_CONFIG: dict[str, tuple[int, int, int, int, int, int, int]] = {
    "3a": (192, 64, 96, 128, 16, 32, 32), "3b": (256, 128, 128, 192, 32, 96, 64),
    "4a": (480, 192, 96, 208, 16, 48, 64), "4b": (512, 160, 112, 224, 24, 64, 64),
    "4c": (512, 128, 128, 256, 24, 64, 64), "4d": (512, 112, 144, 288, 32, 64, 64),
    "4e": (528, 256, 160, 320, 32, 128, 128), "5a": (832, 256, 160, 320, 32, 128, 128),
    "5b": (832, 384, 192, 384, 48, 128, 128),
}
POOL_AFTER = ("3b", "4e")
STEM_CHANNELS, LAST_CHANNELS = 192, 1024


def _cbr(cin: int, cout: int, k: int) -> nn.Sequential:
    return nn.Sequential(*conv_bn(cin, cout, k), nn.ReLU())


class Inception(nn.Module):
    """Four branches (1x1; 1x1-3x3; 1x1-3x3-3x3; pool-1x1) concatenated along channels."""

    def __init__(self, cin: int, n1: int, r3: int, n3: int, r5: int, n5: int, pool: int) -> None:
        super().__init__()
        self.b1 = _cbr(cin, n1, 1)
        self.b2 = nn.Sequential(_cbr(cin, r3, 1), _cbr(r3, n3, 3))
        self.b3 = nn.Sequential(_cbr(cin, r5, 1), _cbr(r5, n5, 3), _cbr(n5, n5, 3))
        self.b4 = nn.Sequential(nn.MaxPool2d(3, stride=1, padding=1), _cbr(cin, pool, 1))

    def forward(self, x: Tensor) -> Tensor:
        """The four branches side by side."""
        return torch.cat([self.b1(x), self.b2(x), self.b3(x), self.b4(x)], dim=1)


class GoogLeNet(ZooModel):
    """GoogLeNet, CIFAR-style: 3x3 stem to 192 -> inception 3a-5b with two max pools -> pool -> head."""

    def __init__(self, input_shape: Sequence[int], num_classes: int, mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None) -> None:
        super().__init__(input_shape, num_classes, mean, std)
        layers: list[nn.Module] = [_cbr(self.input_shape[0], STEM_CHANNELS, 3)]
        for name, config in INCEPTION_CONFIG.items():
            layers.append(Inception(*config))
            if name in POOL_AFTER:
                layers.append(nn.MaxPool2d(3, stride=2, padding=1))
        self.features = nn.Sequential(*layers, *global_pool())
        self.head = nn.Linear(LAST_CHANNELS, num_classes)
