"""The blind watermark's two helper networks: the encoder e(x, logo) and the discriminator d.

- :class:`Encoder`: a small U-Net (the authors' code uses a U-Net "hiding network") that takes the
  image and the logo stacked as channels (2C inputs) and returns an image of the input's shape in
  [0, 1] (sigmoid output, as the authors' MNIST generator). Two stride-2 levels (28 -> 14 -> 7),
  skip connections by concatenation, upsampling to the skip's exact size, so any side >= 8 works.
  Our choice: no BatchNorm (the authors' U-Net has it), so that a key sample depends on its own
  image only, never on the batch or on train/eval mode: the host learns exactly the key samples
  that the encoder regenerates later (Eq. 3), bit for bit.
- :class:`Discriminator`: logistic regression on learned features (Eq. 9): the authors'
  ``DiscriminatorNet1``, a flattening MLP (64 and 32 LeakyReLU units) ending in one logit; the
  sigmoid of Eq. 9 is applied inside the loss (``binary_cross_entropy_with_logits``, Eq. 10).

Both are built under a forked RNG from an explicit seed, so weights are a pure function of it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ....util.errors import ConfigError

MIN_SIDE = 8  # two halvings keep at least 2x2 pixels, and the SSIM window (>= 7) fits
WIDTH = 16  # channels of the first level; 2x and 4x below it


def check_shape(shape: tuple[int, ...]) -> tuple[int, int, int]:
    """``shape`` (C, H, W) if the encoder can take it (C in 1, 3; sides >= MIN_SIDE), else ConfigError."""
    if len(shape) != 3 or shape[0] not in (1, 3):
        raise ConfigError(f"the blind watermark needs images of shape (C, H, W) with 1 or 3 channels, got {tuple(shape)}")
    if min(shape[1:]) < MIN_SIDE:
        raise ConfigError(f"the blind watermark's encoder needs images of at least {MIN_SIDE}x{MIN_SIDE} pixels, "
                          f"got {shape[1]}x{shape[2]} (pass --size {MIN_SIDE} or more)")
    return (int(shape[0]), int(shape[1]), int(shape[2]))


def _block(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=stride, padding=1), nn.LeakyReLU(0.2))


class Encoder(nn.Module):
    """e(x, logo) -> x_key: a two-level U-Net over the image and logo stacked as channels."""

    def __init__(self, input_shape: tuple[int, int, int], width: int = WIDTH) -> None:
        super().__init__()
        self.input_shape = check_shape(tuple(input_shape))
        self.width = int(width)
        c, w = self.input_shape[0], self.width
        self.inc = _block(2 * c, w)
        self.down1 = _block(w, 2 * w, stride=2)
        self.down2 = _block(2 * w, 4 * w, stride=2)
        self.up2 = _block(4 * w + 2 * w, 2 * w)
        self.up1 = _block(2 * w + w, w)
        self.out = nn.Conv2d(w, c, 1)

    def forward(self, x: torch.Tensor, logo: torch.Tensor) -> torch.Tensor:
        """``x`` (N, C, H, W) in [0, 1] and ``logo`` (C, H, W) or (N, C, H, W) -> key samples in [0, 1]."""
        if logo.dim() == 3:
            logo = logo.unsqueeze(0)
        s0 = self.inc(torch.cat([x, logo.expand(x.shape[0], -1, -1, -1)], dim=1))
        s1 = self.down1(s0)
        s2 = self.down2(s1)
        u = F.interpolate(s2, size=s1.shape[-2:], mode="nearest")
        u = self.up2(torch.cat([u, s1], dim=1))
        u = F.interpolate(u, size=s0.shape[-2:], mode="nearest")
        u = self.up1(torch.cat([u, s0], dim=1))
        return torch.sigmoid(self.out(u))

    def record(self) -> dict:
        """What rebuilds this architecture: ``Encoder(**record)``."""
        return {"input_shape": list(self.input_shape), "width": self.width}


class Discriminator(nn.Module):
    """d(x) -> one logit: original (1) or encoded (0), Eq. 9-10; the authors' three-layer MLP."""

    def __init__(self, input_shape: tuple[int, int, int]) -> None:
        super().__init__()
        c, h, w = input_shape
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, 64), nn.LeakyReLU(0.2),
                                 nn.Linear(64, 32), nn.LeakyReLU(0.2), nn.Linear(32, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(1)


def build_encoder(input_shape: tuple[int, int, int], *, seed: int, width: int = WIDTH) -> Encoder:
    """An encoder with weights drawn from ``seed`` (the caller's global RNG untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return Encoder(input_shape, width)


def build_discriminator(input_shape: tuple[int, int, int], *, seed: int) -> Discriminator:
    """A discriminator with weights drawn from ``seed``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return Discriminator(input_shape)


def parameter_count(module: nn.Module) -> int:
    """Number of parameters of ``module``."""
    return sum(p.numel() for p in module.parameters())


@torch.no_grad()
def encode(encoder: Encoder, logo: torch.Tensor, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Eq. 3: key samples e(x, logo) for ``images``, in eval mode, batched (deterministic)."""
    was = encoder.training
    encoder.eval()
    try:
        device = next(encoder.parameters()).device  # on the encoder's device, returned where the images are
        outs = [encoder(images[i:i + batch_size].to(device), logo.to(device)).to(images.device)
                for i in range(0, len(images), batch_size)]
    finally:
        encoder.train(was)
    return torch.cat(outs).clamp_(0.0, 1.0).contiguous() if outs else images.new_empty((0, *images.shape[1:]))
