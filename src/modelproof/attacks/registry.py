"""The table of attacks by name, ``make_attack`` and the listing the CLI prints."""

from __future__ import annotations

from typing import Any

from ..util.errors import ConfigError
from .adversarial_training import AdversarialTraining
from .base import Attack, Param
from .chain import Chain, bind_registry
from .cleanse import NeuralCleanse
from .compression import SVDCompression
from .extraction import Extraction
from .evasion.attack import PirateAttack
from .filters import FilterPruning
from .fineprune import FinePruning
from .finetune import FTAL, FTLL, RTAL, RTLL, SmallSetFineTune
from .knockoff import KnockoffNets, TransferLearning
from .laundering import NeuralLaundering
from .overwrite import AdversarialFineTune
from .preprocessing import FeatureSqueezing, InputQuantisation, InputSmoothing, JPEGCompression
from .pruning import WeightPruning
from .quantization import Quantisation
from .regularisation import LabelSmoothing, Regularisation
from .shifting import FeaturePermutation, WeightShifting

ATTACKS: dict[str, type[Attack]] = {cls.name: cls for cls in (
    FTLL, FTAL, RTLL, RTAL, SmallSetFineTune, WeightPruning, FilterPruning, SVDCompression, Quantisation,
    AdversarialFineTune, Extraction, PirateAttack,
    FinePruning, WeightShifting, NeuralCleanse, LabelSmoothing, Regularisation, FeaturePermutation,
    NeuralLaundering, KnockoffNets, TransferLearning, JPEGCompression, InputSmoothing, FeatureSqueezing,
    InputQuantisation, AdversarialTraining, Chain)}


def canonical_name(name: object) -> str:
    """The registered spelling of attack ``name`` (case-insensitive, ``_`` read as ``-``), or ConfigError."""
    key = name.strip().lower().replace("_", "-") if isinstance(name, str) else None
    if key not in ATTACKS:
        raise ConfigError(f"unknown attack {name!r}; expected one of: {', '.join(ATTACKS)}")
    return key


def make_attack(name: str, **params: Any) -> Attack:
    """The attack registered as ``name`` with ``params``; ConfigError for an unknown name or parameter."""
    cls = ATTACKS[canonical_name(name)]
    accepted = [p.name for p in cls.PARAMS]
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise ConfigError(f"unknown parameter(s) {', '.join(map(repr, unknown))} for attack {cls.name!r}; "
                          f"accepted: {', '.join(accepted) or 'none'}")
    return cls(**params)


def parse_params(name: str, pairs: list[str]) -> dict[str, Any]:
    """``key=value`` strings parsed by the declared kind of each of attack ``name``'s parameters."""
    cls = ATTACKS[canonical_name(name)]
    return parse_pairs(cls.PARAMS, f"attack {cls.name!r}", pairs)


def parse_pairs(declared: tuple[Param, ...], owner: str, pairs: list[str]) -> dict[str, Any]:
    """``key=value`` strings parsed by the ``declared`` parameters of ``owner`` (named in errors)."""
    specs = {p.name: p for p in declared}
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise ConfigError(f"--param expects key=value, got {pair!r}")
        if key not in specs:
            raise ConfigError(f"unknown parameter {key!r} for {owner}; accepted: {', '.join(specs)}")
        out[key] = specs[key].parse(value)
    return out


def describe_attacks() -> list[dict[str, Any]]:
    """Name, one-line description and parameters (name, kind, default, help) of every attack."""
    return [{"name": name, "description": cls.description,
             "params": [{"name": p.name, "kind": p.kind, "default": list(p.default) if isinstance(p.default, tuple)
                         else p.default, "help": p.help} for p in cls.params()]}
            for name, cls in ATTACKS.items()]


bind_registry(canonical_name=canonical_name, make_attack=make_attack, parse_params=parse_params)
