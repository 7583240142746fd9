"""Post-activation residual networks for small images: ResNet-18/34/101/152 and ResNet-20.

ResNet-18/34/101/152 follow kuangliu/pytorch-cifar: a 3x3 stride-1 stem of 64 channels (no max pool),
four stages of 64/128/256/512 channels with strides 1/2/2/2, BasicBlocks (18, 34) or Bottlenecks
(101, 152, expansion 4). ResNet-20 is the CIFAR network of He et al. 2016 (section 4.2): a 3x3 stem of
16 channels and three stages of 16/32/64 channels with three BasicBlocks each. Every network ends
with adaptive average pooling to 1x1, so any input of at least 1x1 works.

Shortcuts are identity when shape is kept and "option B" (1x1 convolution + BatchNorm projection)
when the block changes stride or width; He et al. used option A (zero-padded identity) for their
CIFAR ResNet-20, which has no parameters; option B adds 2,752 parameters to ResNet-20 (272,474 in
all for 3x32x32 inputs and 10 classes).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from ..util.errors import ConfigError
from .base import ZooModel
from .layers import conv_bn, global_pool

MIN_SIDE = 1


def _shortcut(in_channels: int, out_channels: int, stride: int) -> nn.Module:
    """Identity, or a 1x1 convolution + BatchNorm projection when stride or width changes (option B)."""
    if stride == 1 and in_channels == out_channels:
        return nn.Identity()
    return conv_bn(in_channels, out_channels, kernel_size=1, stride=stride)


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with a ReLU between; output = ReLU(residual + shortcut)."""

    expansion = 1

    def __init__(self, in_channels: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = conv_bn(in_channels, planes, 3, stride)
        self.relu1 = nn.ReLU()
        self.conv2 = conv_bn(planes, planes, 3)
        self.shortcut = _shortcut(in_channels, planes, stride)
        self.relu2 = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        """ReLU(BN(conv(ReLU(BN(conv(x))))) + shortcut(x))."""
        out = self.conv2(self.relu1(self.conv1(x)))
        return self.relu2(out + self.shortcut(x))


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (carrying the stride), 1x1 expand by 4, each with BatchNorm; ReLU after the sum."""

    expansion = 4

    def __init__(self, in_channels: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        out_channels = planes * self.expansion
        self.conv1 = conv_bn(in_channels, planes, 1)
        self.relu1 = nn.ReLU()
        self.conv2 = conv_bn(planes, planes, 3, stride)
        self.relu2 = nn.ReLU()
        self.conv3 = conv_bn(planes, out_channels, 1)
        self.shortcut = _shortcut(in_channels, out_channels, stride)
        self.relu3 = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        """ReLU(bottleneck(x) + shortcut(x))."""
        out = self.conv3(self.relu2(self.conv2(self.relu1(self.conv1(x)))))
        return self.relu3(out + self.shortcut(x))


class ResNet(ZooModel):
    """A CIFAR-style ResNet: 3x3 stem -> stages of residual blocks -> global average pool -> head.

    ``widths[i]`` is the bottleneck width of stage ``i`` (its output has ``widths[i] * expansion``
    channels); the stem has ``widths[0]`` channels; the first stage keeps the resolution and each
    later one halves it.
    """

    def __init__(self, input_shape: Sequence[int], num_classes: int, mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None, *, block: str = "basic",
                 num_blocks: Sequence[int] = (2, 2, 2, 2), widths: Sequence[int] = (64, 128, 256, 512)) -> None:
        super().__init__(input_shape, num_classes, mean, std)
        blocks = {"basic": BasicBlock, "bottleneck": Bottleneck}
        if block not in blocks:
            raise ConfigError(f"ResNet block must be one of {sorted(blocks)}, got {block!r}")
        block_type = blocks[block]
        layers: list[nn.Module] = [*conv_bn(self.input_shape[0], widths[0], 3), nn.ReLU()]
        channels = widths[0]
        for stage, (count, planes) in enumerate(zip(num_blocks, widths)):
            for i in range(count):
                stride = 2 if stage > 0 and i == 0 else 1
                layers.append(block_type(channels, planes, stride))
                channels = planes * block_type.expansion
        self.features = nn.Sequential(*layers, *global_pool())
        self.head = nn.Linear(channels, num_classes)


def resnet18(input_shape: Sequence[int], num_classes: int, mean: Sequence[float] | None = None,
             std: Sequence[float] | None = None) -> ResNet:
    """ResNet-18 (kuangliu CIFAR version): BasicBlocks (2, 2, 2, 2), 512 features."""
    return ResNet(input_shape, num_classes, mean, std, block="basic", num_blocks=(2, 2, 2, 2))


def resnet34(input_shape: Sequence[int], num_classes: int, mean: Sequence[float] | None = None,
             std: Sequence[float] | None = None) -> ResNet:
    """ResNet-34 (kuangliu CIFAR version): BasicBlocks (3, 4, 6, 3), 512 features."""
    return ResNet(input_shape, num_classes, mean, std, block="basic", num_blocks=(3, 4, 6, 3))


def resnet101(input_shape: Sequence[int], num_classes: int, mean: Sequence[float] | None = None,
              std: Sequence[float] | None = None) -> ResNet:
    """ResNet-101 (kuangliu CIFAR version): Bottlenecks (3, 4, 23, 3), 2048 features."""
    return ResNet(input_shape, num_classes, mean, std, block="bottleneck", num_blocks=(3, 4, 23, 3))


def resnet152(input_shape: Sequence[int], num_classes: int, mean: Sequence[float] | None = None,
              std: Sequence[float] | None = None) -> ResNet:
    """ResNet-152 (kuangliu CIFAR version): Bottlenecks (3, 8, 36, 3), 2048 features (Ray et al. Table III)."""
    return ResNet(input_shape, num_classes, mean, std, block="bottleneck", num_blocks=(3, 8, 36, 3))


def resnet20(input_shape: Sequence[int], num_classes: int, mean: Sequence[float] | None = None,
             std: Sequence[float] | None = None) -> ResNet:
    """ResNet-20 (He et al. 2016, section 4.2): 16/32/64 channels, three BasicBlocks each, 64 features."""
    return ResNet(input_shape, num_classes, mean, std, block="basic", num_blocks=(3, 3, 3), widths=(16, 32, 64))
