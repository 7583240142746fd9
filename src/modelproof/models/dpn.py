"""Dual Path Networks (Chen et al. 2017), DPN-26 for small images as kuangliu/pytorch-cifar builds
it (the blind-watermark paper's Table 1 lists DPN-26; its authors' code builds on that repository).

A DPN block keeps two paths: a residual one (summed, ``out_planes`` channels) and a densely
connected one (concatenated, growing by ``dense_depth`` per block). Each block is a 1x1 reduce,
a grouped 3x3 (32 groups, carrying the stride) and a 1x1 expansion to ``out_planes + dense_depth``
channels, each with BatchNorm (ReLU after the first two); the first block of a stage projects
the shortcut by a 1x1 convolution. DPN-26: stages of 2 blocks, widths (96, 192, 384, 768),
out_planes (256, 512, 1024, 2048), dense depths (16, 32, 24, 128); a 3x3 stem to 64 channels;
stage strides 1, 2, 2, 2; global average pooling (kuangliu: a 4x4 average pool, for 32x32 inputs),
so any side works; the head is ``Linear(2048 + 3 * 128, num_classes)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import ZooModel
from .layers import conv_bn, global_pool

MIN_SIDE = 1
GROUPS = 32
DPN26 = {"in_planes": (96, 192, 384, 768), "out_planes": (256, 512, 1024, 2048),
         "num_blocks": (2, 2, 2, 2), "dense_depth": (16, 32, 24, 128)}


class DualPathBlock(nn.Module):
    """1x1 -> grouped 3x3 -> 1x1; the first ``out_planes`` channels are summed with the shortcut,
    the rest concatenated after the shortcut's own dense channels."""

    def __init__(self, last_planes: int, in_planes: int, out_planes: int, dense_depth: int, stride: int,
                 first: bool) -> None:
        super().__init__()
        self.out_planes = out_planes
        self.body = nn.Sequential(*conv_bn(last_planes, in_planes, 1), nn.ReLU(),
                                  *conv_bn(in_planes, in_planes, 3, stride, groups=GROUPS), nn.ReLU(),
                                  *conv_bn(in_planes, out_planes + dense_depth, 1))
        self.shortcut = conv_bn(last_planes, out_planes + dense_depth, 1, stride) if first else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        """ReLU([residual sum, shortcut dense part, new dense part])."""
        out, x = self.body(x), self.shortcut(x)
        d = self.out_planes
        return F.relu(torch.cat([x[:, :d] + out[:, :d], x[:, d:], out[:, d:]], dim=1))


class DPN(ZooModel):
    """A CIFAR-style DPN: 3x3 stem -> four stages of dual path blocks -> global pool -> head."""

    def __init__(self, input_shape: Sequence[int], num_classes: int, mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None, *, config: dict = DPN26) -> None:
        super().__init__(input_shape, num_classes, mean, std)
        layers: list[nn.Module] = [*conv_bn(self.input_shape[0], 64, 3), nn.ReLU()]
        last = 64
        for stage, (wide, out, blocks, dense) in enumerate(zip(config["in_planes"], config["out_planes"],
                                                               config["num_blocks"], config["dense_depth"])):
            for i in range(blocks):
                layers.append(DualPathBlock(last, wide, out, dense, (1 if stage == 0 else 2) if i == 0 else 1, i == 0))
                last = out + (i + 2) * dense
        self.features = nn.Sequential(*layers, *global_pool())
        self.head = nn.Linear(last, num_classes)


def dpn26(input_shape: Sequence[int], num_classes: int, mean: Sequence[float] | None = None,
          std: Sequence[float] | None = None) -> DPN:
    """DPN-26 (kuangliu): blocks (2, 2, 2, 2)."""
    return DPN(input_shape, num_classes, mean, std, config=DPN26)
