"""Fine-pruning (Liu, Dolan-Gavitt and Garg, RAID 2018): prune dormant channels of the last conv layer, fine-tune.

A backdoor (a trigger-set watermark) tends to live in neurons that clean inputs leave dormant. The
attacker measures the mean activation of every channel of the last convolutional layer on its own
clean images, prunes channels in increasing order of activation, and then fine-tunes the pruned model
on its data. Liu et al. keep pruning until the accuracy on clean validation data has dropped by 4%;
``rate="auto"`` does that on a held-out part of the attacker's data (``holdout``, default 20%:
``max_drop`` 0.04 of the unpruned model's holdout accuracy), a fixed ``rate`` prunes that fraction of
the channels. A pruned channel stays pruned: its filter (and bias, and the BatchNorm scale and shift
right after it) is held at exactly zero during fine-tuning, then made permanent, so the model keeps
its zoo architecture and saves as a model file. A model without convolutions (the MLP) has the
neurons of its last hidden dense layer pruned instead.

Fine-tuning defaults are WRT's (``fine_pruning.yaml``: 10 epochs on the attacker's data) with the
package's fine-tuning rate (Adam, 1e-4). WRT prunes 96% of the activation *positions* of one named
ResNet stage; here whole channels of the last conv layer are pruned, as in the paper.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn.utils import prune

from ..data.splits import Dataset
from ..models.training import evaluate
from ..util.errors import ConfigError
from ..util.progress import report
from .activations import activation_site, channel_means, hidden_layers, last_conv_layer, mean_activations
from .base import Attack, AttackLog, Param, check_rate
from .tuning import holdout_split, labelled, set_training, train_layers

SCAN_STEPS = 32  # the auto search tries at most about this many channel counts


def prune_channels(model: nn.Module, layer: nn.Module, channels: torch.Tensor) -> list[tuple[nn.Module, str]]:
    """Hold output ``channels`` of ``layer`` (and of the BatchNorm right after it) at zero with pruning
    masks; returns the (module, parameter) pairs masked, for :func:`make_permanent`."""
    site = activation_site(model, layer)
    masked = []
    for module in (layer, site) if site is not layer else (layer,):
        for pname in ("weight", "bias"):
            param = getattr(module, pname, None)
            if param is None:
                continue
            mask = torch.ones_like(param)
            mask[channels] = 0
            prune.custom_from_mask(module, pname, mask)
            masked.append((module, pname))
    return masked


def make_permanent(masked: list[tuple[nn.Module, str]]) -> None:
    """Fold the pruning masks into plain parameters (the zeros stay)."""
    for module, pname in masked:
        prune.remove(module, pname)


class FinePruning(Attack):
    """Prune the last conv layer's least active channels (all of them up to a 4% holdout drop), fine-tune."""

    name = "fine-pruning"
    description = "Liu et al. fine-pruning: prune the last conv layer's dormant channels (auto: <= 4% holdout drop), fine-tune"
    PARAMS = (
        Param("rate", "rate", "fraction of the last conv layer's channels pruned, in (0, 1), or 'auto'"),
        Param("max_drop", "float", "rate=auto prunes while holdout accuracy drops by at most this (Liu et al.: 0.04)"),
        Param("holdout", "float", "share of the attacker's data held out to measure accuracy for rate=auto"),
        Param("epochs", "int", "fine-tuning epochs after pruning (WRT: 10)"),
        Param("lr", "float", "fine-tuning Adam learning rate"),
        Param("batch_size", "int", "batch size"),
        Param("labels", "str", "'true' (the attacker's labels) or 'victim' (relabel by the victim's answers)"),
    )

    def __init__(self, rate: float | str = "auto", max_drop: float = 0.04, holdout: float = 0.2, epochs: int = 10,
                 lr: float = 1e-4, batch_size: int = 64, labels: str = "true") -> None:
        self.rate = check_rate("rate", rate, allow_auto=True)
        self.max_drop = float(check_rate("max_drop", max_drop))
        self.holdout = float(check_rate("holdout", holdout))
        set_training(self, epochs=epochs, lr=lr, batch_size=batch_size, labels=labels, zero_epochs=True)

    def _run(self, model: nn.Module, data: Dataset, seed: int, log: AttackLog) -> nn.Module:
        found = last_conv_layer(model) or (hidden_layers(model) or [None])[-1]
        if found is None:
            raise ConfigError(f"{type(model).__name__} has no convolution or hidden dense layer to fine-prune")
        name, layer = found
        data = labelled(model, data, self.labels, log)
        fit_part, hold = holdout_split(data, self.holdout, seed) if self.rate == "auto" else (data, None)
        activity = channel_means(mean_activations(model, [layer], fit_part.images)[0])
        order = torch.argsort(activity.cpu(), stable=True)  # most dormant first
        total = len(order)
        if hold is None:
            count, trace = min(total - 1, max(1, round(float(self.rate) * total))), []
        else:
            count, trace = self._search(model, name, order, hold)
        pruned = copy.deepcopy(model)
        pruned_layer = pruned.get_submodule(name)
        masked = prune_channels(pruned, pruned_layer, order[:count])
        if self.epochs:
            train_layers(pruned, fit_part, trainable=None, epochs=self.epochs, lr=self.lr,
                         batch_size=self.batch_size, seed=seed)
        make_permanent(masked)
        log.details.update(layer=name, channels=total, pruned_channels=count, rate=count / total,
                           auto=self.rate == "auto", pruned=order[:count].tolist(),
                           mean_activation_pruned=float(activity.cpu()[order[:count]].mean()) if count else 0.0,
                           mean_activation_kept=float(activity.cpu()[order[count:]].mean()), search=trace)
        return pruned.eval()

    def _search(self, model: nn.Module, name: str, order: torch.Tensor, hold: Dataset) -> tuple[int, list[dict]]:
        """The most channels of layer ``name`` (in ``order``) whose pruning keeps the holdout accuracy within
        ``max_drop`` (tried in steps of 1/32 of the channels at most)."""
        baseline = evaluate(model, hold)
        total, step = len(order), max(1, len(order) // SCAN_STEPS)
        best, trace = 0, [{"pruned": 0, "holdout_accuracy": baseline}]
        for count in range(step, total, step):
            trial = copy.deepcopy(model)
            prune_channels(trial, trial.get_submodule(name), order[:count])
            acc = evaluate(trial, hold)
            trace.append({"pruned": count, "holdout_accuracy": acc})
            report(0, pruned=count, holdout_accuracy=acc)
            if baseline - acc > self.max_drop + 1e-9:
                break
            best = count
        return best, trace
