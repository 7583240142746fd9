"""Pre-activation residual networks: PreActResNet-18/34 and the wide ResNet WRN-22-4.

Both use the pre-activation block of He et al. 2016 ("Identity mappings in deep residual
networks"): BN-ReLU-conv-BN-ReLU-conv, added to the shortcut with nothing after the sum. When a
block changes stride or width, the shortcut is a 1x1 convolution applied to the block's first
BN-ReLU output (as kuangliu/pytorch-cifar and Zagoruyko & Komodakis do).

PreActResNet-18/34 follow kuangliu: a 3x3 stride-1 stem of 64 channels, stages of 64/128/256/512
channels with strides 1/2/2/2. Choice: unlike kuangliu, a final BN-ReLU precedes the pooling, as
in He et al.'s pre-activation networks and in WRN; without it the last block's sum would reach the
pool un-normalised.

WRN-d-k (Zagoruyko & Komodakis 2016): a 3x3 stem of 16 channels, three stages of 16k/32k/64k
channels with strides 1/2/2 and (d - 4) / 6 blocks each, dropout between the two convolutions of
a block (0 by default), final BN-ReLU. WRN-22-4 has 3 blocks per stage and 64/128/256 channels.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from ..util.errors import ConfigError
from .base import ZooModel
from .layers import global_pool

MIN_SIDE = 1


class PreActBlock(nn.Module):
    """BN-ReLU-conv3x3-BN-ReLU-(dropout)-conv3x3 plus a shortcut; no activation after the sum."""

    def __init__(self, in_channels: int, planes: int, stride: int = 1, dropout: float = 0.0) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.relu1 = nn.ReLU()
        self.conv1 = nn.Conv2d(in_channels, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu2 = nn.ReLU()
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.shortcut: nn.Module | None = None
        if stride != 1 or in_channels != planes:
            self.shortcut = nn.Conv2d(in_channels, planes, 1, stride=stride, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        """conv(ReLU(BN(conv(ReLU(BN(x)))))) + shortcut."""
        out = self.relu1(self.bn1(x))
        skip = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv2(self.dropout(self.relu2(self.bn2(self.conv1(out)))))
        return out + skip


class PreActResNet(ZooModel):
    """3x3 stem -> stages of pre-activation blocks -> BN-ReLU -> global average pool -> head.

    The stem has ``stem_width`` channels; stage ``i`` has ``num_blocks[i]`` blocks of ``widths[i]``
    channels; the first stage keeps the resolution and each later one halves it.
    """

    def __init__(self, input_shape: Sequence[int], num_classes: int, mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None, *, num_blocks: Sequence[int] = (2, 2, 2, 2),
                 widths: Sequence[int] = (64, 128, 256, 512), stem_width: int = 64,
                 dropout: float = 0.0) -> None:
        super().__init__(input_shape, num_classes, mean, std)
        if not 0.0 <= float(dropout) < 1.0:
            raise ConfigError(f"dropout must lie in [0, 1), got {dropout!r}")
        layers: list[nn.Module] = [nn.Conv2d(self.input_shape[0], stem_width, 3, padding=1, bias=False)]
        channels = stem_width
        for stage, (count, planes) in enumerate(zip(num_blocks, widths)):
            for i in range(count):
                stride = 2 if stage > 0 and i == 0 else 1
                layers.append(PreActBlock(channels, planes, stride, float(dropout)))
                channels = planes
        layers += [nn.BatchNorm2d(channels), nn.ReLU()]
        self.features = nn.Sequential(*layers, *global_pool())
        self.head = nn.Linear(channels, num_classes)


def preact_resnet18(input_shape: Sequence[int], num_classes: int, mean: Sequence[float] | None = None,
                    std: Sequence[float] | None = None) -> PreActResNet:
    """PreActResNet-18: blocks (2, 2, 2, 2) of 64/128/256/512 channels."""
    return PreActResNet(input_shape, num_classes, mean, std, num_blocks=(2, 2, 2, 2))


def preact_resnet34(input_shape: Sequence[int], num_classes: int, mean: Sequence[float] | None = None,
                    std: Sequence[float] | None = None) -> PreActResNet:
    """PreActResNet-34: blocks (3, 4, 6, 3) of 64/128/256/512 channels."""
    return PreActResNet(input_shape, num_classes, mean, std, num_blocks=(3, 4, 6, 3))


def wide_resnet(input_shape: Sequence[int], num_classes: int, mean: Sequence[float] | None = None,
                std: Sequence[float] | None = None, *, depth: int = 22, widen: int = 4,
                dropout: float = 0.0) -> PreActResNet:
    """WRN-``depth``-``widen``: (depth - 4) / 6 blocks per stage, 16/32/64 x ``widen`` channels."""
    if int(depth) < 10 or (int(depth) - 4) % 6 != 0:
        raise ConfigError(f"WRN depth must be 6n + 4 with n >= 1 (10, 16, 22, 28, ...), got {depth!r}")
    if int(widen) < 1:
        raise ConfigError(f"WRN widen factor must be a positive integer, got {widen!r}")
    n = (int(depth) - 4) // 6
    k = int(widen)
    return PreActResNet(input_shape, num_classes, mean, std, num_blocks=(n, n, n),
                        widths=(16 * k, 32 * k, 64 * k), stem_width=16, dropout=dropout)
