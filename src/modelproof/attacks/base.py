"""The Attack noun: an object holding parameters whose final entry point checks inputs and result.

Following foolbox's ``attacks/base.py``: :meth:`Attack.perform` (and :meth:`Attack.attack`, which
returns only the model) is the one public entry point. It validates the model and the attacker's
data, deep-copies the model, calls the subclass's ``_run`` on the copy, checks that the result is
a module answering one score per class, and verifies that the caller's model is bit-identical
afterwards. An attack never receives the owner's split or key: only ``attacker_data``.
"""

from __future__ import annotations

import copy
import inspect
import math
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from ..data.splits import Dataset
from ..util.errors import ConfigError
from ..models.devices import model_device
from ..models.modelfile import weights_digest

KINDS = ("int", "float", "bool", "str", "rate", "floats")


@dataclass(frozen=True)
class Param:
    """One constructor parameter of an attack, for listings and ``key=value`` parsing on the CLI.

    ``kind`` is one of ``KINDS``: ``rate`` is a float in (0, 1) or the word ``auto``; ``floats`` a
    comma-separated list of floats. Numbers may be written as fractions ``a/b``.
    """

    name: str
    kind: str
    help: str
    default: Any = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"parameter {self.name!r}: kind must be one of {KINDS}, got {self.kind!r}")

    def parse(self, text: str) -> Any:
        """The value of ``text`` as this parameter's kind; ConfigError naming the parameter otherwise."""
        try:
            if self.kind == "int":
                return int(text)
            if self.kind == "float":
                return _fraction(text)
            if self.kind == "bool":
                low = text.strip().lower()
                if low in ("1", "true", "yes", "on"):
                    return True
                if low in ("0", "false", "no", "off"):
                    return False
                raise ValueError(text)
            if self.kind == "rate":
                return "auto" if text.strip().lower() == "auto" else _fraction(text)
            if self.kind == "floats":
                return tuple(_fraction(t) for t in text.split(",") if t.strip())
        except ValueError:
            raise ConfigError(f"parameter {self.name!r} expects {self.kind}, got {text!r}") from None
        return text


def _fraction(text: str) -> float:
    """A float, also written as a fraction ``a/b`` (IPGuard's c = 1/16)."""
    if "/" in text:
        num, den = text.split("/", 1)
        try:
            return float(num) / float(den)
        except ZeroDivisionError:
            raise ValueError(text) from None
    return float(text)


@dataclass(frozen=True)
class AttackOutcome:
    """What one run of an attack produced: the model, victim queries, wall time and details."""

    model: nn.Module
    queries: int
    seconds: float
    details: dict = field(default_factory=dict)


@dataclass
class AttackLog:
    """Mutable notes a subclass's ``_run`` fills in: victim queries and attack-specific details."""

    queries: int = 0
    details: dict = field(default_factory=dict)


def check_rate(name: str, value: object, *, allow_auto: bool = False) -> float | str:
    """``value`` as a float strictly inside (0, 1) (or ``"auto"`` when allowed), else ConfigError."""
    if allow_auto and value == "auto":
        return "auto"
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < float(value) < 1.0:
        extra = " or 'auto'" if allow_auto else ""
        raise ConfigError(f"{name} must be a number strictly between 0 and 1{extra}, got {value!r}")
    return float(value)


def check_positive(name: str, value: object, *, integer: bool = False, allow_zero: bool = False) -> Any:
    """``value`` as a positive (or non-negative) int or finite float, else ConfigError."""
    ok_type = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok_type or not math.isfinite(float(value)) \
            or (value < 0 if allow_zero else value <= 0):  # type: ignore[operator]
        what = ("a non-negative" if allow_zero else "a positive") + (" integer" if integer else " number")
        raise ConfigError(f"{name} must be {what}, got {value!r}")
    return value


def check_choice(name: str, value: object, choices: tuple[str, ...]) -> str:
    """``value`` if it is one of ``choices``, else ConfigError listing them."""
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
    return value  # type: ignore[return-value]


def check_sweep(name: str, values: object) -> tuple[float, ...]:
    """A non-empty, strictly increasing sequence of rates in (0, 1)."""
    if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
        raise ConfigError(f"{name} must be a sequence of rates in (0, 1), got {values!r}")
    rates = tuple(check_rate(f"{name} entry", v) for v in values)  # type: ignore[union-attr]
    if not rates or any(b <= a for a, b in zip(rates, rates[1:])):  # type: ignore[operator]
        raise ConfigError(f"{name} must be a non-empty, strictly increasing list of rates, got {values!r}")
    return rates  # type: ignore[return-value]


def declared_params(cls: type) -> tuple[Param, ...]:
    """``cls.PARAMS`` with defaults taken from ``cls.__init__``'s signature (attacks and forgeries)."""
    sig = inspect.signature(cls.__init__)
    out = []
    for p in cls.PARAMS:
        default = sig.parameters[p.name].default
        out.append(Param(p.name, p.kind, p.help, None if default is inspect.Parameter.empty else default))
    return tuple(out)


class Attack(ABC):
    """A removal attack: holds validated parameters; ``attack(model, attacker_data, seed=...)`` runs it.

    Subclasses set ``name``, ``description`` and ``PARAMS`` (kind and help of every constructor
    argument; defaults are read from the constructor's signature), validate in ``__init__`` and
    implement ``_run(model, data, seed, log)`` on a private copy of the victim.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    kind: ClassVar[str] = "removal"  # "evasion": deployed unchanged behind a filter; "preprocessing": behind a transform
    PARAMS: ClassVar[tuple[Param, ...]] = ()

    @classmethod
    def params(cls) -> tuple[Param, ...]:
        """The parameter listing with defaults taken from ``__init__``'s signature."""
        return declared_params(cls)

    def get_params(self) -> dict[str, Any]:
        """The parameters as stored (JSON-friendly: datasets are named, tuples become lists)."""
        out: dict[str, Any] = {}
        for p in self.PARAMS:
            value = getattr(self, p.name)
            if isinstance(value, Dataset):
                value = f"<dataset {value.name}: {len(value)} images>"
            elif isinstance(value, tuple):
                value = list(value)
            out[p.name] = value
        return out

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"

    def attack(self, model: nn.Module, attacker_data: Dataset, *, seed: int = 0) -> nn.Module:
        """The attacked model (a new module; ``model`` is never modified)."""
        return self.perform(model, attacker_data, seed=seed).model

    def perform(self, model: nn.Module, attacker_data: Dataset, *, seed: int = 0) -> AttackOutcome:
        """Run the attack and return the model with its cost: victim queries, seconds, details."""
        num_classes = _check_inputs(model, attacker_data, seed)
        before = weights_digest(model)
        victim = copy.deepcopy(model).eval()
        log = AttackLog()
        start = time.perf_counter()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            out = self._run(victim, attacker_data, seed, log)
        seconds = time.perf_counter() - start
        if weights_digest(model) != before:
            raise RuntimeError(f"attack {self.name!r} modified its input model; this is a bug in the attack")
        _check_result(self.name, out, attacker_data, num_classes)
        return AttackOutcome(out.eval(), int(log.queries), seconds, dict(log.details))

    @abstractmethod
    def _run(self, model: nn.Module, data: Dataset, seed: int, log: AttackLog) -> nn.Module:
        """Attack ``model`` (a private copy, free to modify) using only ``data``; return the result."""


def _check_inputs(model: nn.Module, data: Dataset, seed: int) -> int:
    """Validate model and data; return the model's number of classes."""
    if not isinstance(model, nn.Module):
        raise ConfigError(f"the model to attack must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(data, Dataset):
        raise ConfigError(f"attacker_data must be a modelproof Dataset, got {type(data).__name__}")
    if len(data) == 0:
        raise ConfigError(f"the attacker's dataset {data.name!r} is empty")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"seed must be a non-negative integer, got {seed!r}")
    shape = getattr(model, "input_shape", None)
    if shape is not None and tuple(shape) != data.input_shape:
        raise ConfigError(f"the model takes images of shape {tuple(shape)} but the attacker's data "
                          f"{data.name!r} has {data.input_shape}; resize the data (--size)")
    num_classes = getattr(model, "num_classes", None)
    # More outputs than the data's classes is a new-label watermark's model (C + 1): the attacker's data
    # never shows the extra class, and the attacked model keeps answering all of them.
    if num_classes is not None and int(num_classes) < data.num_classes:
        raise ConfigError(f"the model has {num_classes} classes but the attacker's data {data.name!r} "
                          f"has {data.num_classes}")
    return int(num_classes) if num_classes is not None else data.num_classes


def _check_result(name: str, out: object, data: Dataset, num_classes: int) -> None:
    """The attack must return a module answering [N, num_classes] scores for the data's images."""
    if not isinstance(out, nn.Module):
        raise RuntimeError(f"attack {name!r} returned {type(out).__name__}, not a torch.nn.Module")
    out.eval()
    with torch.no_grad():
        scores = out(data.images[:2].to(model_device(out)))
    if not isinstance(scores, torch.Tensor) or tuple(scores.shape) != (min(2, len(data)), num_classes):
        raise RuntimeError(f"attack {name!r} returned a model answering shape "
                           f"{tuple(getattr(scores, 'shape', ()))}, expected (N, {num_classes})")


def prunable_layers(model: nn.Module, *, include: tuple[type[nn.Module], ...] = (nn.Conv2d, nn.Linear),
                    exclude: tuple[nn.Module, ...] = ()) -> list[tuple[str, nn.Module]]:
    """(name, module) of every layer of the ``include`` types, minus the ``exclude``d modules."""
    skip = {id(m) for m in exclude}
    return [(n, m) for n, m in model.named_modules() if isinstance(m, include) and id(m) not in skip]
