"""IPGuard's baselines (§5.1.3) on the same Protection interface: Random, FGSM, IGSM and CW-L2.

Every baseline is batched (up to :data:`CHUNK` points at once, each stopping on its own; a larger draw
is made chunk by chunk, so that a selection search of tens of thousands of candidates does not hold
every point's activations and gradients at once: FGSM on the MNIST Keras CNN peaked at 7.9 GB before)
and, like IPGuard,
labels its points with the target model's own predictions. FGSM, IGSM and CW-L2 start from the
same TR/TL/RR/RL initialisations and target label j as IPGuard (:func:`ipguard.initial_points`).

- Random: uniform points of [0,1]^d.
- FGSM (Eq. 1): one step x' = clip(x - eps * sign(grad_x CE(model(x), j))).
- IGSM (Eq. 2): steps of alpha = 1/255 (the smallest image step) against the gradient of CE toward
  j, projected onto the L-infinity ball of radius eps around the start and onto [0,1]; a point
  stops as soon as the model predicts j, or after ``max_iter`` (1,000) steps. A point found back in
  an earlier state is in a cycle that never reaches j: it stops early where ``max_iter`` steps would
  leave it (same points, 5x fewer steps on MNIST LeNet-5 at eps 0.1).
- CW-L2 (Carlini & Wagner 2017), following the authors' ``l2_attack.py``: x = (tanh(w) + 1) / 2,
  minimise ||x - x0||^2 + c * max(max_{t != j} Z_t - Z_j + k, 0) with Adam (reset every outer step),
  binary search over c per point (``binary_steps`` = 9, c starts at 1e-3, x10 until the first
  success), early abort when a point's loss stops falling, keep the smallest-L2 success with
  Z_j - k >= max_{t != j} Z_t. The authors return a zero image for a point that never succeeds;
  we return its start (as cleverhans does) so every fingerprint point is a real image.
"""

from __future__ import annotations

import time
from abc import abstractmethod
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ...data.splits import Dataset
from ...models.devices import model_device
from ...models.training import predict
from ...util.progress import phase, report
from ...util.checks import check_int
from ...util.errors import KeyRefused
from ..base import Protected, register_protection
from ..checkpoint import kept_piece, run_tag
from ..adversarial import targeted_igsm
from ..selection import Selection, budget, left_out, projected_candidates
from .ipguard import FingerprintBase, check_init, check_number, frozen, initial_points

CHUNK = 2048  # starts moved at once; the points do not interact, so the chunking changes no point
# CW-L2's Adam rate (in tanh space): the paper's 0.001 (CIFAR) and 0.1 (ImageNet); on the grey
# datasets the CW authors' own default 0.01, because at 0.001 the many exactly-0 pixels (tanh
# saturated, atanh(-0.999999) = -7.25) cannot move within 1,000 steps: 0% success on MNIST.
CW_LR = {"cifar10": 1e-3, "cifar100": 1e-3, "imagenet": 0.1, "mnist": 1e-2, "fashion-mnist": 1e-2, "digits": 1e-2}


def cw_learning_rate(dataset_name: str) -> float:
    """CW-L2's per-dataset Adam learning rate (see ``CW_LR``; 0.01, the authors' default, otherwise)."""
    return CW_LR.get(dataset_name.split("/")[0].lower(), 1e-2)


def targeted_fgsm(model: nn.Module, x0: torch.Tensor, target: torch.Tensor, eps: float) -> torch.Tensor:
    """One targeted FGSM step of size ``eps`` toward ``target`` (``model`` frozen)."""
    x = x0.detach().clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(F.cross_entropy(model(x), target, reduction="sum"), x)
    return (x0 - eps * grad.sign()).clamp(0.0, 1.0)


def _cw_margin(z: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """max_{t != j} Z_t - Z_j per point."""
    real = z.gather(1, target[:, None]).squeeze(1)
    return z.scatter(1, target[:, None], float("-inf")).max(1).values - real


def cw_l2(model: nn.Module, x0: torch.Tensor, target: torch.Tensor, k: float, *, lr: float = 1e-2,
          binary_steps: int = 9, max_iter: int = 1000, initial_const: float = 1e-3,
          abort_early: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Targeted CW-L2 with confidence ``k`` (batched); returns (points, success mask, final c)."""
    n = len(x0)
    w0 = torch.atanh((x0.detach() * 2 - 1) * 0.999999)
    start = (torch.tanh(w0) + 1) / 2
    dev = x0.device
    lower, upper = torch.zeros(n, device=dev), torch.full((n,), 1e10, device=dev)
    const = torch.full((n,), float(initial_const), device=dev)
    best_l2, best = torch.full((n,), 1e10, device=dev), x0.detach().clone()
    success = torch.zeros(n, dtype=torch.bool, device=dev)
    phase(f"CW-L2 search, {n} point(s)", binary_steps * max_iter)
    for _ in range(binary_steps):
        modifier = torch.zeros_like(w0, requires_grad=True)
        opt = torch.optim.Adam([modifier], lr=lr)
        step_success = torch.zeros(n, dtype=torch.bool, device=dev)
        prev, running = torch.full((n,), float("inf"), device=dev), torch.ones(n, dtype=torch.bool, device=dev)
        for it in range(max_iter):
            report(1, succeeded=int(success.sum()))
            idx = running.nonzero().flatten()  # only the points still running are asked (the others are kept)
            x = (torch.tanh(modifier[idx] + w0[idx]) + 1) / 2
            margin = _cw_margin(model(x), target[idx])
            l2 = (x - start[idx]).flatten(1).pow(2).sum(1)
            loss = l2 + const[idx] * torch.clamp(margin + k, min=0)
            with torch.no_grad():
                ok = margin + k <= 0
                better = ok & (l2 < best_l2[idx])
                best_l2[idx[better]], best[idx[better]] = l2[better], x.detach()[better]
                step_success[idx[ok]] = True
                if abort_early and it % max(max_iter // 10, 1) == 0:  # per point: the authors' batch of 1
                    stop = loss.detach() > prev[idx] * 0.9999
                    running[idx[stop]] = False
                    prev[idx[~stop]] = loss.detach()[~stop]
                if not bool(running.any()):
                    break
                kept = modifier.detach()[~running].clone()
            opt.zero_grad(set_to_none=True)
            loss[running[idx]].sum().backward()
            opt.step()
            with torch.no_grad():
                modifier[~running] = kept
        success |= step_success
        upper = torch.where(step_success, torch.minimum(upper, const), upper)
        lower = torch.where(step_success, lower, torch.maximum(lower, const))
        const = torch.where(upper < 1e9, (lower + upper) / 2, const * 10)
    return best.clamp(0.0, 1.0), success, const


class _Targeted(FingerprintBase):
    """A baseline that starts from IPGuard's initialisations and moves each point toward label j."""

    # Its selection search keeps the chunks of candidates it moved (protections.checkpoint.kept_piece) when
    # given a Resume: IGSM's search on the MNIST Keras CNN takes hours on a CPU.
    resumable: ClassVar[bool] = True

    def __init__(self, points: int, init: str, null_match_prob: float | None, secret: int | str | None) -> None:
        super().__init__(points, null_match_prob, secret)
        self.init = check_init(init)

    @abstractmethod
    def _run(self, model: nn.Module, x0: torch.Tensor, j: torch.Tensor,
             data: Dataset) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Move the starts ``x0`` toward labels ``j``; return the points and per-point values (one row each)."""

    def _summary(self, per_point: dict[str, torch.Tensor], data: Dataset) -> dict:
        """Report entries from the per-point values of a whole draw."""
        return {}

    def _draw(self, model: nn.Module, data: Dataset, n: int, gen: torch.Generator, selecting: bool,
              init: str | None = None) -> tuple[torch.Tensor, dict, dict]:
        with frozen(model):
            x0, _, j = initial_points(model, data, n, init or self.init, gen)
            start = time.perf_counter()
            device = model_device(model)  # the search runs on the model's device, the key is kept on the CPU
            parts, values = [], []
            resume = self.resume  # with one, an interrupted search goes on from the chunks it kept
            run = None if resume is None else run_tag(
                {"method": self.name, "params": self.params(), "data": data.name, "device": device.type},
                model.state_dict().values())
            for at in range(0, len(x0), CHUNK):
                x, t = x0[at:at + CHUNK], j[at:at + CHUNK]

                def move(x: torch.Tensor = x, t: torch.Tensor = t) -> dict[str, torch.Tensor]:
                    moved, per_point = self._run(model, x.to(device), t.to(device), data)
                    return {"points": moved.cpu(), **{f"value.{k}": v.cpu() for k, v in per_point.items()}}

                piece = kept_piece(resume, self.name, run and run_tag({"run": run}, (x, t)), move)
                parts.append(piece.pop("points"))
                values.append({k[len("value."):]: v for k, v in piece.items()})
            points = torch.cat(parts) if parts else x0.clone()
            report = self._summary({name: torch.cat([v[name] for v in values]) for name in values[0]}
                                   if values else {}, data)
            seconds = time.perf_counter() - start
            hit = float((predict(model, points) == j).float().mean())
        report.update(seconds=seconds, target_label_rate=hit,
                      l2_from_start=float((points - x0).flatten(1).norm(dim=1).mean()))
        return points, report, report.pop("extra", {})


@register_protection
class RandomFingerprint(FingerprintBase):
    """Uniform random points of [0,1]^d labelled by the model (IPGuard's Random baseline)."""

    name = "random-fingerprint"
    description = "IPGuard baseline Random: uniform points in [0,1]^d labelled by the model"
    default_null: ClassVar[float] = 0.95
    # Uniform points are answered alike by nearly every model: on the digits about 1 in 100 survives
    # 6 judges, 1 in 600 survives 24.
    oversample: ClassVar[int] = 256

    def __init__(self, points: int = 100, null_match_prob: float | None = None,
                 secret: int | str | None = None) -> None:
        super().__init__(points, null_match_prob, secret)

    def _draw(self, model: nn.Module, data: Dataset, n: int, gen: torch.Generator, selecting: bool,
              init: str | None = None) -> tuple[torch.Tensor, dict, dict]:
        start = time.perf_counter()
        points = torch.rand((n, *data.input_shape), generator=gen)
        return points, {"seconds": time.perf_counter() - start}, {}

    def _select(self, model: nn.Module, data: Dataset, seed: int, selection: Selection) -> Protected:
        """The search of :meth:`FingerprintBase._select`, after a pilot that refuses at once a key that
        could not prove its model (:func:`random_pilot`)."""
        random_pilot(self, model, data, selection)
        return super()._select(model, data, seed, selection)


# The pilot's size: uniform points drawn once, answered by the model and every judge (seconds, where the
# search would draw oversample x the key, 25,600 points, up to four times).
PILOT_POINTS = 4096


def random_pilot(protection: "RandomFingerprint", model: nn.Module, data: Dataset, selection: Selection) -> None:
    """Raise KeyRefused at once when a pilot of uniform points shows that no random key can prove its model.

    The paper's Random baseline (IPGuard §5.1.3: "randomly samples a data point from the data domain",
    for images uniformly from [0,1]^d as in its R initialisation) has no parameter to move: uniform noise
    is answered by each model's own bias (the digits MLP answers "7" to 95% of it), so the points no
    judge answers like the owner are those whose label is the owner's bias, and an independent model
    with the same bias matches nearly all of them. Two measurements on :data:`PILOT_POINTS` points, each
    the one the search and the self-check would make later, minutes apart:

    * the yield: the points no judge answers like the model; when even its 99% upper bound projects
      more candidates than the selection budget (:func:`selection.budget`), the search would refuse;
    * each judge left out in turn (:func:`selection.left_out`) stands for a calibration reference: its
      match rate on the points the other judges leave, scaled to the key, bounded as calibration bounds
      a key's null; when a model matching all ``points`` inputs could not prove itself against that
      bound at the self-check's alpha (``selection.provable``, set by the references layer:
      ``references.advice.full_match_proves``; without it this part is skipped), the self-check would
      refuse.
    """
    need = protection.points
    pilot = torch.rand((PILOT_POINTS, *data.input_shape), generator=protection.gen("select/pilot"))
    labels = predict(model, pilot)
    survived = int(selection.unanswered(pilot, labels).sum())
    factor = selection.factor(protection.oversample)
    limit = budget(need, factor)
    share = float(torch.bincount(labels).max()) / PILOT_POINTS
    head = (f"{protection.name}: a pilot of {PILOT_POINTS:,} uniform points (the model gives one label to "
            f"{share:.0%} of them): {survived} answered by none of the {len(selection.judges)} selection references "
            "like the model")
    tail = ("; uniform noise is answered by each model's own bias and the paper's Random baseline has no "
            "parameter to change that (docs/methods/key-selection.md); use ipguard or another fingerprint")
    projected = projected_candidates(survived, PILOT_POINTS, need)
    if projected > limit:
        raise KeyRefused(f"{head}, so a {need}-point key would take about {projected:,.0f} candidates even at the "
                         f"optimistic 99% bound on that yield, over the selection budget of {limit:,}" + tail)
    if selection.provable is None:
        return  # nothing to foresee calibration with: let the search and the self-check decide
    rows = left_out(selection, pilot, labels)
    counts = [round(need * matches / points) for _, matches, points in rows]
    null, proves = selection.provable(counts, need, selection.alpha)
    if not proves:
        shown = ", ".join(f"{c}" for c in sorted(counts, reverse=True))
        raise KeyRefused(
            f"{head}; each reference left out in turn matched the points the others leave at rates giving "
            f"{shown} of {need}, which bounds the "
            f"null at {null:.3g}: even a protected model matching all {need} key inputs could not prove itself "
            f"at alpha {selection.alpha:g}, so the self-check would refuse the key after the search" + tail)


@register_protection
class FGSMFingerprint(_Targeted):
    """Targeted FGSM adversarial examples with noise bound ``eps`` (IPGuard's FGSM baseline)."""

    name = "fgsm-fingerprint"
    description = "IPGuard baseline FGSM: one targeted signed-gradient step of size eps, labelled by the model"
    default_null: ClassVar[float] = 0.99
    # One signed step is answered alike by most models: 24 judges on the digits leave about 1 in 70.
    oversample: ClassVar[int] = 32
    # In the demo with its defaults (a 100-point key in about 5 s on the digits MLP); a fixed secret, as
    # every demo method has, so that its table is the same every run
    demo_params: ClassVar[dict] = {"secret": "demo"}

    def __init__(self, points: int = 100, eps: float = 0.1, init: str = "TL",
                 null_match_prob: float | None = None, secret: int | str | None = None) -> None:
        super().__init__(points, init, null_match_prob, secret)
        self.eps = check_number("eps", eps, minimum=0.0, strict=True, maximum=1.0)

    def _run(self, model: nn.Module, x0: torch.Tensor, j: torch.Tensor,
             data: Dataset) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return targeted_fgsm(model, x0, j, self.eps), {}


@register_protection
class IGSMFingerprint(_Targeted):
    """Targeted IGSM (alpha = 1/255, L-infinity bound ``eps``) adversarial examples (IPGuard's IGSM)."""

    name = "igsm-fingerprint"
    description = "IPGuard baseline IGSM: targeted steps of 1/255 within an eps ball until the target label"
    default_null: ClassVar[float] = 0.99
    demo_params: ClassVar[dict] = {"secret": "demo"}  # in the demo with its defaults (about 7 s on the digits MLP)

    def __init__(self, points: int = 100, eps: float = 0.1, init: str = "TL", max_iter: int = 1000,
                 null_match_prob: float | None = None, secret: int | str | None = None) -> None:
        super().__init__(points, init, null_match_prob, secret)
        self.eps = check_number("eps", eps, minimum=0.0, strict=True, maximum=1.0)
        self.max_iter = check_int("max_iter", max_iter, 1)

    def _run(self, model: nn.Module, x0: torch.Tensor, j: torch.Tensor,
             data: Dataset) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        points, steps = targeted_igsm(model, x0, j, self.eps, max_iter=self.max_iter)
        return points, {"iterations": steps}

    def _summary(self, per_point: dict[str, torch.Tensor], data: Dataset) -> dict:
        steps = per_point["iterations"]
        return {"iterations_mean": float(steps.float().mean()), "iterations_max": int(steps.max())} if len(steps) else {}


@register_protection
class CWL2Fingerprint(_Targeted):
    """Targeted CW-L2 adversarial examples with confidence ``k`` (IPGuard's CW-L2 baseline)."""

    name = "cw-l2-fingerprint"
    description = "IPGuard baseline CW-L2: smallest-L2 targeted examples with confidence k (tanh space, binary search)"
    default_null: ClassVar[float] = 0.75
    # A candidate costs up to 9,000 Adam steps, and only the first draw is sized by this factor (later
    # ones by the measured yield), so it starts small: on MNIST LeNet-5 1,178 of a first draw of 1,600
    # survived the 24 judges (52 minutes on one core) for a key of 100, which a first draw of 400 fills in
    # a quarter of the time; where few survive (1 in 119 on the digits MLP) the search grows by the yield.
    oversample: ClassVar[int] = 4

    def __init__(self, points: int = 100, k: float = 3.0, init: str = "TL", lr: float | None = None,
                 binary_steps: int = 9, max_iter: int = 1000, initial_const: float = 1e-3,
                 null_match_prob: float | None = None, secret: int | str | None = None) -> None:
        super().__init__(points, init, null_match_prob, secret)
        self.k = check_number("k", k, minimum=0.0)
        self.lr = None if lr is None else check_number("lr", lr, minimum=0.0, strict=True)
        self.binary_steps = check_int("binary_steps", binary_steps, 1)
        self.max_iter = check_int("max_iter", max_iter, 1)
        self.initial_const = check_number("initial_const", initial_const, minimum=0.0, strict=True)

    def _lr(self, data: Dataset) -> float:
        return self.lr if self.lr is not None else cw_learning_rate(data.name)

    def _run(self, model: nn.Module, x0: torch.Tensor, j: torch.Tensor,
             data: Dataset) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        points, ok, const = cw_l2(model, x0, j, self.k, lr=self._lr(data), binary_steps=self.binary_steps,
                                  max_iter=self.max_iter, initial_const=self.initial_const)
        return points, {"success": ok, "const": const}

    def _summary(self, per_point: dict[str, torch.Tensor], data: Dataset) -> dict:
        lr = self._lr(data)
        if not len(per_point.get("success", ())):
            return {"lr": lr, "extra": {"lr": lr}}
        return {"lr": lr, "success": float(per_point["success"].float().mean()),
                "const_median": float(per_point["const"].median()), "extra": {"lr": lr}}
