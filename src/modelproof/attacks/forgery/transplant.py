"""Forgeries from intercepted key inputs (Li et al. 2019, §3.2 and §6.4): pattern reuse and difference images.

The counterfeiter has seen a few of the owner's key inputs on the wire, without their labels, and
holds clean images of its own (the attacker split). For each intercepted input it estimates the
clean image it was made from as the *nearest* of its own images (L2; it never has the owner's
source, so this estimate is another image of the same look), and the residue ``k - s`` as what
the watermark added.

- **pattern reuse** (§6.4: "we apply the same logo 'TEST' to other samples ... higher than 91%"):
  the visible pattern is estimated once and applied to new clean images. ``estimate="mean"``: the
  mean residue over the intercepted inputs (a fixed additive pattern such as Zhang et al.'s noise
  survives the averaging, the digit residues average out); ``"mask"``: the pixels each
  intercepted input has saturated (>= 0.99) where its estimated source is not, pasted onto the
  new images (Zhang et al.'s white blocks or a logo); ``"auto"`` picks ``mask`` when most
  of the added mass sits in saturated pixels, else ``mean``.
- **difference images** (§6.4, for encoder-made key samples): each intercepted residue is added
  as it is to other clean images, ``clip(c + (k - s))``.

Labels (what an interceptor can learn by asking): one target, Zhang et al.'s key layout. Pattern
reuse asks ``label_queries`` forged inputs and takes the majority answer. Difference images ask
the intercepted inputs themselves, take the majority answer, and reuse only the residues of the
key inputs answered with it: per-sample labels (each residue with its own key input's answer)
would be no evidence, because a residue from the *nearest* own image (not the owner's source)
still carries a ghost of the key input's own digit, which any model reads (on the digits, an
unprotected model was "claimed" by such keys every time). Forged inputs are made from own images
of other classes than the target. The null is Zhang's single-target floor ``null_floor`` (0.5):
the counterfeiter has no unprotected model to probe.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import ClassVar

import torch

from ...util.checks import check_int
from ...util.errors import ConfigError
from ...keys.key import OwnershipKey
from ..base import Param, check_choice, check_rate
from .base import KEY_SIZE, Counterfeiter, Forgery, majority_label

ESTIMATES = ("auto", "mean", "mask")
NULL_FLOOR = Param("null_floor", "float", "null match probability claimed (Zhang's single-target floor)")
SATURATED = 0.99


def nearest_sources(intercepted: torch.Tensor, images: torch.Tensor, chunk: int = 256) -> torch.Tensor:
    """For each intercepted input, the nearest (L2) of ``images``: the estimate of its clean source."""
    flat = intercepted.flatten(1)
    best = torch.empty(len(flat), dtype=torch.int64)
    dist = torch.full((len(flat),), float("inf"))
    for start in range(0, len(images), chunk):
        d = torch.cdist(flat, images[start:start + chunk].flatten(1))
        value, idx = d.min(dim=1)
        better = value < dist
        dist[better], best[better] = value[better], idx[better] + start
    return images[best]


def saturated_masks(intercepted: torch.Tensor, sources: torch.Tensor) -> torch.Tensor:
    """Per input: pixels saturated in the key input but not in its estimated source (what was stamped)."""
    return (intercepted >= SATURATED) & (sources < SATURATED)


class TransplantForgery(Forgery):
    """Shared: nearest sources, own images of other classes than the labels, the key."""

    access = "intercepted"

    def __init__(self, key_size: int = 30, null_floor: float = 0.5) -> None:
        self.key_size = check_int("key_size", key_size, 1)
        self.null_floor = float(check_rate("null_floor", null_floor))

    @abstractmethod
    def target_and_inputs(self, work: Counterfeiter, order: torch.Tensor,
                          sources: torch.Tensor) -> tuple[int, torch.Tensor]:
        """The forged target and ``key_size`` inputs, made from own images taken in ``order``."""

    def _forge(self, work: Counterfeiter) -> OwnershipKey:
        assert work.intercepted is not None
        sources = nearest_sources(work.intercepted, work.data.images)
        order = torch.randperm(len(work.data), generator=work.generator("images"))
        target, inputs = self.target_and_inputs(work, order, sources)
        work.details.update(intercepted=len(work.intercepted))
        source = (f"floor {self.null_floor:g} of a single-target trigger key (Zhang et al.'s rule; the "
                  "counterfeiter has no unprotected model to probe)")
        return self.key(work, inputs, torch.full((len(inputs),), target), null=self.null_floor, null_source=source)


def other_class(order: torch.Tensor, true: torch.Tensor, target: int, n: int) -> torch.Tensor:
    """The first ``n`` images in ``order`` whose true class is not ``target``."""
    picks = order[true[order] != target][:n]
    if len(picks) < n:
        raise ConfigError(f"the counterfeiter's data has only {len(picks)} images outside class {target}; need {n}")
    return picks


class PatternReuse(TransplantForgery):
    """Estimate the visible pattern from intercepted key inputs and stamp it on new clean images."""

    name = "forge-pattern-reuse"
    description = ("Li et al. 6.4: estimate the watermark pattern from intercepted key inputs (mean residue or "
                   "saturated mask) and apply it to new images; target from a few queries")
    imitates = "zhang (single target, null floor 0.5)"
    PARAMS: ClassVar[tuple[Param, ...]] = (
        KEY_SIZE,
        Param("label_queries", "int", "queries to learn the target label"),
        Param("estimate", "str", "auto, mean (additive pattern) or mask (saturated pixels)"),
        NULL_FLOOR,
    )

    def __init__(self, key_size: int = 30, label_queries: int = 5, estimate: str = "auto",
                 null_floor: float = 0.5) -> None:
        super().__init__(key_size, null_floor)
        self.label_queries = check_int("label_queries", label_queries, 1)
        self.estimate = check_choice("estimate", estimate, ESTIMATES)

    def chosen_estimate(self, intercepted: torch.Tensor, sources: torch.Tensor) -> str:
        """``mask`` when most of the added mass lies in stamped (saturated) pixels, else ``mean``."""
        if self.estimate != "auto":
            return self.estimate
        added = (intercepted - sources).clamp(min=0)
        stamped = (added * saturated_masks(intercepted, sources)).sum()
        return "mask" if float(stamped) > 0.5 * float(added.sum()) else "mean"

    def stamp(self, clean: torch.Tensor, intercepted: torch.Tensor, sources: torch.Tensor, mode: str) -> torch.Tensor:
        """``clean`` images with the estimated pattern applied."""
        if mode == "mean":
            return (clean + (intercepted - sources).mean(dim=0, keepdim=True)).clamp(0.0, 1.0)
        pick = torch.arange(len(clean)) % len(intercepted)
        return torch.where(saturated_masks(intercepted, sources)[pick], intercepted[pick], clean)

    def target_and_inputs(self, work: Counterfeiter, order: torch.Tensor,
                          sources: torch.Tensor) -> tuple[int, torch.Tensor]:
        intercepted, images = work.intercepted, work.data.images
        assert intercepted is not None
        mode = self.chosen_estimate(intercepted, sources)
        probes = self.stamp(images[order[:self.label_queries]], intercepted, sources, mode)
        target = majority_label(work.ask(probes))
        picks = other_class(order[self.label_queries:], work.data.labels, target, self.key_size)
        work.details.update(estimate=mode, target_queries=self.label_queries)
        return target, self.stamp(images[picks], intercepted, sources, mode)


class DifferenceImages(TransplantForgery):
    """Add each intercepted key input's difference from its estimated source to other clean images."""

    name = "forge-difference"
    description = ("Li et al. 6.4: add intercepted key samples' differences from their nearest clean images to "
                   "other images; target: the majority answer to the intercepted inputs")
    imitates = "zhang (single target, null floor 0.5)"
    PARAMS: ClassVar[tuple[Param, ...]] = (
        KEY_SIZE,
        NULL_FLOOR,
    )

    def target_and_inputs(self, work: Counterfeiter, order: torch.Tensor,
                          sources: torch.Tensor) -> tuple[int, torch.Tensor]:
        intercepted = work.intercepted
        assert intercepted is not None
        answers = work.ask(intercepted)
        target = majority_label(answers)
        residues = (intercepted - sources)[answers == target]
        picks = other_class(order, work.data.labels, target, self.key_size)
        work.details.update(residues=len(residues))
        inputs = work.data.images[picks] + residues[torch.arange(self.key_size) % len(residues)]
        return target, inputs.clamp(0.0, 1.0)
