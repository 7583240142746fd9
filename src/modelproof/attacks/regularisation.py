"""Fine-tuning variants of the SoK: label smoothing, and strong regularisation followed by recovery.

**Label smoothing** (WRT's ``LabelSmoothingAttack``): fine-tune all layers on the attacker's data with
the targets ``(1 - epsilon) * onehot(y) + epsilon / K`` (``cross_entropy(..., label_smoothing=epsilon)``),
which flattens the confident, narrow decision regions a trigger set relies on. WRT's CIFAR-10
configuration: epsilon 0.3, 5 epochs, at ten times the fine-tuning rate (here Adam 1e-3).

**Regularisation** (WRT's ``Regularization``): train for ``reg_epochs`` with a strong L2 weight penalty
(``l2_decay``, added to the gradient as torch's ``weight_decay``), which shrinks the weights the task does
not need, then fine-tune without it until the loss on a held-out part of the attacker's data (20%) has not
improved for ``patience`` epochs (at most ``max_epochs``). WRT's CIFAR-10 configuration: l2 0.1, 5
regularisation epochs, at most 50 fine-tuning epochs with patience 5. Both phases use Adam at 1e-3.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..data.splits import Dataset
from ..models.devices import model_device
from ..models.training import TrainConfig, fit, logits
from ..util.progress import progress_bar
from .base import Attack, AttackLog, Param, check_positive, check_rate
from .tuning import holdout_split, labelled, set_training

_COMMON = (
    Param("lr", "float", "Adam learning rate"),
    Param("batch_size", "int", "batch size"),
    Param("labels", "str", "'true' (the attacker's labels) or 'victim' (relabel by the victim's answers)"),
)


def fit_smoothed(model: nn.Module, data: Dataset, epsilon: float, *, epochs: int, lr: float, batch_size: int,
                 seed: int) -> None:
    """Train all layers with Adam on cross-entropy against label-smoothed targets, in place."""
    device = model_device(model)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    steps = math.ceil(len(data) / batch_size)
    with torch.random.fork_rng(devices=[]), progress_bar(epochs * steps, "label-smoothed fine-tuning", True) as bar:
        torch.manual_seed(seed)  # dropout
        model.train()
        for _ in range(epochs):
            order = torch.randperm(len(data), generator=gen)
            for s in range(steps):
                idx = order[s * batch_size:(s + 1) * batch_size]
                x, y = data.images[idx].to(device), data.labels[idx].to(device)
                loss = F.cross_entropy(model(x), y, label_smoothing=epsilon)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                bar(1, loss=float(loss.detach()))
    model.eval()


class LabelSmoothing(Attack):
    """Fine-tune all layers against label-smoothed targets (WRT: epsilon 0.3, 5 epochs)."""

    name = "label-smoothing"
    description = "label smoothing (SoK/WRT): fine-tune all layers on targets smoothed by epsilon 0.3"
    PARAMS = (Param("epsilon", "float", "smoothing weight: targets (1 - eps) onehot + eps / K, in (0, 1)"),
              Param("epochs", "int", "fine-tuning epochs")) + _COMMON

    def __init__(self, epsilon: float = 0.3, epochs: int = 5, lr: float = 1e-3, batch_size: int = 64,
                 labels: str = "true") -> None:
        self.epsilon = float(check_rate("epsilon", epsilon))
        set_training(self, epochs=epochs, lr=lr, batch_size=batch_size, labels=labels)

    def _run(self, model: nn.Module, data: Dataset, seed: int, log: AttackLog) -> nn.Module:
        fit_smoothed(model, labelled(model, data, self.labels, log), self.epsilon, epochs=self.epochs, lr=self.lr,
                     batch_size=self.batch_size, seed=seed)
        return model


def holdout_loss(model: nn.Module, data: Dataset) -> float:
    """Mean cross-entropy of ``model`` on ``data``."""
    return float(F.cross_entropy(logits(model, data.images), data.labels))


class Regularisation(Attack):
    """Strong L2 regularisation for a few epochs, then fine-tuning with early stopping (WRT's regularisation)."""

    name = "regularization"
    description = "regularisation (SoK/WRT): 5 epochs with L2 weight decay 0.1, then fine-tuning until holdout loss stalls"
    PARAMS = (
        Param("l2_decay", "float", "weight decay of the regularisation phase"),
        Param("reg_epochs", "int", "epochs of the regularisation phase"),
        Param("max_epochs", "int", "most epochs of the recovery phase"),
        Param("patience", "int", "stop recovering after this many epochs without a better holdout loss"),
        Param("holdout", "float", "share of the attacker's data held out for early stopping"),
    ) + _COMMON

    def __init__(self, l2_decay: float = 0.1, reg_epochs: int = 5, max_epochs: int = 50, patience: int = 5,
                 holdout: float = 0.2, lr: float = 1e-3, batch_size: int = 64, labels: str = "true") -> None:
        self.l2_decay = float(check_positive("l2_decay", l2_decay))
        self.reg_epochs = check_positive("reg_epochs", reg_epochs, integer=True)
        self.max_epochs = check_positive("max_epochs", max_epochs, integer=True)
        self.patience = check_positive("patience", patience, integer=True)
        self.holdout = float(check_rate("holdout", holdout))
        set_training(self, lr=lr, batch_size=batch_size, labels=labels)

    def _run(self, model: nn.Module, data: Dataset, seed: int, log: AttackLog) -> nn.Module:
        fit_part, hold = holdout_split(labelled(model, data, self.labels, log), self.holdout, seed)
        fit(model, fit_part, TrainConfig(epochs=self.reg_epochs, batch_size=self.batch_size, lr=self.lr,
                                         weight_decay=self.l2_decay), seed=seed, description="regularisation")
        after_reg = holdout_loss(model, hold)
        best, stale = [after_reg], [0]

        def stalled(current: nn.Module) -> bool:
            loss = holdout_loss(current, hold)
            best[0], stale[0] = (loss, 0) if loss < best[0] else (best[0], stale[0] + 1)
            return stale[0] >= self.patience

        report = fit(model, fit_part, TrainConfig(epochs=self.max_epochs, batch_size=self.batch_size, lr=self.lr),
                     seed=seed + 1, until=stalled, description="recovery")
        log.details.update(holdout_loss_after_regularisation=after_reg, holdout_loss_best=best[0],
                           recovery_epochs=report.epochs)
        return model
