"""Hidden-layer activations for the attacks that look inside the stolen model (fine-pruning, laundering).

A layer's *activation* is the ReLU of its output, read after the BatchNorm that directly follows it
when there is one (conv -> BN -> ReLU in the VGG and ResNet families), else of the layer itself
(conv -> ReLU -> pool in the LeNets and the Keras CNN). A residual sum after the BatchNorm is not
seen; for the ranking of channels by activity that is the usual approximation.
"""

from __future__ import annotations

import torch
from torch import nn

from ..models import last_linear
from ..models.devices import model_device


def hidden_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(name, module) of every Conv2d and Linear in registration order, minus the classifier head."""
    _, head = last_linear(model)
    return [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear)) and m is not head]


def last_conv_layer(model: nn.Module) -> tuple[str, nn.Conv2d] | None:
    """The last Conv2d in registration order (Liu et al.'s "last convolutional layer"), or None."""
    convs = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    return convs[-1] if convs else None


def activation_site(model: nn.Module, layer: nn.Module) -> nn.Module:
    """The module whose output is ``layer``'s pre-activation: the BatchNorm right after it, else ``layer``."""
    leaves = [m for m in model.modules() if not list(m.children())]
    width = layer.out_channels if isinstance(layer, nn.Conv2d) else getattr(layer, "out_features", None)
    if layer in leaves:
        i = leaves.index(layer)
        after = leaves[i + 1] if i + 1 < len(leaves) else None
        if isinstance(after, (nn.BatchNorm1d, nn.BatchNorm2d)) and after.num_features == width:
            return after
    return layer


@torch.no_grad()
def mean_activations(model: nn.Module, layers: list[nn.Module], images: torch.Tensor,
                     batch_size: int = 256) -> list[torch.Tensor]:
    """For each of ``layers``: ReLU of its activation site's output averaged over ``images``
    ([C, H, W] for a convolution, [F] for a linear layer), on the model's device."""
    device = model_device(model)
    sites = [activation_site(model, layer) for layer in layers]
    sums: list[torch.Tensor | None] = [None] * len(sites)

    def hook(i: int):
        def record(_module: nn.Module, _inputs: object, output: torch.Tensor) -> None:
            total = torch.relu(output).sum(dim=0)
            sums[i] = total if sums[i] is None else sums[i] + total
        return record

    handles = [site.register_forward_hook(hook(i)) for i, site in enumerate(sites)]
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(images), batch_size):
            model(images[start:start + batch_size].to(device))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return [s / max(len(images), 1) if s is not None else torch.zeros(0, device=device) for s in sums]


def channel_means(activation: torch.Tensor) -> torch.Tensor:
    """One value per channel / neuron: the spatial mean of a [C, H, W] map, or the [F] vector itself."""
    return activation.flatten(1).mean(dim=1) if activation.dim() > 1 else activation
