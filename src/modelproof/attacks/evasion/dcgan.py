"""The DCGAN of Ray et al.'s footnote 2 (eriklindernoren/PyTorch-GAN ``dcgan.py``), scaled to the input size.

Generator: linear latent -> 128 x (S/4)^2, BatchNorm, two (upsample x2, conv3x3, BatchNorm(eps 0.8),
LeakyReLU 0.2) stages of 128 and 64 channels, conv3x3 to the image channels, tanh. Discriminator:
four (conv3x3 stride 2, LeakyReLU 0.2, Dropout2d 0.25 [, BatchNorm eps 0.8]) blocks of 16 (no BN),
32, 64, 128 (no BN) channels, then linear to one sigmoid unit. Weights N(0, 0.02), BatchNorm
weights N(1, 0.02). Training as the reference: Adam lr 2e-4, betas (0.5, 0.999), batch 64, BCE,
generator step then discriminator step, 200 epochs, images scaled to [-1, 1].

Scaling to the input size (the reference assumes a side divisible by 16): the generator starts
from ``ceil(S/4)`` and its output is resized to (H, W) when 4 * ceil(S/4) differs; the
discriminator's linear layer takes whatever its four stride-2 convolutions leave (ceil-halving).
All randomness (initial weights, noise, shuffling) comes from a ``torch.Generator``.

Two departures, both measured. (1) The reference writes ``nn.BatchNorm2d(c, 0.8)``, which sets
eps = 0.8 (momentum was presumably meant). With eps 0.8 the discriminator's activations, which
start at the N(0, 0.02) init scale, are never renormalised up: trained on 18 heatmaps of a
16x16 digit class it answered D = 0.50 +- 0.002 for every input, clean, trigger, all-zero or
all-one. We use the default eps (1e-5). (2) ``width`` multiplies every channel count (1 = the
reference) so that ten GANs per model fit a CPU budget; the benchmarks say which width they use.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

LATENT_DIM = 100
BN_EPS = 1e-5  # the reference writes BatchNorm2d(c, 0.8), i.e. eps = 0.8: see the module docstring


def _width(channels: int, width: float) -> int:
    """``channels`` scaled by ``width`` (at least 4)."""
    return max(4, round(channels * width))


def init_linear(module: nn.Linear, gen: torch.Generator) -> None:
    """torch's default U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weight and bias, drawn from ``gen``."""
    bound = 1.0 / math.sqrt(module.in_features)
    with torch.no_grad():
        module.weight.copy_((torch.rand(module.weight.shape, generator=gen) * 2 - 1) * bound)
        if module.bias is not None:
            module.bias.copy_((torch.rand(module.bias.shape, generator=gen) * 2 - 1) * bound)


def _init(module: nn.Module, gen: torch.Generator) -> None:
    """The reference ``weights_init_normal``, drawn from ``gen``."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            with torch.no_grad():
                m.weight.copy_(torch.randn(m.weight.shape, generator=gen) * 0.02)
        elif isinstance(m, nn.BatchNorm2d):
            with torch.no_grad():
                m.weight.copy_(1.0 + torch.randn(m.weight.shape, generator=gen) * 0.02)
                m.bias.zero_()


class Generator(nn.Module):
    """latent [N, 100] -> image [N, C, H, W] in [-1, 1]."""

    def __init__(self, shape: tuple[int, int, int], latent_dim: int = LATENT_DIM, width: float = 1.0) -> None:
        super().__init__()
        self.shape = tuple(shape)
        self.init_size = max(1, math.ceil(max(shape[1:]) / 4))
        self.base = wide = _width(128, width)
        half = _width(64, width)
        self.l1 = nn.Linear(latent_dim, wide * self.init_size ** 2)
        self.conv_model = nn.Sequential(
            nn.BatchNorm2d(wide), nn.Upsample(scale_factor=2), nn.Conv2d(wide, wide, 3, 1, 1),
            nn.BatchNorm2d(wide, eps=BN_EPS), nn.LeakyReLU(0.2), nn.Upsample(scale_factor=2),
            nn.Conv2d(wide, half, 3, 1, 1), nn.BatchNorm2d(half, eps=BN_EPS), nn.LeakyReLU(0.2),
            nn.Conv2d(half, shape[0], 3, 1, 1), nn.Tanh())

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        out = self.l1(z).view(z.shape[0], self.base, self.init_size, self.init_size)
        img = self.conv_model(out)
        if tuple(img.shape[-2:]) != self.shape[1:]:
            img = F.interpolate(img, size=self.shape[1:], mode="bilinear", align_corners=False)
        return img


class Discriminator(nn.Module):
    """image [N, C, H, W] in [-1, 1] -> probability [N, 1] that it is real."""

    def __init__(self, shape: tuple[int, int, int], width: float = 1.0) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels, h, w = shape
        for out, bn in ((_width(16, width), False), (_width(32, width), True), (_width(64, width), True),
                        (_width(128, width), False)):
            layers += [nn.Conv2d(channels, out, 3, 2, 1), nn.LeakyReLU(0.2), nn.Dropout2d(0.25)]
            if bn:
                layers.append(nn.BatchNorm2d(out, eps=BN_EPS))
            channels, h, w = out, (h + 1) // 2, (w + 1) // 2
        self.model = nn.Sequential(*layers)
        self.adv_layer = nn.Sequential(nn.Linear(channels * h * w, 1), nn.Sigmoid())

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        return self.adv_layer(self.model(img).flatten(1))


def real_loss(discriminator: nn.Module, heatmaps: torch.Tensor) -> torch.Tensor:
    """Per-image BCE of ``discriminator`` calling [0,1] heatmaps real: -log D(2h - 1), in eval mode."""
    discriminator.eval()
    with torch.no_grad():
        p = discriminator(heatmaps * 2.0 - 1.0).flatten()
    return F.binary_cross_entropy(p, torch.ones_like(p), reduction="none")


def train_dcgan(heatmaps: torch.Tensor, gen: torch.Generator, *, epochs: int = 200, batch_size: int = 64,
                lr: float = 2e-4, betas: tuple[float, float] = (0.5, 0.999), latent_dim: int = LATENT_DIM,
                width: float = 1.0,
                advance: Callable[[int], None] = lambda n: None) -> tuple[Discriminator, dict]:
    """Train one DCGAN on [0,1] heatmaps [N, C, H, W]; return its discriminator (eval mode) and last losses.

    Dropout2d inside the discriminator draws from torch's global RNG; callers run this under a
    forked, seeded RNG (``Attack.perform`` does), so a run is reproducible for its seed.
    """
    shape = tuple(int(s) for s in heatmaps.shape[1:])
    generator, discriminator = Generator(shape, latent_dim, width), Discriminator(shape, width)  # type: ignore[arg-type]
    _init(generator, gen)
    _init(discriminator, gen)
    for module in (generator.l1, discriminator.adv_layer[0]):
        init_linear(module, gen)
    device = heatmaps.device  # initialised on the CPU from ``gen``, trained where the heatmaps are
    generator.to(device), discriminator.to(device)
    opt_g = torch.optim.Adam(generator.parameters(), lr=lr, betas=betas)
    opt_d = torch.optim.Adam(discriminator.parameters(), lr=lr, betas=betas)
    real_all = heatmaps * 2.0 - 1.0
    generator.train()
    discriminator.train()
    g_loss = d_loss = torch.tensor(float("nan"))
    for _ in range(epochs):
        order = torch.randperm(len(real_all), generator=gen)
        for start in range(0, len(order), batch_size):
            real = real_all[order[start:start + batch_size]]
            if len(real) < 2:  # a trailing single image: BatchNorm cannot train on it
                continue
            valid, fake = torch.ones(len(real), 1, device=device), torch.zeros(len(real), 1, device=device)
            opt_g.zero_grad()
            made = generator(torch.randn(len(real), latent_dim, generator=gen).to(device))
            g_loss = F.binary_cross_entropy(discriminator(made), valid)
            g_loss.backward()
            opt_g.step()
            opt_d.zero_grad()
            d_loss = 0.5 * (F.binary_cross_entropy(discriminator(real), valid)
                            + F.binary_cross_entropy(discriminator(made.detach()), fake))
            d_loss.backward()
            opt_d.step()
        advance(1)
    discriminator.eval()
    for p in discriminator.parameters():
        p.requires_grad_(False)
    return discriminator, {"g_loss": float(g_loss.detach()), "d_loss": float(d_loss.detach())}
