"""Neural network laundering (Aiken, Kim and Woo, Computers & Security 2021): reset trigger neurons, retrain.

Laundering removes a backdoor watermark without knowing it: (1) reverse-engineer candidate triggers
with Neural Cleanse (:mod:`.cleanse`); (2) compare every hidden unit's mean activation on the
attacker's clean images and on the same images stamped with the trigger; (3) reset the units the
trigger excites most: a convolution channel whose activation map grows somewhere by more than
``conv_threshold`` (the maximum over positions of the difference), a dense unit whose activation
grows by more than ``dense_threshold``, by zeroing the weights into it (its bias stays, as WRT's
reset does, so it can relearn); (4) retrain on the clean images plus a stamped copy of every one of
them with its correct label. As the paper (and WRT's reset function) only the later half of the hidden
layers is reset.

Defaults are WRT's CIFAR-10 configuration (``neural_laundering.yaml``): thresholds 0.2 (dense) and 0.5
(conv), retraining 5 epochs; Neural Cleanse and fine-tuning rate as in :mod:`.cleanse`. Activations are
read after ReLU (:mod:`.activations`); the thresholds are in those units.
"""

from __future__ import annotations

import torch
from torch import nn

from ..data.splits import Dataset, concat
from .activations import hidden_layers, mean_activations
from .base import AttackLog, Param, check_positive
from .cleanse import NC_PARAMS, TriggerReversal, stamped
from .tuning import train_layers


def reset_units(model: nn.Module, layers: list[tuple[str, nn.Module]], clean: torch.Tensor, marked: torch.Tensor,
                dense_threshold: float, conv_threshold: float) -> dict[str, int]:
    """Zero the incoming weights of the units of ``layers`` whose mean activation grows beyond the
    threshold from ``clean`` to ``marked`` images; returns the number reset per layer name."""
    modules = [m for _, m in layers]
    before = mean_activations(model, modules, clean)
    after = mean_activations(model, modules, marked)
    reset: dict[str, int] = {}
    with torch.no_grad():
        for (name, m), a, b in zip(layers, before, after):
            diff = b - a
            if diff.dim() > 1:
                units = torch.nonzero(diff.flatten(1).amax(dim=1) > conv_threshold).flatten()
            else:
                units = torch.nonzero(diff > dense_threshold).flatten()
            m.weight[units.to(m.weight.device)] = 0.0
            reset[name] = len(units)
    return reset


class NeuralLaundering(TriggerReversal):
    """Neural Cleanse triggers, reset the later layers' units they excite, retrain on clean + stamped images."""

    name = "neural-laundering"
    description = "Aiken et al. laundering: Neural Cleanse triggers, reset units they excite (later layers), retrain"
    PARAMS = (Param("dense_threshold", "float", "reset a dense unit whose activation grows by more than this"),
              Param("conv_threshold", "float", "reset a conv channel whose activation grows by more than this"),
              ) + NC_PARAMS

    def __init__(self, dense_threshold: float = 0.2, conv_threshold: float = 0.5, images: int = 1000,
                 reverse_epochs: int = 30, epochs: int = 5, lr: float = 1e-3, batch_size: int = 64,
                 labels: str = "true") -> None:
        self.dense_threshold = float(check_positive("dense_threshold", dense_threshold, allow_zero=True))
        self.conv_threshold = float(check_positive("conv_threshold", conv_threshold, allow_zero=True))
        self._init_reversal(images, reverse_epochs, epochs, lr, batch_size, labels)

    def _run(self, model: nn.Module, data: Dataset, seed: int, log: AttackLog) -> nn.Module:
        data, chosen = self._reverse(model, data, seed, log)
        gen = torch.Generator().manual_seed(seed + 1)
        sample = data.subset(torch.randperm(len(data), generator=gen)[:self.images])
        layers = hidden_layers(model)
        later = layers[len(layers) // 2:]
        reset = reset_units(model, later, sample.images, stamped(sample, chosen, 1.0, gen).images,
                            self.dense_threshold, self.conv_threshold)
        train = concat([data, stamped(data, chosen, 1.0, gen)], name=f"{data.name}/laundering")
        train_layers(model, train, trainable=None, epochs=self.epochs, lr=self.lr, batch_size=self.batch_size,
                     seed=seed)
        log.details.update(reset_units=reset)
        return model
