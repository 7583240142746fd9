"""Reference-aware key selection: the judges a protection chooses its key against.

A protection draws more key candidates than it needs and keeps those its protected model answers
with the key label and no *selection* reference does (Lukas et al., ICLR 2021, choose fingerprints
against independent models; IrisFP, CVPR 2026, calibrates on a different set). The references
that judge the candidates are never used to calibrate the key's null: the population records which
models selected which key, and calibration refuses them (``modelproof.references``).

:class:`Selection` is what the pipeline hands to ``Protection.protect``: the judges (each a Suspect
answering labels, with its weight digest and, when it is a local torch model, the module for
gradient-based methods) and the oversampling factor (None: the method's measured default).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from ..util.errors import ConfigError


@dataclass(frozen=True)
class Judge:
    """One selection reference: a name for reports, its weight digest (None when unknown), a suspect
    with ``predict(images) -> labels`` and, for local torch models, the module itself."""

    name: str
    digest: str | None
    suspect: object
    model: nn.Module | None = field(default=None, repr=False, compare=False)

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        return torch.as_tensor(self.suspect.predict(images)).long().cpu()


@dataclass(frozen=True)
class Selection:
    """The judges a key is chosen against and how many candidates to draw per key input."""

    judges: tuple[Judge, ...]
    oversample: int | None = None

    def __post_init__(self) -> None:
        if not self.judges:
            raise ConfigError("key selection needs at least one selection reference")
        if self.oversample is not None and (isinstance(self.oversample, bool) or int(self.oversample) < 1):
            raise ConfigError(f"--oversample must be an integer of at least 1, got {self.oversample!r}")

    def answers(self, inputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """How many judges answer each input with its label: an int64 tensor of shape (N,)."""
        labels = torch.as_tensor(labels).long().cpu()
        if inputs.shape[0] != labels.shape[0]:
            raise ValueError(f"{inputs.shape[0]} inputs but {labels.shape[0]} labels")
        count = torch.zeros(labels.shape[0], dtype=torch.long)
        for judge in self.judges:
            count += (judge.predict(inputs) == labels).long()
        return count

    def unanswered(self, inputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """A boolean mask: True where no judge answers the input with its label."""
        return self.answers(inputs, labels) == 0

    def record(self, rule: str, tried: int, kept: int) -> dict:
        """What a key records of its selection: the rule, candidates tried and kept, the judges' digests."""
        return {"rule": rule, "tried": int(tried), "kept": int(kept),
                "references": [j.digest for j in self.judges if j.digest is not None]}
