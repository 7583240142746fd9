"""Small classifiers for digit-sized images: the Keras MNIST examples (MLP, CNN, IRNN), a CNN with
BatchNorm (a reference kind) and LeNet-1/3/5.

The MLP, CNN and IRNN are the three networks of the frontier-stitching paper (Le Merrer et al.),
which used the ``mnist_mlp``, ``mnist_cnn`` and ``mnist_irnn`` examples from the Keras website.
The LeNets are the MNIST hosts of the blind-watermark paper (Li et al.), after LeCun et al. 1998.
Flattened feature sizes are found by a dummy forward pass at build time, never hard-coded.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from ..util.errors import ConfigError
from .base import ZooModel
from .layers import flat_size, require_min_side

# Smallest height/width each architecture accepts (see the class docstrings for the arithmetic).
MIN_SIDE = {"mlp": 1, "cnn": 6, "cnn-bn": 4, "irnn": 1, "lenet1": 4, "lenet3": 4, "lenet5": 12}

# LeNet-1/3 use unpadded ("valid") 5x5 convolutions, as LeCun et al., when the image is at least
# this large (16 -> 12 -> 6 -> 2 -> 1); smaller images (e.g. 8x8 digits) get "same" padding instead.
LENET_VALID_MIN_SIDE = 16


def _check_dropout(arch: str, name: str, value: float) -> None:
    if not 0.0 <= float(value) < 1.0:
        raise ConfigError(f"{arch}: {name} must lie in [0, 1), got {value!r}")


def _check_width(arch: str, name: str, value: int) -> None:
    if int(value) < 1:
        raise ConfigError(f"{arch}: {name} must be a positive integer, got {value!r}")


class MLP(ZooModel):
    """Keras ``mnist_mlp``: flatten -> 512 ReLU -> dropout 0.2 -> 512 ReLU -> dropout 0.2 -> head.

    669,706 parameters for 28x28x1 inputs and 10 classes, as the frontier-stitching paper states.
    """

    def __init__(self, input_shape: Sequence[int], num_classes: int, mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None, *, hidden: int = 512, dropout: float = 0.2) -> None:
        super().__init__(input_shape, num_classes, mean, std)
        _check_width("mlp", "hidden", hidden)
        _check_dropout("mlp", "dropout", dropout)
        c, h, w = self.input_shape
        self.features = nn.Sequential(
            nn.Flatten(),
            nn.Linear(c * h * w, hidden), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(hidden, hidden), nn.ReLU(), nn.Dropout(dropout),
        )
        self.head = nn.Linear(hidden, num_classes)


class CNN(ZooModel):
    """Keras ``mnist_cnn``: conv3x3 32 ReLU -> conv3x3 64 ReLU -> maxpool 2 -> dropout 0.25 -> flatten
    -> dense 128 ReLU -> dropout 0.5 -> head. Unpadded convolutions, so the minimum side is 6.

    The current Keras example has 1,199,882 parameters for 28x28x1 inputs and 10 classes (the dense
    layer sees 12*12*64 = 9,216 inputs). The frontier-stitching paper quotes 710,218 for the older
    Keras example it used; we follow the current one and test 1,199,882.
    """

    def __init__(self, input_shape: Sequence[int], num_classes: int, mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None, *, hidden: int = 128, conv_dropout: float = 0.25,
                 dense_dropout: float = 0.5) -> None:
        super().__init__(input_shape, num_classes, mean, std)
        require_min_side("cnn", self.input_shape, MIN_SIDE["cnn"])
        _check_width("cnn", "hidden", hidden)
        _check_dropout("cnn", "conv_dropout", conv_dropout)
        _check_dropout("cnn", "dense_dropout", dense_dropout)
        trunk = nn.Sequential(
            nn.Conv2d(self.input_shape[0], 32, 3), nn.ReLU(),
            nn.Conv2d(32, 64, 3), nn.ReLU(),
            nn.MaxPool2d(2), nn.Dropout(conv_dropout), nn.Flatten(),
        )
        n_flat = flat_size(trunk, self.input_shape)
        self.features = nn.Sequential(*trunk, nn.Linear(n_flat, hidden), nn.ReLU(), nn.Dropout(dense_dropout))
        self.head = nn.Linear(hidden, num_classes)


class CNNBN(ZooModel):
    """A small CNN with BatchNorm: [conv3x3 (padding 1) -> BatchNorm -> ReLU -> maxpool 2] with 16 and 32
    maps -> flatten -> head. Unlike the Keras CNN it normalises its activations, which makes it answer
    off-distribution inputs differently (a reference kind of its own). The minimum side is 4."""

    def __init__(self, input_shape: Sequence[int], num_classes: int, mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None, *, width: int = 16) -> None:
        super().__init__(input_shape, num_classes, mean, std)
        require_min_side("cnn-bn", self.input_shape, MIN_SIDE["cnn-bn"])
        _check_width("cnn-bn", "width", width)
        layers: list[nn.Module] = []
        in_maps = self.input_shape[0]
        for out_maps in (width, 2 * width):
            layers += [nn.Conv2d(in_maps, out_maps, 3, padding=1), nn.BatchNorm2d(out_maps), nn.ReLU(), nn.MaxPool2d(2)]
            in_maps = out_maps
        self.features = nn.Sequential(*layers, nn.Flatten())
        self.head = nn.Linear(flat_size(self.features, self.input_shape), num_classes)


class RowRNN(nn.Module):
    """A single ReLU RNN layer reading an image row by row; returns the last hidden state [N, hidden].

    Initialised as an IRNN (Le, Jaitly & Hinton 2015): recurrent weight = identity, input weights
    drawn from N(0, 0.001^2) (std 0.001, as the Keras ``mnist_irnn`` example), both biases zero.
    """

    def __init__(self, channels: int, width: int, hidden: int) -> None:
        super().__init__()
        self.rnn = nn.RNN(channels * width, hidden, nonlinearity="relu", batch_first=True)
        nn.init.eye_(self.rnn.weight_hh_l0)
        nn.init.normal_(self.rnn.weight_ih_l0, mean=0.0, std=0.001)
        nn.init.zeros_(self.rnn.bias_ih_l0)
        nn.init.zeros_(self.rnn.bias_hh_l0)

    def forward(self, x: Tensor) -> Tensor:
        """[N, C, H, W] -> a sequence of H steps of C*W inputs -> last hidden state [N, hidden]."""
        sequence = x.permute(0, 2, 1, 3).flatten(2)
        _, h_n = self.rnn(sequence)
        return h_n[-1]


class IRNN(ZooModel):
    """IRNN after Le et al. 2015: a 100-unit ReLU RNN with identity recurrent init, then the head.

    Choice: the image is read row by row (H steps of C*W values), not pixel by pixel (784 steps) as
    in Le et al. and Keras ``mnist_irnn``. Rows train in minutes instead of hours and keep the
    model recurrent; for 28x28x1 and 10 classes it has 14,010 parameters (PyTorch's RNN carries
    two bias vectors). The paper's 199,434 does not match either reading and is not reproduced.
    """

    def __init__(self, input_shape: Sequence[int], num_classes: int, mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None, *, hidden: int = 100) -> None:
        super().__init__(input_shape, num_classes, mean, std)
        _check_width("irnn", "hidden", hidden)
        c, _, w = self.input_shape
        self.features = RowRNN(c, w, hidden)
        self.head = nn.Linear(hidden, num_classes)


def _lenet_trunk(channels: int, maps: Sequence[int], paddings: Sequence[int],
                 activation: type[nn.Module], pool: type[nn.Module]) -> nn.Sequential:
    """5x5 convolutions with ``maps`` output maps, each followed by ``activation`` and a 2x2 ``pool``."""
    layers: list[nn.Module] = []
    in_maps = channels
    for out_maps, padding in zip(maps, paddings):
        layers += [nn.Conv2d(in_maps, out_maps, 5, padding=padding), activation(), pool(2)]
        in_maps = out_maps
    layers.append(nn.Flatten())
    return nn.Sequential(*layers)


def _lenet_padding(side: int) -> int:
    """0 (LeCun's unpadded convolutions) when the image is large enough, else 2 ("same")."""
    return 0 if side >= LENET_VALID_MIN_SIDE else 2


class LeNet1(ZooModel):
    """LeNet-1 (LeCun et al. 1998): conv5x5 4 maps tanh -> avgpool 2 -> conv5x5 12 maps tanh
    -> avgpool 2 -> head (28x28: 12*4*4 = 192 features).

    Images smaller than 16x16 (e.g. 8x8 digits) use padding 2 in both convolutions.
    """

    def __init__(self, input_shape: Sequence[int], num_classes: int, mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None) -> None:
        super().__init__(input_shape, num_classes, mean, std)
        require_min_side("lenet1", self.input_shape, MIN_SIDE["lenet1"])
        pad = _lenet_padding(min(self.input_shape[1:]))
        self.features = _lenet_trunk(self.input_shape[0], (4, 12), (pad, pad), nn.Tanh, nn.AvgPool2d)
        self.head = nn.Linear(flat_size(self.features, self.input_shape), num_classes)


class LeNet3(ZooModel):
    """LeNet-3: conv5x5 6 ReLU -> maxpool 2 -> conv5x5 16 ReLU -> maxpool 2 -> dense 120 ReLU -> head.

    Choice: LeCun et al. 1998 describe LeNet-1, -4 and -5 but no "LeNet-3"; the blind-watermark
    paper cites them for it. We read it as the LeNet-4 family with three trainable stages before
    the classifier (two convolutions, one dense layer of 120), i.e. LeNet-5 without its 84-unit
    layer, with ReLU and max pooling for trainability. Images smaller than 16x16 use padding 2.
    """

    def __init__(self, input_shape: Sequence[int], num_classes: int, mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None) -> None:
        super().__init__(input_shape, num_classes, mean, std)
        require_min_side("lenet3", self.input_shape, MIN_SIDE["lenet3"])
        pad = _lenet_padding(min(self.input_shape[1:]))
        trunk = _lenet_trunk(self.input_shape[0], (6, 16), (pad, pad), nn.ReLU, nn.MaxPool2d)
        n_flat = flat_size(trunk, self.input_shape)
        self.features = nn.Sequential(*trunk, nn.Linear(n_flat, 120), nn.ReLU())
        self.head = nn.Linear(120, num_classes)


class LeNet5(ZooModel):
    """LeNet-5: conv5x5 6 (padding 2) ReLU -> maxpool 2 -> conv5x5 16 ReLU -> maxpool 2 -> dense 120
    ReLU -> dense 84 ReLU -> head.

    Padding 2 makes a 28x28 image behave like LeCun's 32x32 input (16x5x5 = 400 features).
    Choice: ReLU and max pooling instead of the original scaled tanh and trainable subsampling, for
    trainability. The minimum side is 12 (12 -> 6 -> 2 -> 1); 8x8 images raise ConfigError.
    """

    def __init__(self, input_shape: Sequence[int], num_classes: int, mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None) -> None:
        super().__init__(input_shape, num_classes, mean, std)
        require_min_side("lenet5", self.input_shape, MIN_SIDE["lenet5"])
        trunk = _lenet_trunk(self.input_shape[0], (6, 16), (2, 0), nn.ReLU, nn.MaxPool2d)
        n_flat = flat_size(trunk, self.input_shape)
        self.features = nn.Sequential(*trunk, nn.Linear(n_flat, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU())
        self.head = nn.Linear(84, num_classes)
