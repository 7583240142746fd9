"""Weight pruning: global magnitude pruning of conv and linear weights, made permanent.

IPGuard §5.1.2 (WP): prune the fraction p of weights with the smallest absolute values, then retrain;
p grows from 0.1 in steps of 0.1 while the accuracy loss stays within 3%. Frontier stitching §4.4
prunes 25%-85% of weights without retraining. Both are here: ``rate`` fixed or ``"auto"`` (the sweep),
``retrain`` on or off.

The ranking is global over every Conv2d and Linear weight (``torch.nn.utils.prune.global_unstructured``
with L1), the head included (the papers prune "the weights"), biases never. During retraining the
pruning mask stays attached, so pruned weights stay exactly zero; ``prune.remove`` then makes the
zeros permanent and leaves a plain module with the original parameter names.

``"auto"`` measures accuracy on a held-out part of the attacker's data (``holdout``, default 20%),
because the attacker has no test set of the owner's: retraining uses the remaining 80%. A fixed
rate retrains on all of the attacker's data.
"""

from __future__ import annotations

import copy
from abc import abstractmethod

from torch import nn
from torch.nn.utils import prune

from ..data.splits import Dataset
from ..util.errors import ConfigError
from ..models.training import evaluate
from .base import Attack, AttackLog, Param, check_positive, check_rate, check_sweep, prunable_layers
from .tuning import holdout_split, search_strength, train_layers

WEIGHT_SWEEP = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)

SEARCH_PARAMS = (
    Param("retrain", "bool", "fine-tune after pruning (pruned weights kept at zero)"),
    Param("epochs", "int", "retraining epochs"),
    Param("lr", "float", "retraining Adam learning rate"),
    Param("batch_size", "int", "retraining batch size"),
    Param("sweep", "floats", "rates tried in order by rate=auto (comma-separated, a/b allowed)"),
    Param("max_drop", "float", "rate=auto keeps the holdout accuracy loss within this (IPGuard: 0.03)"),
    Param("holdout", "float", "share of the attacker's data held out to measure accuracy for rate=auto"),
)


class RateSearch(Attack):
    """Shared parameters and flow of the pruning attacks: a fixed rate, or the largest plausible one."""

    def _init_search(self, rate: float | str, retrain: bool, epochs: int, lr: float, batch_size: int,
                     sweep: tuple[float, ...], max_drop: float, holdout: float) -> None:
        self.rate = check_rate("rate", rate, allow_auto=True)
        if not isinstance(retrain, bool):
            raise ConfigError(f"retrain must be true or false, got {retrain!r}")
        self.retrain = retrain
        self.epochs = check_positive("epochs", epochs, integer=True)
        self.lr = float(check_positive("lr", lr))
        self.batch_size = check_positive("batch_size", batch_size, integer=True)
        self.sweep = check_sweep("sweep", sweep)
        self.max_drop = float(check_rate("max_drop", max_drop))
        self.holdout = float(check_rate("holdout", holdout))

    @abstractmethod
    def _apply(self, model: nn.Module, rate: float, train_data: Dataset, seed: int) -> nn.Module:
        """Prune a copy of ``model`` at ``rate`` (and retrain on ``train_data``); return it."""

    @abstractmethod
    def _check_prunable(self, model: nn.Module) -> None:
        """ConfigError when the model has nothing this attack can prune."""

    def _run(self, model: nn.Module, data: Dataset, seed: int, log: AttackLog) -> nn.Module:
        self._check_prunable(model)
        if self.rate != "auto":
            out = self._apply(model, float(self.rate), data, seed)
            log.details.update(rate=float(self.rate))
            return out
        fit_part, hold = holdout_split(data, self.holdout, seed)
        baseline = evaluate(model, hold)
        rate, out, trace, found = search_strength(self.sweep, lambda r: self._apply(model, r, fit_part, seed),
                                                  hold, baseline, self.max_drop)
        log.details.update(rate=rate, auto=True, found_within_bound=found, holdout_baseline=baseline,
                           holdout_images=len(hold), sweep_trace=trace)
        return out


class WeightPruning(RateSearch):
    """Global L1 magnitude pruning of conv and linear weights at a rate or the largest plausible rate."""

    name = "prune-weights"
    description = "global magnitude pruning of conv+linear weights (rate or auto sweep), optional retraining"
    PARAMS = (Param("rate", "rate", "fraction of weights set to zero, in (0, 1), or 'auto'"),) + SEARCH_PARAMS

    def __init__(self, rate: float | str = "auto", retrain: bool = True, epochs: int = 3, lr: float = 1e-4,
                 batch_size: int = 64, sweep: tuple[float, ...] = WEIGHT_SWEEP, max_drop: float = 0.03,
                 holdout: float = 0.2) -> None:
        self._init_search(rate, retrain, epochs, lr, batch_size, sweep, max_drop, holdout)

    def _check_prunable(self, model: nn.Module) -> None:
        if not prunable_layers(model):
            raise ConfigError(f"{type(model).__name__} has no Conv2d or Linear layer whose weights could be pruned")

    def _apply(self, model: nn.Module, rate: float, train_data: Dataset, seed: int) -> nn.Module:
        pruned = copy.deepcopy(model)
        layers = [m for _, m in prunable_layers(pruned)]
        prune.global_unstructured([(m, "weight") for m in layers], pruning_method=prune.L1Unstructured,
                                  amount=rate)
        if self.retrain:
            train_layers(pruned, train_data, trainable=None, epochs=self.epochs, lr=self.lr,
                         batch_size=self.batch_size, seed=seed)
        for m in layers:
            prune.remove(m, "weight")
        return pruned.eval()


def zero_fraction(model: nn.Module) -> float:
    """Fraction of exactly-zero entries over the weights of every Conv2d and Linear layer."""
    weights = [m.weight for _, m in prunable_layers(model)]
    total = sum(w.numel() for w in weights)
    return sum(int((w == 0).sum()) for w in weights) / max(total, 1)
