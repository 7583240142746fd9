"""The Protection noun: ``protect(model, data, seed) -> Protected(model, key, report)``.

A watermark returns a new model (the caller's is copied first, never mutated); a fingerprint
returns the model it was given, untouched. Methods register themselves with
:func:`register_protection`; :func:`make_protection` finds them in ``modelproof.protections.watermarks`` and
``modelproof.protections.fingerprints`` by importing those packages' modules.
"""

from __future__ import annotations

import copy
import importlib
import pkgutil
import secrets as _secrets
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from ..data.splits import Dataset
from ..util.errors import ConfigError
from ..models.modelfile import weights_digest
from .checkpoint import Resume
from .selection import Selection

PROTECTIONS: dict[str, type[Protection]] = {}


@dataclass(frozen=True)
class Protected:
    """A protected model, its OwnershipKey and what the protection measured (accuracies, seconds...)."""

    model: nn.Module
    key: Any  # modelproof.keys.OwnershipKey
    report: dict = field(default_factory=dict)
    secret: Any = field(default=None, repr=False)  # owner-only material beside the key (never reported)


class Protection(ABC):
    """Base class: the constructor stores (validated) hyper-parameters; ``protect`` does the work."""

    name: ClassVar[str]
    kind: ClassVar[str]  # "watermark" or "fingerprint"
    description: ClassVar[str] = ""
    # The method's own null holds by construction (calibration then only checks it).
    exact_null: ClassVar[bool] = False
    # The method's analytic/default null is known not to bound real models: an uncalibrated key of
    # this method never gives "owned" (see modelproof.references.calibration).
    analytic_null_unsound: ClassVar[bool] = False
    # Keeps checkpoints when given a Resume (resume_in): ``protect`` then goes on after a stop (the blind
    # watermark: its training epochs; the IGSM and CW-L2 fingerprints: the chunks of their selection search).
    resumable: ClassVar[bool] = False
    # What to change when a key fails the self-check (said in the one-line refusal).
    weak_hint: ClassVar[str] = "train longer (--epochs) or use a larger key (--key-size)"

    def protect(self, model: nn.Module, data: Dataset, *, seed: int = 0, test: Dataset | None = None,
                selection: Selection | None = None) -> Protected:
        """Protect ``model`` using the owner's ``data``; ``test`` (optional) is only used for reporting.

        ``selection``: the references the key is chosen against (:mod:`.selection`); None keeps every
        candidate the method draws.
        """
        shape = tuple(getattr(model, "input_shape", data.input_shape))
        if shape != data.input_shape:
            raise ConfigError(f"model expects inputs of shape {shape} but {data.name} has {data.input_shape}")
        before = weights_digest(model)
        work = copy.deepcopy(model) if self.kind == "watermark" else model
        work.eval()
        result = self._protect(work, data, seed=seed, test=test, selection=selection)
        if weights_digest(model) != before:
            raise RuntimeError(f"{self.name} changed the caller's model; protections must not mutate their input")
        if self.kind == "fingerprint" and result.model is not model:
            raise RuntimeError(f"fingerprint {self.name} must return the model it was given")
        if tuple(result.key.input_shape) != data.input_shape:
            raise RuntimeError(f"{self.name} produced key inputs of shape {result.key.input_shape}, expected {data.input_shape}")
        result.model.eval()
        return result

    @abstractmethod
    def _protect(self, model: nn.Module, data: Dataset, *, seed: int, test: Dataset | None,
                 selection: Selection | None = None) -> Protected:
        """Subclass hook; ``model`` is already a copy for watermarks."""

    @property
    def secret(self) -> int | str:
        """The owner's secret all key randomness comes from (drawn at random once when none was given).

        It is never recorded in the key: rebuilding a key needs the secret, not only its parameters.
        """
        if getattr(self, "_secret", None) is None:
            self._secret = _secrets.token_hex(16)
        return self._secret  # type: ignore[return-value]

    @property
    def secret_given(self) -> bool:
        """Whether a secret was given or drawn already (False: :attr:`secret` would draw one now)."""
        return getattr(self, "_secret", None) is not None

    def set_secret(self, secret: int | str | None) -> None:
        """Use ``secret`` (validated) for the key's randomness; None draws a random one."""
        from .watermarks.patterns import check_secret

        self._secret = check_secret(secret) if secret is not None else None

    def gen(self, purpose: str) -> torch.Generator:
        """A generator for ``purpose``, seeded by this protection's secret (independent streams)."""
        from .watermarks.patterns import secret_generator

        return secret_generator(self.secret, f"{self.name}/{purpose}")

    def save_extras(self, result: Protected, key_path: Path, passphrase: str | None = None) -> dict:
        """Write what the method keeps beside the key (``result.secret``); returns {what: path}. Default: none."""
        del result, key_path, passphrase
        return {}

    def resume_in(self, resume: Resume | None) -> Protection:
        """Where a long protection (the blind watermark's training) keeps its checkpoint, so that an
        interrupted run of the same protection goes on from it (:mod:`.checkpoint`); never in the key."""
        self._resume = resume
        return self

    @property
    def resume(self) -> Resume | None:
        """The checkpoint folder given to :meth:`resume_in`, if any."""
        return getattr(self, "_resume", None)

    def params(self) -> dict:
        """The constructor parameters, as stored (JSON-serialisable), recorded in the key."""
        return {k: v for k, v in vars(self).items() if not k.startswith("_")}


def register_protection(cls: type[Protection]) -> type[Protection]:
    """Class decorator adding a Protection to the registry under ``cls.name``."""
    PROTECTIONS[cls.name] = cls
    return cls


def discover_protections() -> None:
    """Import every module of the watermarks and fingerprints packages, so that each registers its protections."""
    for package in ("modelproof.protections.watermarks", "modelproof.protections.fingerprints"):
        try:
            pkg = importlib.import_module(package)
        except ModuleNotFoundError:
            continue
        for info in pkgutil.iter_modules(pkg.__path__):
            importlib.import_module(f"{package}.{info.name}")


def registered(name: str) -> type[Protection] | None:
    """The registered protection class called ``name`` (None when there is none)."""
    discover_protections()
    return PROTECTIONS.get(name)


def make_protection(name: str, **params: Any) -> Protection:
    """Build a registered protection by name with its hyper-parameters."""
    discover_protections()
    if name not in PROTECTIONS:
        raise ConfigError(f"unknown protection {name!r}; expected one of {', '.join(sorted(PROTECTIONS))}")
    return PROTECTIONS[name](**params)


def exact_null(method: str) -> bool:
    """Whether the registered protection ``method`` has a null that holds by construction."""
    cls = registered(method)
    return bool(getattr(cls, "exact_null", False))


def needs_calibration(method: str) -> bool:
    """Whether ``method``'s uncalibrated null is known not to bound real models (then never "owned")."""
    cls = registered(method)
    return bool(getattr(cls, "analytic_null_unsound", False))
