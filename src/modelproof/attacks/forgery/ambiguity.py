"""Ambiguity forgeries: inputs that the model answers with labels the counterfeiter chose.

With a copy of the model (white box) the counterfeiter can make any model "prove" to be its own:

- ``forge-adversarial``: targeted IGSM adversarial examples (``protections.adversarial.targeted_igsm``:
  steps of 1/255 inside an L-infinity ball of ``eps``) of the counterfeiter's own images, toward
  labels drawn from its seed among the classes the model does not give the clean image; only
  inputs that reach their label are kept. It presents them as an Adi-style key (labels chosen at
  random, never the model's clean answer), whose null is 1/(C-1).
- ``forge-boundary``: an IPGuard fingerprint made with the counterfeiter's own seed and data
  (``fingerprints.ipguard``, the paper's Eq. 5), with IPGuard's default null.

Only answers are needed for ``forge-boundary-blackbox``: for each point it picks a label ``b``,
an own image ``x_b`` the suspect labels ``b`` and one ``x_a`` it labels otherwise, and bisects the
segment between them (``steps`` halvings, all points batched, every query counted) for the point
nearest ``x_a`` that the suspect still labels ``b``. The key is those points with label ``b``,
presented as boundary points with IPGuard's default null. (A decision-based boundary search in
the manner of Brendel et al.'s boundary attack, reduced to its first stage; our choice.)

The copy verifies "owned" against any of these keys, protected or not: only a commitment made
before the dispute (``modelproof.keys.commitments``) tells the counterfeiter from the owner.
"""

from __future__ import annotations

from typing import ClassVar

import torch

from ...util.checks import check_int
from ...util.errors import ConfigError
from ...protections.adversarial import targeted_igsm
from ...protections.fingerprints.ipguard import IPGuard, frozen, learning_rate
from ...keys.key import OwnershipKey
from ...models.devices import model_device
from ..base import Param, check_positive, check_rate
from .base import KEY_SIZE, Counterfeiter, Forgery


class AdversarialAmbiguity(Forgery):
    """White box: targeted adversarial examples labelled with the counterfeiter's chosen labels."""

    name = "forge-adversarial"
    description = "ambiguity (white box): targeted IGSM examples of own images, labels chosen by the counterfeiter"
    access = "white-box"
    imitates = "adi (random labels, null 1/(C-1))"
    PARAMS: ClassVar[tuple[Param, ...]] = (
        KEY_SIZE,
        Param("eps", "float", "L-infinity bound of the perturbation"),
        Param("max_iter", "int", "IGSM steps of 1/255 at most"),
    )

    def __init__(self, key_size: int = 30, eps: float = 0.25, max_iter: int = 200) -> None:
        self.key_size = check_int("key_size", key_size, 1)
        self.eps = float(check_rate("eps", eps))
        self.max_iter = check_int("max_iter", max_iter, 1)

    def _forge(self, work: Counterfeiter) -> OwnershipKey:
        model, data = work.model, work.data
        assert model is not None
        gen = work.generator("adversarial")
        n = min(len(data), 3 * self.key_size)  # spare candidates: some do not reach their label within eps
        x0 = data.images[torch.randperm(len(data), generator=gen)[:n]]
        clean = work.ask(x0)
        c = int(work.suspect.num_classes)
        chosen = (clean + 1 + torch.randint(c - 1, (n,), generator=gen)) % c
        with frozen(model):  # searched on the copy's device, kept on the CPU
            device = model_device(model)
            points, _ = targeted_igsm(model, x0.to(device), chosen.to(device), self.eps, max_iter=self.max_iter)
            points = points.cpu()
        hit = (work.ask(points) == chosen).nonzero().flatten()[:self.key_size]
        work.details.update(candidates=n, reached=int(len(hit)))
        source = (f"1/(C-1) = 1/{c - 1}, as an Adi et al. key whose labels are drawn uniformly from the classes "
                  "the model does not answer (the counterfeiter's claim)")
        return self.key(work, points[hit], chosen[hit], null=1.0 / (c - 1), null_source=source)


class BoundaryAmbiguity(Forgery):
    """White box: an IPGuard fingerprint of the copy, made with the counterfeiter's own seed and data."""

    name = "forge-boundary"
    description = "ambiguity (white box): IPGuard boundary points of the copy with the counterfeiter's own seed"
    access = "white-box"
    imitates = "ipguard (default null)"
    PARAMS: ClassVar[tuple[Param, ...]] = (
        KEY_SIZE,
        Param("k", "float", "logit gap past the boundary (Eq. 5)"),
        Param("max_iter", "int", "Adam steps at most"),
    )

    def __init__(self, key_size: int = 30, k: float = 1.0, max_iter: int = 300) -> None:
        self.key_size = check_int("key_size", key_size, 1)
        self.k = float(check_positive("k", k))
        self.max_iter = check_int("max_iter", max_iter, 1)

    def _forge(self, work: Counterfeiter) -> OwnershipKey:
        assert work.model is not None
        seed = int(torch.randint(0, 2 ** 31 - 1, (1,), generator=work.generator("ipguard")))
        fingerprint = IPGuard(points=self.key_size, k=self.k, init="TL", lr=learning_rate(work.data.name),
                              max_iter=self.max_iter, secret=f"counterfeiter-{seed}")  # its points: from its seed
        made = fingerprint.protect(work.model, work.data, seed=seed).key
        work.details.update(ipguard_seed=seed)
        return self.key(work, made.inputs, made.labels, null=made.null_match_prob, null_source=made.null_source)


class BlackBoxBoundary(Forgery):
    """Queries only: bisect between own images of two labels to points just on the chosen label's side."""

    name = "forge-boundary-blackbox"
    description = "ambiguity (black box): bisect own image pairs to points just inside a chosen label, by queries"
    access = "queries"
    imitates = "ipguard (default null)"
    PARAMS: ClassVar[tuple[Param, ...]] = (
        KEY_SIZE,
        Param("steps", "int", "bisection steps per point (each one query)"),
        Param("null_match_prob", "float", "null claimed (IPGuard's default 0.75)"),
    )

    def __init__(self, key_size: int = 30, steps: int = 10, null_match_prob: float = 0.75) -> None:
        self.key_size = check_int("key_size", key_size, 1)
        self.steps = check_int("steps", steps, 1)
        self.null_match_prob = float(check_rate("null_match_prob", null_match_prob))

    def _forge(self, work: Counterfeiter) -> OwnershipKey:
        data, gen = work.data, work.generator("pairs")
        pool = data.images[torch.randperm(len(data), generator=gen)[:min(len(data), 10 * self.key_size)]]
        answers = work.ask(pool)
        classes = torch.unique(answers)
        if len(classes) < 2:
            raise ConfigError("the suspect gives one label to all the counterfeiter's images; no boundary to find")
        b = classes[torch.randint(len(classes), (self.key_size,), generator=gen)]
        ib = torch.stack([_pick(answers == bi, gen) for bi in b])
        ia = torch.stack([_pick(answers != bi, gen) for bi in b])
        xa, xb = pool[ia], pool[ib]
        lo, hi = torch.zeros(self.key_size), torch.ones(self.key_size)  # suspect says b at hi, not at lo
        for _ in range(self.steps):
            mid = (lo + hi) / 2
            inside = work.ask(_between(xa, xb, mid)) == b
            hi, lo = torch.where(inside, mid, hi), torch.where(inside, lo, mid)
        points = _between(xa, xb, hi)
        keep = _first_of_each((work.ask(points) == b).nonzero().flatten(), points)
        work.details.update(pool=len(pool), kept=int(len(keep)), bisection_steps=self.steps)
        source = (f"IPGuard's default {self.null_match_prob:g} for boundary points (a conservative assumption, not "
                  "a measurement: the counterfeiter's claim)")
        return self.key(work, points[keep], b[keep], null=self.null_match_prob, null_source=source)


def _first_of_each(indices: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """``indices`` without those whose point repeats an earlier one (two draws of the same image pair, or a
    bisection that never left ``x_b``, give the same point twice: a key's inputs must be distinct trials)."""
    seen: set[bytes] = set()
    out = []
    for i in indices.tolist():
        raw = points[i].numpy().tobytes()
        if raw not in seen:
            seen.add(raw)
            out.append(i)
    return torch.tensor(out, dtype=torch.long)


def _pick(mask: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    idx = mask.nonzero().flatten()
    return idx[torch.randint(len(idx), (1,), generator=gen)][0]


def _between(xa: torch.Tensor, xb: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    w = t.view(-1, 1, 1, 1)
    return ((1 - w) * xa + w * xb).clamp(0.0, 1.0)
