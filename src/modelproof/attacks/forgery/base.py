"""The Forgery noun: a counterfeiter who makes an OwnershipKey of its own for a model that is not its own.

``forge(model_or_suspect, attacker_data, intercepted=None, *, seed) -> OwnershipKey`` is the one
public entry point (:meth:`Forgery.perform` also returns the cost). It checks what the forgery's
threat model grants (``access``):

- ``"white-box"``: a copy of the model (a torch module): a buyer or an insider;
- ``"queries"``: only answers of the suspect to inputs of the counterfeiter's choosing;
- ``"intercepted"``: queries, plus a few of the owner's key inputs seen on the wire, *without*
  their labels (an image tensor; an OwnershipKey is refused, since it holds the labels).

The counterfeiter's data is the attacker split only; it never sees the owner's key or data. Every
query to the model goes through one ``suspects.QueriedSuspect``, which counts it. The forged key
carries the null match probability that the method it imitates would give (``null_source`` says
which), so that verifying it measures exactly whether a false claim would be upheld.
"""

from __future__ import annotations

import copy
import hashlib
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from ...data.splits import Dataset
from ...util.errors import ConfigError
from ...keys.key import OwnershipKey
from ...models.modelfile import weights_digest
from ..base import Param, declared_params

ACCESS = ("white-box", "queries", "intercepted")
KEY_SIZE = Param("key_size", "int", "forged key inputs")


@dataclass(frozen=True)
class ForgeryOutcome:
    """What one forgery produced: the forged key, the queries it asked, its wall time and details."""

    key: OwnershipKey
    queries: int
    seconds: float
    details: dict = field(default_factory=dict)


@dataclass
class Counterfeiter:
    """What a forgery's ``_forge`` may use: the counting suspect, the module (white-box only), the data."""

    suspect: Any                # suspects.QueriedSuspect: every query is counted
    model: nn.Module | None     # a private copy, white-box forgeries only
    data: Dataset
    intercepted: torch.Tensor | None
    seed: int
    details: dict = field(default_factory=dict)

    def generator(self, purpose: str) -> torch.Generator:
        """A generator for ``purpose`` from the counterfeiter's seed (never the global RNG)."""
        digest = hashlib.sha256(f"modelproof-forgery/{self.seed}/{purpose}".encode()).digest()
        return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & (2 ** 63 - 1))

    def ask(self, images: torch.Tensor) -> torch.Tensor:
        """The suspect's labels for ``images`` (counted)."""
        return self.suspect.predict(images.contiguous())

    def claimed_model_digest(self) -> str:
        """The digest the forged key names: the copy's weights, or (black box) a hash of the suspect's identity."""
        if self.model is not None:
            return weights_digest(self.model)
        return hashlib.sha256(f"suspect:{self.suspect.identity}".encode()).hexdigest()


class Forgery(ABC):
    """A forgery attack: validated parameters in the constructor, the work in ``_forge``."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    kind: ClassVar[str] = "forgery"  # as Attack.kind: what an experiment cell does with it
    access: ClassVar[str] = "queries"
    imitates: ClassVar[str] = ""  # the method whose key layout and null rule the forged key follows
    PARAMS: ClassVar[tuple[Param, ...]] = ()

    @classmethod
    def params(cls) -> tuple[Param, ...]:
        """The parameter listing with defaults read from ``__init__``."""
        return declared_params(cls)

    def get_params(self) -> dict[str, Any]:
        """The parameters as stored."""
        return {p.name: getattr(self, p.name) for p in self.PARAMS}

    def forge(self, model_or_suspect: Any, attacker_data: Dataset, intercepted: torch.Tensor | None = None, *,
              seed: int = 0) -> OwnershipKey:
        """The forged key (see :meth:`perform` for its cost)."""
        return self.perform(model_or_suspect, attacker_data, intercepted, seed=seed).key

    def perform(self, model_or_suspect: Any, attacker_data: Dataset, intercepted: torch.Tensor | None = None, *,
                seed: int = 0) -> ForgeryOutcome:
        """Check the threat model, forge, and return the key with the queries and seconds it cost."""
        from ...suspects.queried import QueriedSuspect
        from ...suspects.local import TorchSuspect

        if not isinstance(attacker_data, Dataset) or len(attacker_data) == 0:
            raise ConfigError(f"attacker_data must be a non-empty modelproof Dataset, got {type(attacker_data).__name__}")
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ConfigError(f"seed must be a non-negative integer, got {seed!r}")
        module = model_or_suspect if isinstance(model_or_suspect, nn.Module) else None
        if self.access == "white-box" and module is None:
            raise ConfigError(f"forgery {self.name!r} needs white-box access: a torch module (a copy of the model), "
                              f"got {type(model_or_suspect).__name__}")
        intercepted = _check_intercepted(self, intercepted, attacker_data)
        copy_ = copy.deepcopy(module).eval() if module is not None else None
        before = weights_digest(module) if module is not None else None
        suspect = TorchSuspect(copy_) if copy_ is not None else model_or_suspect
        queried = suspect if isinstance(suspect, QueriedSuspect) else QueriedSuspect(suspect)
        if tuple(queried.input_shape) != attacker_data.input_shape:
            raise ConfigError(f"the suspect takes images of shape {tuple(queried.input_shape)} but the attacker's "
                              f"data {attacker_data.name!r} has {attacker_data.input_shape}; resize it (--size)")
        work = Counterfeiter(queried, copy_ if self.access == "white-box" else None, attacker_data, intercepted, seed)
        sent = queried.queries
        start = time.perf_counter()
        key = self._forge(work)
        seconds = time.perf_counter() - start
        if module is not None and weights_digest(module) != before:
            raise RuntimeError(f"forgery {self.name!r} modified the model; this is a bug in the forgery")
        return ForgeryOutcome(key, queried.queries - sent, seconds, dict(work.details))

    def key(self, work: Counterfeiter, inputs: torch.Tensor, labels: torch.Tensor, *, null: float,
            null_source: str, extra: dict | None = None) -> OwnershipKey:
        """The forged OwnershipKey (method = this forgery's name, so our own experiments can tell)."""
        return OwnershipKey(inputs=inputs.detach().float().clamp(0.0, 1.0).contiguous(),
                            labels=labels.to(torch.int64), method=self.name,
                            params={**self.get_params(), **(extra or {}), "imitates": self.imitates},
                            num_classes=int(work.suspect.num_classes), input_shape=work.data.input_shape,
                            null_match_prob=null, null_source=null_source,
                            model_digest=work.claimed_model_digest())

    @abstractmethod
    def _forge(self, work: Counterfeiter) -> OwnershipKey:
        """Make the forged key from what ``work`` grants."""


def _check_intercepted(forgery: Forgery, intercepted: object, data: Dataset) -> torch.Tensor | None:
    """The intercepted key inputs as a float tensor when the forgery needs them (labels never accepted)."""
    if forgery.access != "intercepted":
        return None
    if isinstance(intercepted, OwnershipKey):
        raise ConfigError(f"forgery {forgery.name!r} takes the intercepted key inputs (an image tensor), not a key: "
                          "an interceptor does not see the key's labels")
    if not isinstance(intercepted, torch.Tensor) or intercepted.dim() != 4 or len(intercepted) < 1:
        raise ConfigError(f"forgery {forgery.name!r} needs intercepted key inputs: a float tensor (N, C, H, W), "
                          f"got {type(intercepted).__name__}")
    if tuple(intercepted.shape[1:]) != data.input_shape:
        raise ConfigError(f"intercepted inputs have shape {tuple(intercepted.shape[1:])}, the attacker's data "
                          f"{data.input_shape}")
    return intercepted.detach().float().clamp(0.0, 1.0)


def majority_label(labels: torch.Tensor) -> int:
    """The most frequent label (ties: the smallest), what an interceptor learns from a few answers."""
    return int(torch.bincount(labels).argmax())
