"""Filter pruning: structural removal of whole channels with torch-pruning's dependency graph.

IPGuard §5.1.2 (FP, after Li et al. 2016): prune the fraction c of filters in each layer with the
smallest absolute values (L1 norm of the filter), then retrain; c grows from 1/16 in steps of 1/16
while accuracy loss stays within 3%. The pruned model really is smaller: a Conv2d loses output
channels, the BatchNorm after it and the next layer's inputs shrink with it (torch-pruning's
``DependencyGraph``), so parameters and inference time go down.

Choices: every Conv2d and every hidden Linear is pruned at the same fraction c (a hidden dense
layer's units are its "filters", so dense-only models can be filter-pruned too); the head's outputs
(the classes) are never pruned, its inputs shrink with the layer before it; recurrent layers are
left alone. Importance is ``MagnitudeImportance(p=1, normalizer=None, group_reduction="first")``:
Li et al.'s L1 norm of each filter. Residual networks: with ``residual="inner"`` (default, IPGuard
following Li et al.) channels tied together by a residual sum are left alone and only the layers
inside each block are pruned; ``residual="coupled"`` lets torch-pruning prune those coupled
channel groups too, across the whole stage. ``rate="auto"`` searches the sweep as weight pruning
does, measuring accuracy on the attacker's own held-out part.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from ..data.splits import Dataset
from ..util.errors import ConfigError
from ..models import last_linear
from .base import AttackLog, Param, check_choice, prunable_layers
from .pruning import SEARCH_PARAMS, RateSearch
from .tuning import train_layers

FILTER_SWEEP = tuple(i / 16 for i in range(1, 16))
RESIDUAL = ("inner", "coupled")


def _never_pruned(model: nn.Module) -> list[nn.Module]:
    """The head (its outputs are the classes) and layers torch-pruning should not touch (recurrent)."""
    _, head = last_linear(model)
    return [head] + [m for m in model.modules() if isinstance(m, (nn.RNNBase, nn.MultiheadAttention))]


def _residual_layers(model: nn.Module, example: torch.Tensor, ignored: list[nn.Module]) -> list[nn.Module]:
    """Layers whose output channels are coupled through a residual sum (an ``add`` in their group)."""
    import torch_pruning as tp

    graph = tp.DependencyGraph().build_dependency(model, example_inputs=example)
    out: list[nn.Module] = []
    for group in graph.get_all_groups(ignored_layers=ignored):
        targets = [dep.target.module for dep, _ in group]
        if any(isinstance(t, tp.ops._ElementWiseOp) and "AddBackward" in str(getattr(t, "_grad_fn", ""))
               for t in targets):
            out += [dep.target.module for dep, _ in group if graph.is_out_channel_pruning_fn(dep.handler)
                    and isinstance(dep.target.module, (nn.Conv2d, nn.Linear))]
    return out


def prune_filters(model: nn.Module, rate: float, example: torch.Tensor, residual: str = "inner") -> None:
    """Remove the fraction ``rate`` of output channels (smallest L1 norm) of every prunable layer, in place."""
    import torch_pruning as tp

    model.eval()
    ignored = _never_pruned(model)
    if residual == "inner":
        ignored += _residual_layers(model, example, ignored)
    if not prunable_layers(model, exclude=tuple(ignored)):
        raise ConfigError(f"{type(model).__name__} has no Conv2d or hidden Linear layer whose filters could be "
                          "pruned (the head's outputs are the classes and are never pruned)")
    importance = tp.importance.MagnitudeImportance(p=1, normalizer=None, group_reduction="first")
    pruner = tp.pruner.MetaPruner(model, example, importance=importance, pruning_ratio=rate,
                                  ignored_layers=ignored, global_pruning=False)
    pruner.step()
    model.eval()


def count_params(model: nn.Module) -> int:
    """Number of parameters (all of them, trainable or not)."""
    return sum(p.numel() for p in model.parameters())


def channel_widths(model: nn.Module) -> list[int]:
    """Output channels of every Conv2d and output units of every Linear, in module order."""
    return [m.out_channels if isinstance(m, nn.Conv2d) else m.out_features for _, m in prunable_layers(model)]


class FilterPruning(RateSearch):
    """Structural filter pruning at a channel fraction c or the largest plausible c (IPGuard's FP)."""

    name = "prune-filters"
    description = ("structural filter pruning (torch-pruning, L1 filters) at fraction c or auto sweep of "
                   "c = 1/16, 2/16, ...; smaller and faster model")
    PARAMS = ((Param("rate", "rate", "fraction c of filters removed from each layer, in (0, 1), or 'auto'"),
               Param("residual", "str", "'inner' (leave residual-coupled channels, IPGuard) or 'coupled'"))
              + SEARCH_PARAMS)

    def __init__(self, rate: float | str = "auto", residual: str = "inner", retrain: bool = True,
                 epochs: int = 3, lr: float = 1e-4, batch_size: int = 64,
                 sweep: tuple[float, ...] = FILTER_SWEEP, max_drop: float = 0.03, holdout: float = 0.2) -> None:
        self.residual = check_choice("residual", residual, RESIDUAL)
        self._init_search(rate, retrain, epochs, lr, batch_size, sweep, max_drop, holdout)

    def _check_prunable(self, model: nn.Module) -> None:
        if not prunable_layers(model, exclude=tuple(_never_pruned(model))):
            raise ConfigError(f"{type(model).__name__} has no Conv2d or hidden Linear layer whose filters could "
                              "be pruned (the head's outputs are the classes and are never pruned)")

    def _apply(self, model: nn.Module, rate: float, train_data: Dataset, seed: int) -> nn.Module:
        pruned = copy.deepcopy(model)
        prune_filters(pruned, rate, train_data.images[:2], self.residual)
        if self.retrain:
            train_layers(pruned, train_data, trainable=None, epochs=self.epochs, lr=self.lr,
                         batch_size=self.batch_size, seed=seed)
        return pruned.eval()

    def _run(self, model: nn.Module, data: Dataset, seed: int, log: AttackLog) -> nn.Module:
        before, widths = count_params(model), channel_widths(model)
        out = super()._run(model, data, seed, log)
        log.details.update(params_before=before, params_after=count_params(out),
                           widths_before=widths, widths_after=channel_widths(out), structurally_pruned=True)
        return out
