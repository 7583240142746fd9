"""IPGuard (Cao, Jia & Gong, AsiaCCS 2021): fingerprint a classifier by points near its boundary.

For each fingerprint point a start ``x0`` and two labels are drawn (§5.1.4): ``x0`` is a training
example (T) or a uniform point of [0,1]^d (R); ``i`` is the label the target model predicts for
``x0`` (§4.2: "x is initialized to be a data point whose label is predicted as i"); ``j`` is a
random other label (R) or ``x0``'s least-likely label (L). Eq. 5 is then minimised over x with Adam,
x clipped to [0,1] after every step:

    loss(x) = ReLU(Z_i(x) - Z_j(x) + k) + ReLU(max_{t != i,j} Z_t(x) - Z_i(x))

The loss is zero exactly when Z_j >= Z_i + k and Z_i is the runner-up: the point has crossed from
i's region into j's and lies a logit gap k beyond the i/j boundary. A point stops at zero loss
or after ``max_iter`` (1,000) Adam steps. The fingerprint is the points with the target model's
own labels (mostly j). The model is only read: eval mode, no parameter gradients, and its training
mode, ``requires_grad`` flags and ``.grad`` tensors are restored.

Batched mode optimises all points in one batch: each keeps its own Adam moments, and a point that
reaches zero loss leaves the batch (no more forward passes or updates for it), which is the
per-point loop (``batched=False``) but with one forward/backward per step for all points. The two
agree up to float rounding: a convolution may take another kernel at batch size 1 than in a batch,
so on a large model a point whose loss reaches zero within rounding can stop a step earlier or
later (exactly equal on the small models of the tests; ResNet-20 differed on some points).
"""

from __future__ import annotations

import math
import time
from abc import abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from ...data.splits import Dataset
from ...util.checks import check_int
from ...models.devices import model_device
from ...models.training import logits
from ...util.errors import ConfigError
from ...keys.key import OwnershipKey
from ...models.modelfile import weights_digest
from ...util.progress import phase, report
from ..base import Protected, Protection, register_protection
from ..selection import Selection

INITS = ("TR", "TL", "RR", "RL")

# Adam learning rates of the paper (§5.1.3, the same for IPGuard and CW-L2). It gives none for the
# grey 28x28 datasets: we use its small-image value 0.001 there (0.01 converges in fewer steps but
# moves points further, and independent models then agree with more of them: see the README);
# 0.01 on the bundled 8x8 digits, whose tiny models need larger steps to reach the gap k.
PAPER_LR = {"cifar10": 1e-3, "cifar100": 1e-3, "imagenet": 0.1}
OUR_LR = {"mnist": 1e-3, "fashion-mnist": 1e-3, "digits": 1e-2}
DEFAULT_LR = 1e-3
# The logit gap k: 3 without key selection; 1 with it, where points close to the boundary are the
# ones other models answer differently (measured: benchmarks/key_selection.py).
DEFAULT_K, SELECTED_K = 3.0, 1.0


def learning_rate(dataset_name: str) -> float:
    """The per-dataset Adam learning rate (the paper's where it gives one, else ours)."""
    base = dataset_name.split("/")[0].lower()
    return PAPER_LR.get(base, OUR_LR.get(base, DEFAULT_LR))


def check_number(name: str, value: object, *, minimum: float, strict: bool = False,
                 maximum: float | None = None) -> float:
    """``value`` as a finite float >= ``minimum`` (> when ``strict``, <= ``maximum``), else ConfigError."""
    ok = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
    if not ok or value < minimum or (strict and value == minimum) or (maximum is not None and value > maximum):
        bound = f"{'>' if strict else '>='} {minimum:g}" + (f" and <= {maximum:g}" if maximum is not None else "")
        raise ConfigError(f"{name} must be a finite number {bound}, got {value!r}")
    return float(value)


def check_init(init: object) -> str:
    """One of TR, TL, RR, RL (case-insensitive), else ConfigError."""
    key = init.strip().upper() if isinstance(init, str) else None
    if key not in INITS:
        raise ConfigError(f"init must be one of {', '.join(INITS)} (training/random start, random/least-likely "
                          f"target label), got {init!r}")
    return key


def initial_points(model: nn.Module, data: Dataset, n: int, init: str,
                   gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Starts ``x0`` and labels ``i`` (the model's label of ``x0``) and ``j`` (the target) for ``init``.

    T: training examples drawn without replacement (ConfigError when ``n`` exceeds the data: repeated
    starts would give repeated key inputs, counted as independent trials);
    R: uniform in [0,1]^d. Target R: uniform over the labels other than i; L: the least-likely label.
    """
    if init[0] == "T":
        if n > len(data):
            raise ConfigError(f"init {init} draws {n} distinct training images but {data.name} has {len(data)}; "
                              "ask for fewer points or use a random start (RR or RL)")
        x0 = data.images[torch.randperm(len(data), generator=gen)[:n]].clone()
    else:
        x0 = torch.rand((n, *data.input_shape), generator=gen)
    z = logits(model, x0)  # in batches: a selection draw may hold tens of thousands of starts
    i = z.argmax(dim=1)
    if init[1] == "L":
        j = z.argmin(dim=1)
    else:
        c = z.shape[1]
        j = (i + 1 + torch.randint(c - 1, (n,), generator=gen)) % c
    return x0, i, j


@contextmanager
def frozen(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode and ``requires_grad=False`` for every parameter, both restored on exit."""
    was_training = model.training
    flags = [(p, p.requires_grad) for p in model.parameters()]
    model.eval()
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield model
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        model.train(was_training)


def boundary_loss(z: torch.Tensor, i: torch.Tensor, j: torch.Tensor, k: float) -> torch.Tensor:
    """Eq. 5 per point: ReLU(Z_i - Z_j + k) + ReLU(max_{t != i,j} Z_t - Z_i); shape (N,)."""
    zi = z.gather(1, i[:, None]).squeeze(1)
    zj = z.gather(1, j[:, None]).squeeze(1)
    others = z.scatter(1, i[:, None], float("-inf")).scatter(1, j[:, None], float("-inf"))
    runner = others.max(dim=1).values if z.shape[1] > 2 else torch.full_like(zi, float("-inf"))
    return torch.relu(zi - zj + k) + torch.relu(runner - zi)


@dataclass(frozen=True)
class SearchResult:
    """Where the boundary search ended: points, Adam steps taken and final loss, per point."""

    points: torch.Tensor
    iterations: torch.Tensor
    loss: torch.Tensor

    @property
    def converged(self) -> torch.Tensor:
        """Points that reached zero loss."""
        return self.loss <= 0


def boundary_search(model: nn.Module, x0: torch.Tensor, i: torch.Tensor, j: torch.Tensor, *, k: float,
                    lr: float, max_iter: int = 1000, betas: tuple[float, float] = (0.9, 0.999),
                    eps: float = 1e-8) -> SearchResult:
    """Minimise Eq. 5 from ``x0`` for all points at once (``model`` must be frozen, see :func:`frozen`).

    Adam is written out so that every point keeps its own moments and drops out of the batch when
    its loss reaches zero; all active points share the step count (they started together), so the
    result equals running ``torch.optim.Adam`` on each point alone (up to float rounding).
    """
    n, device = x0.shape[0], model_device(model)  # every tensor of the search lives on the model's device
    x, i, j = x0.detach().to(device).clone(), i.to(device), j.to(device)
    m, v = torch.zeros_like(x), torch.zeros_like(x)
    iterations = torch.zeros(n, dtype=torch.int64, device=device)
    final = torch.full((n,), float("inf"), device=device)
    active = torch.arange(n, device=device)
    b1, b2 = betas
    phase(f"boundary search, {n} point(s)", max_iter)
    for t in range(1, max_iter + 2):
        xa = x[active].requires_grad_(True)
        loss = boundary_loss(model(xa), i[active], j[active], k)
        final[active] = loss.detach()
        keep = loss.detach() > 0
        if t > max_iter or not bool(keep.any()):
            break
        (grad,) = torch.autograd.grad(loss.sum(), xa)
        idx, g = active[keep], grad[keep]
        m[idx] = b1 * m[idx] + (1 - b1) * g
        v[idx] = b2 * v[idx] + (1 - b2) * g * g
        step = lr * (m[idx] / (1 - b1 ** t)) / ((v[idx] / (1 - b2 ** t)).sqrt() + eps)
        x[idx] = (x[idx] - step).clamp_(0.0, 1.0)
        iterations[idx] += 1
        active = idx
        report(1, searching=len(active))
    return SearchResult(x.cpu(), iterations.cpu(), final.cpu())


def per_point_search(model: nn.Module, x0: torch.Tensor, i: torch.Tensor, j: torch.Tensor, *, k: float,
                     lr: float, max_iter: int = 1000) -> SearchResult:
    """The same search one point at a time (the paper's loop), to measure what batching buys."""
    parts = [boundary_search(model, x0[p:p + 1], i[p:p + 1], j[p:p + 1], k=k, lr=lr, max_iter=max_iter)
             for p in range(x0.shape[0])]
    return SearchResult(torch.cat([r.points for r in parts]), torch.cat([r.iterations for r in parts]),
                        torch.cat([r.loss for r in parts]))


class FingerprintBase(Protection):
    """Shared by IPGuard and its baselines: point count, the default null, key building, mode restored.

    ``null_match_prob`` is the chance that an *independent* model answers a key label. For boundary
    fingerprints it is not 1/C: independently trained models agree with the target on some points,
    the more the further the points lie past the boundary. Each method has a conservative default
    (``default_null``) set above the largest agreement of independent models we measured at its
    useful settings (IPGuard with k <= 5 on MNIST: 0.3, with k <= 3 on the 8x8 and 16x16 digits:
    0.7; FGSM and IGSM near training images: up to 0.98); the recommended path is to calibrate it
    against reference models (``modelproof.references.calibration``; ``protect`` does it by default).
    """

    kind = "fingerprint"
    analytic_null_unsound = True
    weak_hint = "use more points (--points) or points further from the data (another --k, --eps or --init)"
    default_null: ClassVar[float] = 0.75
    # Candidates drawn per key point under key selection (measured: benchmarks/key_selection.py).
    oversample: ClassVar[int] = 16

    def __init__(self, points: int, null_match_prob: float | None, secret: int | str | None = None) -> None:
        self.set_secret(secret)
        self.points = check_int("points", points, 1)
        self.null_match_prob = (None if null_match_prob is None
                                else check_number("null_match_prob", null_match_prob, minimum=0.0, maximum=1.0))

    def protect(self, model: nn.Module, data: Dataset, *, seed: int = 0, test: Dataset | None = None,
                selection: Selection | None = None) -> Protected:
        """As :meth:`Protection.protect`, and the caller's training mode is restored afterwards."""
        was_training = model.training
        try:
            return super().protect(model, data, seed=seed, test=test, selection=selection)
        finally:
            model.train(was_training)

    @abstractmethod
    def _draw(self, model: nn.Module, data: Dataset, n: int, gen: torch.Generator, selecting: bool,
              init: str | None = None) -> tuple[torch.Tensor, dict, dict]:
        """``n`` fingerprint points from ``data`` and ``gen`` (``init`` overrides the method's start):
        (points, report entries, extra key params)."""

    def _protect(self, model: nn.Module, data: Dataset, *, seed: int, test: Dataset | None,
                 selection: Selection | None = None) -> Protected:
        if selection is None:
            points, report, extra = self._draw(model, data, self.points, self.gen("points"), False)
            return self._finish(model, data, points, seed, extra, report)
        return self._select(model, data, seed, selection)

    def _select(self, model: nn.Module, data: Dataset, seed: int, selection: Selection) -> Protected:
        """Points the judges do not answer with the model's label, drawn ``oversample`` x at a time.

        Starts from training images (inits T*) walk one secret order of ``data`` without repeats; when
        the owner's images are used up, later draws start from them again with random target labels
        (TR: other points; a point found twice is dropped by :meth:`Selection.choose`).
        """
        order, used, drawn = torch.randperm(len(data), generator=self.gen("select/order")), 0, []
        restarts: list[int] = []

        def draw(round_: int, count: int) -> dict:
            nonlocal used
            part, init = data, getattr(self, "init", None)
            if init is not None and init[0] == "T" and used < len(data):
                count = min(count, len(data) - used)
                part = data.subset(order[used:used + count], f"{data.name}/candidates")
                used += count
            elif init is not None and init[0] == "T":  # the owner's images are used up: start from them
                init, count = "TR", min(count, len(data))  # again with random target labels (other points)
                restarts.append(count)
            points, report, extra = self._draw(model, part, count, self.gen(f"points/select/{round_}"), True, init)
            drawn.append((report, extra))
            with frozen(model), torch.no_grad():
                labels = model(points).argmax(1).cpu()
            return {"inputs": points.detach().cpu(), "labels": labels}

        start = time.perf_counter()
        chosen, record = selection.choose(self.name, self.points, draw, default_oversample=self.oversample,
                                          rule="the judges answer the point otherwise than the model",
                                          hint=self.weak_hint, use_surrogates=True)
        if restarts:
            record = {**record, "restarts": sum(restarts)}
        report, extra = drawn[0]
        report = {**report, "selection": record, "selection_seconds": time.perf_counter() - start}
        return self._finish(model, data, chosen["inputs"], seed, {**extra, "selection": record}, report)

    def _finish(self, model: nn.Module, data: Dataset, points: torch.Tensor, seed: int, extra: dict,
                report: dict) -> Protected:
        """The key: ``points`` with the model's own labels, parameters and the null's provenance."""
        with frozen(model), torch.no_grad():
            scores = model(points.to(model_device(model))).cpu()
        if self.null_match_prob is None:
            null = self.default_null
            source = (f"default for {self.name} ({null:g}): a conservative assumption, not a measurement; "
                      "calibrate against independently trained reference models (modelproof.references.calibration)")
        else:
            null, source = self.null_match_prob, f"given by the user when the {self.name} key was made"
        key = OwnershipKey(inputs=points.detach().float().clamp(0.0, 1.0).contiguous(), labels=scores.argmax(1),
                           method=self.name, params={**self.params(), **extra, "dataset": data.name},
                           num_classes=int(getattr(model, "num_classes", scores.shape[1])),
                           input_shape=data.input_shape, null_match_prob=null, null_source=source,
                           model_digest=weights_digest(model))
        return Protected(model, key, report)


@register_protection
class IPGuard(FingerprintBase):
    """IPGuard fingerprint: ``points`` boundary points at logit gap ``k`` from start ``init`` (TR/TL/RR/RL)."""

    name = "ipguard"
    description = "IPGuard: points near the classification boundary (Adam on Eq. 5), labelled by the model"
    # A fixed secret, so that the demo gives the same table every run.
    demo_params: ClassVar[dict] = {"secret": "demo", "points": 30, "k": 1.0, "init": "TL", "max_iter": 200}
    default_null: ClassVar[float] = 0.75

    def __init__(self, points: int = 100, k: float | None = None, init: str = "TL", lr: float | None = None,
                 max_iter: int = 1000, batched: bool = True, null_match_prob: float | None = None,
                 secret: int | str | None = None) -> None:
        super().__init__(points, null_match_prob, secret)
        self.init = check_init(init)
        self.k = None if k is None else check_number("k", k, minimum=0.0)
        self.lr = None if lr is None else check_number("lr", lr, minimum=0.0, strict=True)
        self.max_iter = check_int("max_iter", max_iter, 1)
        if not isinstance(batched, bool):
            raise ConfigError(f"batched must be true or false, got {batched!r}")
        self.batched = batched

    def _draw(self, model: nn.Module, data: Dataset, n: int, gen: torch.Generator, selecting: bool,
              init: str | None = None) -> tuple[torch.Tensor, dict, dict]:
        lr = self.lr if self.lr is not None else learning_rate(data.name)
        k = self.k if self.k is not None else (SELECTED_K if selecting else DEFAULT_K)
        with frozen(model):
            x0, i, j = initial_points(model, data, n, init or self.init, gen)
            start = time.perf_counter()
            search = boundary_search if self.batched else per_point_search
            result = search(model, x0, i, j, k=k, lr=lr, max_iter=self.max_iter)
            seconds = time.perf_counter() - start
            z = model(result.points.to(model_device(model))).cpu()
        zi, zj = z.gather(1, i[:, None]).squeeze(1), z.gather(1, j[:, None]).squeeze(1)
        report = {"seconds": seconds, "lr": lr, "k": k, "iterations_mean": float(result.iterations.float().mean()),
                  "iterations_max": int(result.iterations.max()),
                  "converged": float(result.converged.float().mean()),
                  "gap_mean": float((zj - zi).mean()),
                  "target_label_rate": float((z.argmax(1) == j).float().mean()),
                  "l2_from_start": float((result.points - x0).flatten(1).norm(dim=1).mean())}
        return result.points, report, {"lr": lr, "k": k}
