"""Helpers the attacks share: (re)training chosen layers, the attacker's holdout, the strength search.

The attacker does not have the owner's test set, so a rate search ("the largest pruning rate whose
accuracy loss stays within 3 points", IPGuard §5.1.2) measures accuracy on a held-out part of the
attacker's own data: the unattacked victim and every candidate are evaluated on that same part.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import torch
from torch import nn

from ..data.splits import Dataset
from ..util.errors import ConfigError
from ..util.progress import report
from ..models.training import TrainConfig, evaluate, fit, predict
from .base import AttackLog, check_choice, check_positive

LABELS = ("true", "victim")


class _FrozenStatistics(nn.Module):
    """Wraps a model so that ``train()`` leaves every BatchNorm in eval mode (running stats fixed)."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x)

    def train(self, mode: bool = True) -> _FrozenStatistics:
        super().train(mode)
        for m in self.inner.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()
        return self


def train_layers(model: nn.Module, data: Dataset, *, trainable: Iterable[nn.Parameter] | None,
                 epochs: int, lr: float, batch_size: int, seed: int, freeze_statistics: bool = False) -> None:
    """Train ``model`` in place with Adam on ``data``; only ``trainable`` parameters (all when None) move.

    With ``freeze_statistics`` BatchNorm running statistics are kept, so layers outside
    ``trainable`` stay bit-identical (IPGuard's "all other layers are fixed").
    """
    config = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, optimizer="adam")
    params = list(model.parameters())
    old = [p.requires_grad for p in params]
    if trainable is not None:
        chosen = {id(p) for p in trainable}
        for p in params:
            p.requires_grad_(id(p) in chosen)
    try:
        target = _FrozenStatistics(model) if freeze_statistics else model
        fit(target, data, config, seed=seed, description="attack training")
    finally:
        for p, flag in zip(params, old):
            p.requires_grad_(flag)
    model.eval()


def set_training(attack: object, *, lr: float, labels: str, epochs: int | None = None,
                 batch_size: int | None = None, zero_epochs: bool = False) -> None:
    """Check and store on ``attack`` the parameters of its training: Adam ``lr``, ``labels`` ('true' or
    'victim') and, when given, ``epochs`` (0 allowed with ``zero_epochs``) and ``batch_size``."""
    if epochs is not None:
        attack.epochs = check_positive("epochs", epochs, integer=True, allow_zero=zero_epochs)  # type: ignore[attr-defined]
    attack.lr = float(check_positive("lr", lr))  # type: ignore[attr-defined]
    attack.labels = check_choice("labels", labels, LABELS)  # type: ignore[attr-defined]
    if batch_size is not None:
        attack.batch_size = check_positive("batch_size", batch_size, integer=True)  # type: ignore[attr-defined]


def labelled(victim: nn.Module, data: Dataset, labels: str, log: AttackLog) -> Dataset:
    """``data`` with its true labels, or relabelled by the victim's answers (counted as queries).

    The second is the piracy paper's §II.C setting: an attacker with unlabelled data labels it with
    the model it stole.
    """
    if labels == "true":
        return data
    answers = predict(victim, data.images)
    log.queries += len(data)
    return Dataset(data.images, answers, data.class_names, f"{data.name}/victim-labels", dict(data.meta))


def holdout_split(data: Dataset, fraction: float, seed: int) -> tuple[Dataset, Dataset]:
    """(fit part, held-out part) of the attacker's data, a seeded random split; both non-empty."""
    if len(data) < 2:
        raise ConfigError(f"the attacker's data {data.name!r} needs at least 2 images to hold some out")
    n_hold = min(max(1, round(len(data) * fraction)), len(data) - 1)
    perm = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed + 7919))
    return data.subset(perm[n_hold:], f"{data.name}/fit"), data.subset(perm[:n_hold], f"{data.name}/holdout")


def search_strength(strengths: Sequence[float], build: Callable[[float], nn.Module], holdout: Dataset,
                    baseline: float, max_drop: float) -> tuple[float, nn.Module, list[dict], bool]:
    """IPGuard's sweep: try ``strengths`` in increasing order until the holdout accuracy drops by more
    than ``max_drop`` below ``baseline``; return the last one within it.

    Returns (strength, its model, the trace of every tried strength, whether one was within the
    bound). When even the first is too strong, the first is returned with ``found=False``.
    """
    trace: list[dict] = []
    best: tuple[float, nn.Module] | None = None
    first: tuple[float, nn.Module] | None = None
    for s in strengths:
        candidate = build(s)
        acc = evaluate(candidate, holdout)
        ok = baseline - acc <= max_drop + 1e-9
        report(0, strength=s, holdout_accuracy=acc)
        trace.append({"strength": s, "holdout_accuracy": acc, "within_bound": ok})
        if first is None:
            first = (s, candidate)
        if not ok:
            break
        best = (s, candidate)
    if best is not None:
        return best[0], best[1], trace, True
    assert first is not None
    return first[0], first[1], trace, False
