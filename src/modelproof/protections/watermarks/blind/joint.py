"""Algorithm 1 of Li et al.: the encoder e, the discriminator d and the host h trained together.

Every step takes one minibatch of m key-source images x_s (m = 20, rotating through the key's
sources) and one of n owner images (n = 100, a fresh permutation per epoch, last partial batch
dropped as in the authors' loader), then

1. d on (x_s, e(x_s, l).detach()): binary cross-entropy, originals labelled 1, key samples 0 (Eq. 10);
2. e on Eq. 15: alpha * MSE(x_s, x_key) + beta * (1 - SSIM(x_s, x_key)) + gamma * (-log sigmoid(d(x_key)))
   + delta * CE(h(x_key), t_key), with SSIM from kornia (``kornia.metrics.ssim``, window 11, or the
   largest odd window that fits a smaller image);
3. h on the merged n + m images (owner images with their labels, the step-1 key samples detached
   with their target labels): cross-entropy, SGD.

Optimisers as in §5.1 and the authors' code: Adam (lr 0.001, betas 0.5/0.999) for e and d; SGD
(momentum 0.9, weight decay 5e-4) for h, its rate divided by 10 every 40 epochs (the authors'
MultiStepLR at 40 and 80). k_1 = k_2 = 1 (the paper's setting): one d/e step per h step.

With a :class:`~modelproof.protections.checkpoint.Resume`, the state after an epoch is kept (at most once a
minute, and after the last), and a run interrupted at any point goes on from its last checkpoint (to the same
weights as an uninterrupted run).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ....models.devices import model_device
from ....util.errors import ConfigError
from ....util.progress import progress_bar
from ...checkpoint import (Resume, load_checkpoint, restore_training_state, run_tag, save_checkpoint,
                          training_state)
from .networks import Discriminator, Encoder


@dataclass(frozen=True)
class LossWeights:
    """The weights of Eq. 15: MSE, 1 - SSIM, adversarial, host cross-entropy (the authors' script's)."""

    alpha: float = 3.0
    beta: float = 5.0
    gamma: float = 1.0
    delta: float = 0.1


@dataclass(frozen=True)
class JointConfig:
    """Hyper-parameters of Algorithm 1 (defaults: §5.1 and the authors' code)."""

    epochs: int = 100
    batch_size: int = 100  # n: owner images per step
    key_batch: int = 20  # m: key-source images per step
    lr: float = 1e-3  # Adam, encoder and discriminator
    betas: tuple[float, float] = (0.5, 0.999)
    host_lr: float = 0.1  # SGD, host
    momentum: float = 0.9
    weight_decay: float = 5e-4
    lr_step: int = 40  # host rate divided by 10 every lr_step epochs
    weights: LossWeights = field(default_factory=LossWeights)


@dataclass(frozen=True)
class JointReport:
    """What joint training did: epochs, steps, seconds (training only), and one history row per epoch."""

    epochs: int
    steps: int
    seconds: float
    history: list[dict]


def ssim_window(height: int, width: int) -> int:
    """SSIM's Gaussian window: 11 (Wang et al.), or the largest odd size that fits a smaller image."""
    window = 11
    while window > min(height, width):
        window -= 2
    return max(window, 3)


def ssim_per_image(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean SSIM (kornia) of each image pair: a tensor of shape (N,)."""
    try:
        from kornia.metrics import ssim
    except ImportError:
        raise ConfigError("the blind watermark needs kornia for SSIM: pip install 'modelproof[blind]'") from None
    return ssim(a, b, ssim_window(*a.shape[-2:]), max_val=1.0).flatten(1).mean(dim=1)


def encoder_loss(x: torch.Tensor, x_key: torch.Tensor, d_logits: torch.Tensor, h_logits: torch.Tensor,
                 targets: torch.Tensor, w: LossWeights) -> tuple[torch.Tensor, dict]:
    """Eq. 15 (means over the minibatch) and its four parts."""
    mse = F.mse_loss(x_key, x)
    ssim = ssim_per_image(x, x_key).mean()
    adv = F.binary_cross_entropy_with_logits(d_logits, torch.ones_like(d_logits))
    ce = F.cross_entropy(h_logits, targets)
    total = w.alpha * mse + w.beta * (1 - ssim) + w.gamma * adv + w.delta * ce
    return total, {k: float(v.detach()) for k, v in (("mse", mse), ("ssim", ssim), ("adv", adv), ("host_ce", ce))}


def train_jointly(host: nn.Module, encoder: Encoder, disc: Discriminator, logo: torch.Tensor,
                  images: torch.Tensor, labels: torch.Tensor, sources: torch.Tensor, targets: torch.Tensor,
                  config: JointConfig, *, seed: int, after_epoch: Callable[[int], dict] | None = None,
                  quiet: bool = True, resume: Resume | None = None) -> JointReport:
    """Run Algorithm 1 in place on the three networks; ``after_epoch(epoch)`` adds a row to the history.

    ``resume``: keep a checkpoint after each epoch there, and go on from one this run left (module docstring).
    """
    if len(sources) < 1 or len(images) < 1:
        raise ConfigError("joint training needs at least one key source and one owner image")
    gen = torch.Generator().manual_seed(seed)
    device = model_device(host)  # the encoder and discriminator join the host there; batches are moved to it
    encoder.to(device), disc.to(device)
    logo = logo.to(device)
    n, m = min(config.batch_size, len(images)), min(config.key_batch, len(sources))
    steps = max(1, len(images) // n)
    opt_e = torch.optim.Adam(encoder.parameters(), lr=config.lr, betas=config.betas)
    opt_d = torch.optim.Adam(disc.parameters(), lr=config.lr, betas=config.betas)
    opt_h = torch.optim.SGD([p for p in host.parameters() if p.requires_grad], lr=config.host_lr,
                            momentum=config.momentum, weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.StepLR(opt_h, step_size=config.lr_step, gamma=0.1)
    history: list[dict] = []
    cursor, start, paused, w = 0, time.perf_counter(), 0.0, config.weights
    state = ({"host": host, "encoder": encoder, "disc": disc}, {"opt_e": opt_e, "opt_d": opt_d, "opt_h": opt_h},
             {"sched": sched}, gen)  # the names are the checkpoint's layout
    tag = None if resume is None else run_tag(
        {"config": repr(config), "seed": seed, "device": device.type},
        [*(t for net in state[0].values() for t in net.state_dict().values()), logo, images, labels, sources, targets])
    with torch.random.fork_rng(devices=[]), progress_bar(config.epochs * steps, "blind watermark", quiet) as bar:
        torch.manual_seed(seed)  # the host's dropout draws from the forked global RNG
        first, earlier, saved_at = 0, 0.0, time.perf_counter()
        found = None if resume is None else load_checkpoint(resume.path("blind"), tag, resume.passphrase)
        if found is not None:
            tensors, meta = found
            restore_training_state(tensors, meta, *state)
            first, cursor, history, earlier = meta["epoch"], meta["cursor"], meta["history"], meta["seconds"]
            bar(first * steps, resumed=f"from epoch {first}")  # shown on the bar and its stage lines
        for epoch in range(first, config.epochs):
            host.train(), encoder.train(), disc.train()
            perm = torch.randperm(len(images), generator=gen)
            sums = {"d_loss": 0.0, "e_loss": 0.0, "h_loss": 0.0, "mse": 0.0, "ssim": 0.0, "adv": 0.0, "host_ce": 0.0}
            for s in range(steps):
                idx = perm[s * n:(s + 1) * n]
                kidx = (torch.arange(m) + cursor) % len(sources)
                cursor = (cursor + m) % len(sources)
                xs, ts = sources[kidx].to(device), targets[kidx].to(device)
                x_key = encoder(xs, logo)
                # 1. discriminator, Eq. 10
                real, fake = disc(xs), disc(x_key.detach())
                d_loss = (F.binary_cross_entropy_with_logits(real, torch.ones_like(real))
                          + F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake)))
                opt_d.zero_grad(set_to_none=True)
                d_loss.backward()
                opt_d.step()
                # 2. encoder, Eq. 15
                e_loss, parts = encoder_loss(xs, x_key, disc(x_key), host(x_key), ts, w)
                opt_e.zero_grad(set_to_none=True)
                e_loss.backward()
                opt_e.step()
                # 3. host on the merged n + m images, Eq. 13
                opt_h.zero_grad(set_to_none=True)
                h_loss = F.cross_entropy(host(torch.cat([images[idx].to(device), x_key.detach()])),
                                         torch.cat([labels[idx].to(device), ts]))
                h_loss.backward()
                opt_h.step()
                for k, v in (("d_loss", d_loss.item()), ("e_loss", e_loss.item()), ("h_loss", h_loss.item()),
                             *parts.items()):
                    sums[k] += v
                bar(1)
            sched.step()
            row = {"epoch": epoch + 1, **{k: round(v / steps, 5) for k, v in sums.items()}}
            if after_epoch is not None:
                host.eval(), encoder.eval(), disc.eval()
                tick = time.perf_counter()
                row.update(after_epoch(epoch + 1))
                paused += time.perf_counter() - tick
            history.append(row)
            if resume is not None and resume.due(time.perf_counter() - saved_at, epoch + 1 == config.epochs):
                tensors, meta = training_state(*state)
                meta.update(epoch=epoch + 1, cursor=cursor, history=history,
                            seconds=earlier + time.perf_counter() - start - paused)
                save_checkpoint(resume.path("blind"), tag, tensors, meta, resume.passphrase)
                saved_at = time.perf_counter()
        host.eval(), encoder.eval(), disc.eval()
    seconds = earlier + time.perf_counter() - start - paused  # training only, not the per-epoch measurements
    if not all(math.isfinite(r["e_loss"]) and math.isfinite(r["h_loss"]) for r in history):
        raise ConfigError("joint training diverged (non-finite loss); lower --host-lr or --lr")
    return JointReport(config.epochs, config.epochs * steps, seconds, history)
