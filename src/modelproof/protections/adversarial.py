"""Fast gradient adversaries as pure functions on tensors: one step of size eps in the l-inf, l2 or l1 norm.

FGSM (Goodfellow et al. 2015) moves an image along the gradient of the training loss with respect
to the input, ``x* = x + eps * d`` with ``d = sign(g)`` under l-infinity. Under l2 and l1 the step is
the gradient normalised in that norm, ``d = g / ||g||_p`` (cleverhans 2.0's ``fgm``, which the
frontier-stitching paper used), so that ``||x* - x||_p = eps`` before clipping. The result is
clipped to [0, 1]; clipping only shrinks each coordinate's change, so ``||x* - x||_p <= eps`` still
holds. A source whose gradient is exactly zero is left unchanged (its step is zero).

Targeted IGSM (:func:`targeted_igsm`, IPGuard's baseline and the ambiguity forgery's search) repeats
steps of 1/255 toward a target label inside an l-infinity ball; :class:`CycleMemory` stops the points
that come back to an earlier state (they never reach the target) with the plain loop's result.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..models.devices import model_device
from ..util.errors import ConfigError
from ..util.progress import phase, report

NORMS = ("linf", "l2", "l1")
ALPHA = 1.0 / 255.0  # IGSM's step: the smallest image step


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


def targeted_igsm(model: nn.Module, x0: torch.Tensor, target: torch.Tensor, eps: float, *,
                  alpha: float = ALPHA, max_iter: int = 1000,
                  stop_cycles: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Iterative targeted FGSM; returns the points and the steps each took (batched, masked).

    A step is a function of the point alone (the model is frozen), so a point that comes back to a
    state it was in (the sign step bounces between the eps ball's faces: on MNIST at eps 0.1 most
    starts that never reach j do so within 200 steps) repeats that cycle until ``max_iter`` without
    reaching j. It stops once it stands where ``max_iter`` steps would leave it (at most
    :data:`CYCLE_MEMORY` steps more), and its step count is the ``max_iter`` it would have taken:
    the points and steps of the plain loop, for a fraction of the steps (``stop_cycles=False``: the
    plain loop, for benchmarks/igsm_speed.py).
    """
    x = x0.detach().clone()
    n = len(x)
    steps = torch.zeros(n, dtype=torch.int64, device=x.device)
    active = torch.arange(n, device=x.device)
    states = CycleMemory(x, max_iter) if stop_cycles else None
    phase(f"IGSM search, {n} point(s)", max_iter)
    for it in range(max_iter):
        xa = x[active].requires_grad_(True)
        z = model(xa)
        keep = z.detach().argmax(1) != target[active]
        if not bool(keep.any()):
            break
        (grad,) = torch.autograd.grad(F.cross_entropy(z, target[active], reduction="sum"), xa)
        idx = active[keep]
        moved = x[idx] - alpha * grad[keep].sign()
        x[idx] = torch.maximum(torch.minimum(moved, x0[idx] + eps), x0[idx] - eps).clamp_(0.0, 1.0)
        steps[idx] += 1
        report(1, searching=len(idx))
        finished = states.step(x, idx, it + 1) if states else torch.zeros_like(idx, dtype=torch.bool)
        steps[idx[finished]] += max_iter - (it + 1)
        active = idx[~finished]
        if not len(active):  # every point reached j or finished its cycle: ask the model nothing more
            break
    return x, steps


CYCLE_MEMORY = 64  # states each IGSM point remembers (cycles up to this length are found)


class CycleMemory:
    """The last :data:`CYCLE_MEMORY` states of each point, as two random projections in float64.

    Two states are the same when both projections are equal: distinct states (which differ by at
    least one pixel step) collide with probability about 1e-22 per comparison. A point still searching
    has moved at every step so far (one that stops never moves again), so column ``c`` holds its
    latest state number ``s`` with ``s % CYCLE_MEMORY == c``.
    """

    def __init__(self, x: torch.Tensor, max_iter: int) -> None:
        device = x.device if x.device.type in ("cpu", "cuda") else torch.device("cpu")  # float64 there
        gen = torch.Generator().manual_seed(0)
        self.weights = (1.0 + torch.rand((x[0].numel(), 2), dtype=torch.float64, generator=gen)).to(device)
        self.max_iter = max_iter
        n = len(x)
        self.seen = torch.full((n, CYCLE_MEMORY, 2), float("nan"), dtype=torch.float64, device=device)
        self.left = torch.full((n,), -1, dtype=torch.int64, device=device)  # steps to go once in a cycle
        self._remember(torch.arange(n, device=device), self._project(x), 0)

    def _project(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1).to(self.weights.device, torch.float64) @ self.weights

    def _remember(self, rows: torch.Tensor, projection: torch.Tensor, state: int) -> None:
        self.seen[rows, state % CYCLE_MEMORY] = projection

    def step(self, x: torch.Tensor, moved: torch.Tensor, state: int) -> torch.Tensor:
        """Points ``moved`` now stand in state number ``state``: which of them are finished."""
        rows = moved.to(self.weights.device)
        cycling = self.left[rows] >= 0
        self.left[rows[cycling]] -= 1
        fresh = rows[~cycling]
        if len(fresh):
            projection = self._project(x[moved[(~cycling).to(moved.device)]])
            same = (self.seen[fresh] == projection[:, None]).all(2)
            found = same.any(1)
            if bool(found.any()):
                column = same[found].float().argmax(1)
                period = (state - column - 1) % CYCLE_MEMORY + 1  # back to the state column ``column`` holds
                self.left[fresh[found]] = (self.max_iter - state) % period  # then where max_iter steps end
            self._remember(fresh, projection, state)
        return (self.left[rows] == 0).to(moved.device)
