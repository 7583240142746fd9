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

Labels: the counterfeiter asks the suspect ``label_queries`` forged inputs and takes the majority
answer as the target (what an interceptor can learn); the key's inputs are then made from its
images of other classes, as Zhang et al.'s are. The null follows Zhang et al.'s single-target
rule without an unprotected model to probe: the floor 0.5 (``null_floor``).
"""

from __future__ import annotations

from abc import abstractmethod
from typing import ClassVar

import torch

from ...checks import check_int
from ...keys import OwnershipKey
from ..base import Param, check_choice, check_rate
from .base import Counterfeiter, Forgery, majority_label

ESTIMATES = ("auto", "mean", "mask")
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
    """Shared: nearest sources, the target from a few queries, the key from the counterfeiter's images."""

    access = "intercepted"
    imitates = "zhang (single target, null floor 0.5)"

    def __init__(self, key_size: int = 30, label_queries: int = 5, null_floor: float = 0.5) -> None:
        self.key_size = check_int("key_size", key_size, 1)
        self.label_queries = check_int("label_queries", label_queries, 1)
        self.null_floor = float(check_rate("null_floor", null_floor))

    @abstractmethod
    def transplant(self, work: Counterfeiter, clean: torch.Tensor, intercepted: torch.Tensor,
                   sources: torch.Tensor) -> torch.Tensor:
        """Forged inputs made from ``clean`` images (one per image)."""

    def _forge(self, work: Counterfeiter) -> OwnershipKey:
        data, intercepted = work.data, work.intercepted
        assert intercepted is not None
        sources = nearest_sources(intercepted, data.images)
        order = torch.randperm(len(data), generator=work.generator("images"))
        probes = order[:self.label_queries]
        target = majority_label(work.ask(self.transplant(work, data.images[probes], intercepted, sources)))
        rest = order[self.label_queries:]
        pool = rest[data.labels[rest] != target][:self.key_size]
        inputs = self.transplant(work, data.images[pool], intercepted, sources)
        work.details.update(target_queries=self.label_queries, intercepted=len(intercepted))
        source = (f"floor {self.null_floor:g} of a single-target trigger key (Zhang et al.'s rule; the "
                  "counterfeiter has no unprotected model to probe)")
        return self.key(work, inputs, torch.full((len(inputs),), target), null=self.null_floor, null_source=source)


class PatternReuse(TransplantForgery):
    """Estimate the visible pattern from intercepted key inputs and stamp it on new clean images."""

    name = "forge-pattern-reuse"
    description = ("Li et al. 6.4: estimate the watermark pattern from intercepted key inputs (mean residue or "
                   "saturated mask) and apply it to new images; target from a few queries")
    PARAMS: ClassVar[tuple[Param, ...]] = (
        Param("key_size", "int", "forged key inputs"),
        Param("label_queries", "int", "queries to learn the target label"),
        Param("estimate", "str", "auto, mean (additive pattern) or mask (saturated pixels)"),
        Param("null_floor", "float", "null match probability claimed (Zhang's single-target floor)"),
    )

    def __init__(self, key_size: int = 30, label_queries: int = 5, estimate: str = "auto",
                 null_floor: float = 0.5) -> None:
        super().__init__(key_size, label_queries, null_floor)
        self.estimate = check_choice("estimate", estimate, ESTIMATES)

    def chosen_estimate(self, intercepted: torch.Tensor, sources: torch.Tensor) -> str:
        """``mask`` when most of the added mass lies in stamped (saturated) pixels, else ``mean``."""
        if self.estimate != "auto":
            return self.estimate
        added = (intercepted - sources).clamp(min=0)
        stamped = (added * saturated_masks(intercepted, sources)).sum()
        return "mask" if float(stamped) > 0.5 * float(added.sum()) else "mean"

    def transplant(self, work: Counterfeiter, clean: torch.Tensor, intercepted: torch.Tensor,
                   sources: torch.Tensor) -> torch.Tensor:
        mode = self.chosen_estimate(intercepted, sources)
        work.details["estimate"] = mode
        if mode == "mean":
            return (clean + (intercepted - sources).mean(dim=0, keepdim=True)).clamp(0.0, 1.0)
        masks = saturated_masks(intercepted, sources)
        pick = torch.arange(len(clean)) % len(intercepted)
        return torch.where(masks[pick], intercepted[pick], clean)


class DifferenceImages(TransplantForgery):
    """Add each intercepted key input's difference from its estimated source to other clean images."""

    name = "forge-difference"
    description = ("Li et al. 6.4: add intercepted key samples' differences from their nearest clean images to "
                   "other images; target from a few queries")
    PARAMS: ClassVar[tuple[Param, ...]] = (
        Param("key_size", "int", "forged key inputs"),
        Param("label_queries", "int", "queries to learn the target label"),
        Param("null_floor", "float", "null match probability claimed (Zhang's single-target floor)"),
    )

    def transplant(self, work: Counterfeiter, clean: torch.Tensor, intercepted: torch.Tensor,
                   sources: torch.Tensor) -> torch.Tensor:
        pick = torch.arange(len(clean)) % len(intercepted)
        return (clean + (intercepted - sources)[pick]).clamp(0.0, 1.0)
