"""Forgery attacks: counterfeiters who make ownership keys of their own for a model that is not theirs.

``make_forgery(name, **params).forge(model_or_suspect, attacker_data, intercepted, seed=...)``
returns a forged ``OwnershipKey`` that ``verification.verify`` checks like any key; ``perform``
also returns its cost (queries, seconds). The registry ``FORGERIES`` lists them; each one's
threat model is its ``access`` (white-box, queries, intercepted key inputs without labels).
"""

from __future__ import annotations

from typing import Any

from ...util.errors import ConfigError
from .ambiguity import AdversarialAmbiguity, BlackBoxBoundary, BoundaryAmbiguity
from .encoder import IndependentEncoder
from .base import ACCESS, Counterfeiter, Forgery, ForgeryOutcome, majority_label
from .transplant import DifferenceImages, PatternReuse, nearest_sources

FORGERIES: dict[str, type[Forgery]] = {cls.name: cls for cls in (
    PatternReuse, DifferenceImages, AdversarialAmbiguity, BoundaryAmbiguity, BlackBoxBoundary, IndependentEncoder)}


def make_forgery(name: str, **params: Any) -> Forgery:
    """The forgery registered as ``name`` with ``params``; ConfigError for an unknown name or parameter."""
    key = name.strip().lower().replace("_", "-") if isinstance(name, str) else None
    if key not in FORGERIES:
        raise ConfigError(f"unknown forgery {name!r}; expected one of: {', '.join(FORGERIES)}")
    cls = FORGERIES[key]
    unknown = sorted(set(params) - {p.name for p in cls.PARAMS})
    if unknown:
        raise ConfigError(f"unknown parameter(s) {', '.join(map(repr, unknown))} for forgery {cls.name!r}; "
                          f"accepted: {', '.join(p.name for p in cls.PARAMS)}")
    return cls(**params)


def describe_forgeries() -> list[dict[str, Any]]:
    """Name, description, access and parameters of every forgery (the form ``attack list`` prints)."""
    return [{"name": name, "description": f"{cls.description} [{cls.access}]", "access": cls.access,
             "params": [{"name": p.name, "kind": p.kind, "default": p.default, "help": p.help} for p in cls.params()]}
            for name, cls in FORGERIES.items()]


__all__ = ["ACCESS", "AdversarialAmbiguity", "BlackBoxBoundary", "BoundaryAmbiguity", "Counterfeiter",
           "DifferenceImages", "FORGERIES", "IndependentEncoder", "Forgery", "ForgeryOutcome", "PatternReuse", "describe_forgeries",
           "majority_label", "make_forgery", "nearest_sources"]
