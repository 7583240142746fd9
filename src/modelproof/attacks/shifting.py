"""Weight shifting and feature permutation: change the weights' values or their order, keep the task.

**Weight shifting** (Lukas et al.'s SoK, WRT's ``WeightShifting``): every convolution weight tensor W
(out x in x k x k) is shifted by its mean filter and perturbed with Gaussian noise of its own spread,
``W <- W - lambda * mean_over_filters(W) - lambda2 * N(0, std(W))``, then the model is fine-tuned on
the attacker's data to recover its accuracy. WRT's defaults: lambda 1.5, lambda2 1, 10 epochs (CIFAR-10).
A model without convolutions (the MLP) gets the same treatment on its hidden linear layers; the head is
left alone, as WRT's selection of ``conv`` parameters does. The noise is drawn on the CPU from a seeded
generator (the same model for a seed on every device) and moved to the model's device.

**Feature permutation** (the SoK's "feature permutation"): the hidden units of every layer are put in
a random order, and the next layer's inputs reordered with them, so that the network computes exactly
the same function with differently arranged weights. It removes nothing a black-box verifier reads (the
answers are unchanged); it defeats watermarks that read weights at fixed positions. Channels coupled
by a residual sum are permuted together; the coupling is found with torch-pruning's dependency graph,
and a group whose permutation would change the outputs (an operation the graph does not model) is left
in its original order and counted as skipped.
"""

from __future__ import annotations

import torch
from torch import nn

from ..data.splits import Dataset
from ..models.devices import model_device
from ..util.errors import ConfigError
from .activations import hidden_layers
from .base import Attack, AttackLog, Param, check_positive
from .tuning import labelled, set_training, train_layers


def shift_weights(model: nn.Module, lmbda: float, lmbda2: float, gen: torch.Generator) -> list[str]:
    """Shift and perturb the conv weights (hidden linear weights when there is no conv) in place."""
    layers = [(n, m) for n, m in hidden_layers(model) if isinstance(m, nn.Conv2d)] or hidden_layers(model)
    with torch.no_grad():
        for _, m in layers:
            w = m.weight
            noise = torch.randn(w.shape, generator=gen).to(w.device, w.dtype) * w.std()
            w.sub_(lmbda * w.mean(dim=0, keepdim=True) + lmbda2 * noise)
    return [n for n, _ in layers]


class WeightShifting(Attack):
    """Shift every conv filter by the layer's mean filter plus noise, then fine-tune (WRT's weight shifting)."""

    name = "weight-shifting"
    description = "weight shifting (SoK/WRT): conv filters shifted by 1.5x their mean filter plus noise, then fine-tuned"
    PARAMS = (
        Param("lmbda", "float", "multiple of the layer's mean filter subtracted from every filter"),
        Param("lmbda2", "float", "multiple of N(0, std of the layer's weights) added as noise"),
        Param("epochs", "int", "fine-tuning epochs afterwards"),
        Param("lr", "float", "fine-tuning Adam learning rate"),
        Param("batch_size", "int", "batch size"),
        Param("labels", "str", "'true' (the attacker's labels) or 'victim' (relabel by the victim's answers)"),
    )

    def __init__(self, lmbda: float = 1.5, lmbda2: float = 1.0, epochs: int = 10, lr: float = 1e-3,
                 batch_size: int = 64, labels: str = "true") -> None:
        self.lmbda = float(check_positive("lmbda", lmbda, allow_zero=True))
        self.lmbda2 = float(check_positive("lmbda2", lmbda2, allow_zero=True))
        set_training(self, epochs=epochs, lr=lr, batch_size=batch_size, labels=labels, zero_epochs=True)

    def _run(self, model: nn.Module, data: Dataset, seed: int, log: AttackLog) -> nn.Module:
        train = labelled(model, data, self.labels, log)  # the victim labels its data before it is shifted
        if not hidden_layers(model):
            raise ConfigError(f"{type(model).__name__} has no convolution or hidden linear layer to shift")
        shifted = shift_weights(model, self.lmbda, self.lmbda2, torch.Generator().manual_seed(seed))
        if self.epochs:
            train_layers(model, train, trainable=None, epochs=self.epochs, lr=self.lr, batch_size=self.batch_size,
                         seed=seed)
        log.details.update(shifted_layers=shifted)
        return model


def permute_units(model: nn.Module, example: torch.Tensor, gen: torch.Generator) -> tuple[int, int]:
    """Permute the hidden units of every prunable group of ``model`` in place; (groups permuted, skipped)."""
    import torch_pruning as tp

    from .filters import _never_pruned

    model.eval()
    graph = tp.DependencyGraph().build_dependency(model, example_inputs=example)
    with torch.no_grad():
        reference = model(example)
    done = skipped = 0
    for group in graph.get_all_groups(ignored_layers=_never_pruned(model)):
        root = group[0].dep
        size = len(group[0].idxs)
        identity = graph.get_pruning_group(root.target.module, root.handler, list(range(size)))
        shuffled = graph.get_pruning_group(root.target.module, root.handler,
                                           torch.randperm(size, generator=gen).tolist())
        saved = [(t, t.data) for t, _, _, _ in _targets(identity, shuffled, graph)]
        try:
            for t, dim, at, source in _targets(identity, shuffled, graph):
                t.data = t.data.index_copy(dim, at.to(t.device), t.data.index_select(dim, source.to(t.device)))
            with torch.no_grad():
                same = torch.allclose(model(example), reference, rtol=1e-4, atol=1e-5)
        except (RuntimeError, IndexError):
            same = False
        if same:
            done += 1
            continue
        for t, data in saved:
            t.data = data
        skipped += 1
    return done, skipped


def _targets(identity, shuffled, graph) -> list[tuple[torch.Tensor, int, torch.Tensor, torch.Tensor]]:
    """(tensor, dim, positions, new sources) for every parameter and buffer a permutation group reorders:
    the entries at ``positions`` along ``dim`` are to be read from ``sources``."""
    out, seen = [], set()
    for same, moved in zip(identity, shuffled):
        m = same.dep.target.module
        if not isinstance(m, (nn.Conv2d, nn.Linear, nn.modules.batchnorm._BatchNorm)):
            continue
        out_fn = graph.is_out_channel_pruning_fn(same.dep.handler)
        depthwise = isinstance(m, nn.Conv2d) and m.groups > 1
        dim = 0 if out_fn or depthwise or isinstance(m, nn.modules.batchnorm._BatchNorm) else 1
        if (id(m), dim) in seen:
            continue
        seen.add((id(m), dim))
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            tensors = [m.weight, m.bias, m.running_mean, m.running_var]
        else:
            tensors = [m.weight, m.bias] if dim == 0 else [m.weight]
        at = torch.as_tensor(same.idxs, dtype=torch.int64)
        source = torch.as_tensor(moved.idxs, dtype=torch.int64)
        out += [(t, dim, at, source) for t in tensors if t is not None]
    return out


class FeaturePermutation(Attack):
    """Reorder the hidden units of every layer (and the next layer's inputs): same function, other weights."""

    name = "feature-permutation"
    description = "feature permutation (SoK): hidden units put in a random order, next layer reordered; same answers"
    PARAMS = ()

    def _run(self, model: nn.Module, data: Dataset, seed: int, log: AttackLog) -> nn.Module:
        example = data.images[:4].to(model_device(model))
        done, skipped = permute_units(model, example, torch.Generator().manual_seed(seed))
        if not done:
            raise ConfigError(f"{type(model).__name__} has no hidden layer whose units could be permuted")
        log.details.update(groups_permuted=done, groups_skipped=skipped)
        return model
