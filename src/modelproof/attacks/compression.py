"""SVD compression: replace linear and convolution layers by low-rank factorisations.

Frontier stitching §4.4, Table 2 compresses with ``keras_compressor``'s SVD at rates 0.25-0.9. Here a
Linear with weight W (out x in) becomes two Linears ``in -> r -> out`` with ``W ~= (U_r S_r^1/2)
(S_r^1/2 V_r^T)`` (the bias stays on the second); a Conv2d with weight (out, in, k, k), read as an
(out x in*k*k) matrix, becomes a k x k convolution with r outputs (same stride, padding, dilation)
followed by a 1x1 convolution to ``out`` channels. ``rate`` is the fraction of each layer's rank
removed, as the paper's "compression rate": a layer of full rank R keeps r = max(1, R - round(rate*R)).

Choices: the head is excluded by default (its rank is at most the number of classes, so factorising
it saves almost nothing and directly distorts the class scores; ``include_head=true`` includes it);
grouped and depthwise convolutions are left as they are (each group is already a small matrix).
``rate="auto"`` and retraining work as in weight pruning (holdout of the attacker's data); by default
there is no retraining, as in the paper. The result is a plain ``nn.Module`` (the original model
with layers swapped) that runs and exports to ONNX; its state dict no longer matches a zoo record.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from ..data.splits import Dataset
from ..util.errors import ConfigError
from ..models import last_linear
from .base import AttackLog, Param
from .filters import count_params
from .pruning import SEARCH_PARAMS, WEIGHT_SWEEP, RateSearch
from .tuning import train_layers


def kept_rank(full_rank: int, rate: float) -> int:
    """Rank kept when removing the fraction ``rate`` of ``full_rank`` (at least 1)."""
    return max(1, full_rank - round(rate * full_rank))


def _factors(matrix: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(A, B) with A @ B the best rank-``rank`` approximation of ``matrix`` (A: m x r, B: r x n)."""
    u, s, vh = torch.linalg.svd(matrix.detach().double(), full_matrices=False)
    root = s[:rank].sqrt()
    return (u[:, :rank] * root).float(), (root[:, None] * vh[:rank]).float()


def factorise_linear(layer: nn.Linear, rank: int) -> nn.Sequential:
    """Two Linears ``in -> rank -> out`` whose product is the rank-``rank`` SVD approximation."""
    a, b = _factors(layer.weight, rank)
    first = nn.Linear(layer.in_features, rank, bias=False)
    second = nn.Linear(rank, layer.out_features, bias=layer.bias is not None)
    with torch.no_grad():
        first.weight.copy_(b)
        second.weight.copy_(a)
        if layer.bias is not None:
            second.bias.copy_(layer.bias)
    return nn.Sequential(first, second)


def factorise_conv(conv: nn.Conv2d, rank: int) -> nn.Sequential:
    """A k x k convolution with ``rank`` outputs followed by a 1x1 convolution (ungrouped convs only)."""
    if conv.groups != 1:
        raise ConfigError(f"cannot factorise a grouped convolution (groups={conv.groups})")
    out_ch, in_ch, kh, kw = conv.weight.shape
    a, b = _factors(conv.weight.reshape(out_ch, in_ch * kh * kw), rank)
    first = nn.Conv2d(in_ch, rank, (kh, kw), stride=conv.stride, padding=conv.padding, dilation=conv.dilation,
                      bias=False, padding_mode=conv.padding_mode)
    second = nn.Conv2d(rank, out_ch, 1, bias=conv.bias is not None)
    with torch.no_grad():
        first.weight.copy_(b.reshape(rank, in_ch, kh, kw))
        second.weight.copy_(a.reshape(out_ch, rank, 1, 1))
        if conv.bias is not None:
            second.bias.copy_(conv.bias)
    return nn.Sequential(first, second)


def full_rank(layer: nn.Module) -> int:
    """min(out, in * k * k) of a Conv2d, min(out, in) of a Linear."""
    w = layer.weight
    return int(min(w.shape[0], w[0].numel()))


def factorisable(model: nn.Module, include_head: bool = False) -> list[tuple[str, nn.Module]]:
    """(name, layer) of every Linear and ungrouped Conv2d SVD compression would replace."""
    _, head = last_linear(model)
    return [(n, m) for n, m in model.named_modules()
            if (isinstance(m, nn.Linear) or (isinstance(m, nn.Conv2d) and m.groups == 1))
            and (include_head or m is not head)]


def svd_compress(model: nn.Module, rate: float, include_head: bool = False) -> dict[str, int]:
    """Replace every factorisable layer of ``model`` in place; returns the rank kept per layer name."""
    ranks: dict[str, int] = {}
    for name, layer in factorisable(model, include_head):
        rank = kept_rank(full_rank(layer), rate)
        new = factorise_linear(layer, rank) if isinstance(layer, nn.Linear) else factorise_conv(layer, rank)
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, new)
        ranks[name] = rank
    return ranks


class SVDCompression(RateSearch):
    """Low-rank (SVD) factorisation of linear and convolution layers (frontier stitching Table 2)."""

    name = "svd"
    description = "SVD compression: each linear/conv layer replaced by a rank-r factorisation (rate or auto)"
    PARAMS = ((Param("rate", "rate", "fraction of each layer's rank removed, in (0, 1), or 'auto'"),
               Param("include_head", "bool", "factorise the head too (default: left exact)"))
              + SEARCH_PARAMS)

    def __init__(self, rate: float | str = 0.5, include_head: bool = False, retrain: bool = False,
                 epochs: int = 3, lr: float = 1e-4, batch_size: int = 64,
                 sweep: tuple[float, ...] = WEIGHT_SWEEP, max_drop: float = 0.03, holdout: float = 0.2) -> None:
        if not isinstance(include_head, bool):
            raise ConfigError(f"include_head must be true or false, got {include_head!r}")
        self.include_head = include_head
        self._init_search(rate, retrain, epochs, lr, batch_size, sweep, max_drop, holdout)

    def _check_prunable(self, model: nn.Module) -> None:
        if not factorisable(model, self.include_head):
            raise ConfigError(f"{type(model).__name__} has no Linear or ungrouped Conv2d layer to factorise"
                              + ("" if self.include_head else " (the head is excluded; include_head=true)"))

    def _apply(self, model: nn.Module, rate: float, train_data: Dataset, seed: int) -> nn.Module:
        compressed = copy.deepcopy(model)
        compressed.svd_ranks = svd_compress(compressed, rate, self.include_head)  # type: ignore[assignment]
        if self.retrain:
            train_layers(compressed, train_data, trainable=None, epochs=self.epochs, lr=self.lr,
                         batch_size=self.batch_size, seed=seed)
        return compressed.eval()

    def _run(self, model: nn.Module, data: Dataset, seed: int, log: AttackLog) -> nn.Module:
        before = count_params(model)
        out = super()._run(model, data, seed, log)
        log.details.update(params_before=before, params_after=count_params(out),
                           ranks=dict(getattr(out, "svd_ranks", {})))
        return out
