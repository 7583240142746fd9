"""Training, evaluation and prediction: deterministic for a seed on CPU, never touching global RNG state.

``fit`` trains in place and can mix a second dataset (a watermark key) into every batch and stop
early on a condition, which is what embedding a watermark by fine-tuning needs.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..data.splits import Dataset
from ..util.errors import ConfigError, DataError
from ..util.progress import progress_bar

OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("none", "cosine", "step")


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of one training run (validated on construction)."""

    epochs: int = 10
    batch_size: int = 64
    lr: float = 0.001
    optimizer: str = "adam"
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: str = "none"
    augment: bool = False

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ConfigError(f"epochs must be at least 1, got {self.epochs}")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be at least 1, got {self.batch_size}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ConfigError(f"learning rate must be a positive number, got {self.lr}")
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        if self.weight_decay < 0 or not 0 <= self.momentum < 1:
            raise ConfigError(f"need weight_decay >= 0 and 0 <= momentum < 1, got {self.weight_decay}, {self.momentum}")


@dataclass(frozen=True)
class TrainReport:
    """What a training run did: epochs run, wall time, throughput and last epoch's mean loss."""

    epochs: int
    seconds: float
    images_per_second: float
    final_loss: float
    stopped_early: bool = False


def make_optimizer(params: list[nn.Parameter], config: TrainConfig) -> torch.optim.Optimizer:
    """The optimizer a config names, over the given parameters."""
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)


def _scheduler(opt: torch.optim.Optimizer, config: TrainConfig, steps: int):
    if config.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(steps, 1))
    if config.schedule == "step":
        return torch.optim.lr_scheduler.StepLR(opt, step_size=max(steps // 3, 1), gamma=0.1)
    return None


def _augmenter(input_shape: tuple[int, ...]) -> Callable[[torch.Tensor], torch.Tensor]:
    """Random crop (padding 4) and horizontal flip for colour images, via kornia; identity otherwise."""
    if input_shape[0] != 3:
        return lambda x: x
    import kornia.augmentation as K

    return nn.Sequential(K.RandomCrop(tuple(input_shape[1:]), padding=4), K.RandomHorizontalFlip())


def fit(model: nn.Module, data: Dataset, config: TrainConfig = TrainConfig(), *, seed: int = 0,
        mix: Dataset | None = None, mix_per_batch: int = 0,
        until: Callable[[nn.Module], bool] | None = None, quiet: bool = True,
        description: str = "training") -> TrainReport:
    """Train ``model`` in place on ``data`` with ``config``; deterministic in ``seed``.

    ``mix``: examples (e.g. watermark key inputs) of which ``mix_per_batch`` are appended to every
    batch, drawn in rotating order. ``until``: checked after each epoch; training stops when it
    returns True. Only parameters with ``requires_grad`` are trained.
    """
    if len(data) == 0:
        raise ConfigError(f"cannot train on an empty dataset ({data.name})")
    if mix is not None and (mix_per_batch < 1 or len(mix) == 0):
        raise ConfigError(f"mixing needs a non-empty dataset and mix_per_batch >= 1, got {mix_per_batch}")
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ConfigError("the model has no trainable parameters")
    from .devices import model_device

    device = model_device(model)
    gen = torch.Generator().manual_seed(seed)
    steps_per_epoch = math.ceil(len(data) / config.batch_size)
    opt = make_optimizer(params, config)
    sched = _scheduler(opt, config, steps_per_epoch * config.epochs)
    augment = _augmenter(data.input_shape) if config.augment else (lambda x: x)
    start, seen, loss_sum, epochs_run, stopped = time.perf_counter(), 0, 0.0, 0, False
    mix_cursor = 0
    with torch.random.fork_rng(devices=[]), progress_bar(config.epochs * steps_per_epoch, description, quiet) as bar:
        torch.manual_seed(seed)  # dropout and augmentation draw from the forked global RNG
        model.train()
        for _ in range(config.epochs):
            perm = torch.randperm(len(data), generator=gen)
            loss_sum, batches = 0.0, 0
            for s in range(steps_per_epoch):
                idx = perm[s * config.batch_size:(s + 1) * config.batch_size]
                x, y = data.images[idx], data.labels[idx]
                if mix is not None:
                    midx = (torch.arange(mix_per_batch) + mix_cursor) % len(mix)
                    mix_cursor = (mix_cursor + mix_per_batch) % len(mix)
                    x, y = torch.cat([x, mix.images[midx]]), torch.cat([y, mix.labels[midx]])
                x, y = augment(x).to(device), y.to(device)
                opt.zero_grad(set_to_none=True)
                loss = F.cross_entropy(model(x), y)
                loss.backward()
                opt.step()
                if sched is not None:
                    sched.step()
                loss_sum += float(loss.detach())
                batches += 1
                seen += len(y)
                bar(1, loss=loss_sum / batches)
            epochs_run += 1
            if until is not None:
                model.eval()
                done = until(model)
                model.train()
                if done:
                    stopped = True
                    break
        model.eval()
    seconds = time.perf_counter() - start
    return TrainReport(epochs_run, seconds, seen / max(seconds, 1e-9), loss_sum / max(batches, 1), stopped)


@torch.no_grad()
def logits(model: nn.Module, images: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """The model's raw outputs for ``images`` in eval mode, batched, without gradients."""
    from .devices import model_device

    was_training = model.training
    device = model_device(model)
    model.eval()
    try:
        outs = [model(images[i:i + batch_size].to(device)).cpu() for i in range(0, len(images), batch_size)]
    except RuntimeError:
        shape = tuple(getattr(model, "input_shape", ()) or ())
        if shape and tuple(images.shape[1:]) != shape:  # e.g. --force-dataset with another kind of images
            raise DataError(f"the model takes images of shape {'x'.join(map(str, shape))}, but these are "
                            f"{'x'.join(map(str, images.shape[1:]))}: use data of the kind the model was trained "
                            "on (or --size to resize)") from None
        raise
    finally:
        model.train(was_training)
    return torch.cat(outs) if outs else torch.empty(0)


def predict(model: nn.Module, images: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """Predicted labels (int64) for ``images``."""
    return logits(model, images, batch_size).argmax(dim=1)


def evaluate(model: nn.Module, data: Dataset, batch_size: int = 512) -> float:
    """Top-1 accuracy of ``model`` on ``data``."""
    if len(data) == 0:
        raise ConfigError(f"cannot evaluate on an empty dataset ({data.name})")
    return float((predict(model, data.images, batch_size) == data.labels).float().mean())


def train_new(arch: str, data: Dataset, config: TrainConfig = TrainConfig(), *, seed: int = 0,
              quiet: bool = True, **arch_kwargs) -> tuple[nn.Module, TrainReport]:
    """Build a zoo model for ``data`` (initialised from ``seed``) and train it; returns it in eval mode."""
    from . import build_model

    model = build_model(arch, data.num_classes, data.input_shape, seed=seed, **arch_kwargs)
    report = fit(model, data, config, seed=seed, quiet=quiet, description=f"training {arch}")
    return model, report
