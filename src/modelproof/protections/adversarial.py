"""Fast gradient adversaries as pure functions on tensors: one step of size eps in the l-inf, l2 or l1 norm.

FGSM (Goodfellow et al. 2015) moves an image along the gradient of the training loss with respect
to the input, ``x* = x + eps * d`` with ``d = sign(g)`` under l-infinity. Under l2 and l1 the step is
the gradient normalised in that norm, ``d = g / ||g||_p`` (cleverhans 2.0's ``fgm``, which the
frontier-stitching paper used), so that ``||x* - x||_p = eps`` before clipping. The result is
clipped to [0, 1]; clipping only shrinks each coordinate's change, so ``||x* - x||_p <= eps`` still
holds. A source whose gradient is exactly zero is left unchanged (its step is zero).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..models.devices import model_device
from ..util.errors import ConfigError

NORMS = ("linf", "l2", "l1")


def check_norm(norm: object) -> str:
    """``norm`` if it is one of ``NORMS``, else ConfigError."""
    if norm not in NORMS:
        raise ConfigError(f"norm must be one of {', '.join(NORMS)}, got {norm!r}")
    return norm  # type: ignore[return-value]


def check_eps(eps: object) -> float:
    """``eps`` as a positive finite float, else ConfigError."""
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0.0 < float(eps) < float("inf"):
        raise ConfigError(f"eps (the FGSM step) must be a positive number, got {eps!r}")
    return float(eps)


def input_gradient(model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                   batch_size: int = 256) -> torch.Tensor:
    """d CE(model(x), y) / dx per example (eval mode, summed loss so each row is its own gradient).

    The model's parameters receive no gradient and its train/eval mode is restored.
    """
    was_training = model.training
    model.eval()
    grads, device = [], model_device(model)  # computed on the model's device, returned where the images are
    try:
        for i in range(0, len(images), batch_size):
            x = images[i:i + batch_size].detach().to(device).clone().requires_grad_(True)
            loss = F.cross_entropy(model(x), labels[i:i + batch_size].to(device), reduction="sum")
            (g,) = torch.autograd.grad(loss, x)
            grads.append(g.detach().to(images.device))
    finally:
        model.train(was_training)
    return torch.cat(grads) if grads else torch.zeros_like(images)


def normalised_direction(grad: torch.Tensor, norm: str) -> torch.Tensor:
    """The unit step per example: ``sign(g)`` (linf) or ``g / ||g||_p`` (l2, l1); zero where g is zero."""
    check_norm(norm)
    if norm == "linf":
        return grad.sign()
    flat = grad.flatten(1)
    size = flat.norm(p=2 if norm == "l2" else 1, dim=1)
    scale = torch.where(size > 0, 1.0 / size.clamp_min(torch.finfo(grad.dtype).tiny), torch.zeros_like(size))
    return (flat * scale[:, None]).view_as(grad)


def fgsm(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, eps: float, norm: str = "linf",
         batch_size: int = 256) -> torch.Tensor:
    """One fast-gradient step of size ``eps`` in ``norm`` away from ``labels``, clipped to [0, 1]."""
    eps = check_eps(eps)
    step = normalised_direction(input_gradient(model, images, labels, batch_size), norm)
    return (images + eps * step).clamp_(0.0, 1.0)


def perturbation_norm(adversaries: torch.Tensor, sources: torch.Tensor, norm: str) -> torch.Tensor:
    """``||adversary - source||`` in ``norm``, one value per example."""
    check_norm(norm)
    diff = (adversaries - sources).flatten(1)
    if norm == "linf":
        return diff.abs().amax(dim=1)
    return diff.norm(p=2 if norm == "l2" else 1, dim=1)
