"""The shared plausibility rule and :func:`run_attack`: an attack's model with its accuracy and cost.

An attack is *plausible* when the attacked model is still worth deploying: its test accuracy stays
within ``max_drop`` (absolute points, IPGuard §5.1.2: 3%) of the original, and/or at or above
``min_accuracy`` (frontier stitching §4.4: 0.95 on MNIST). Experiments report it beside every result.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from torch import nn

from ..data.splits import Dataset, Splits
from ..util.errors import ConfigError
from ..models.training import evaluate
from .base import Attack


@dataclass(frozen=True)
class Plausibility:
    """Plausible when ``before - after <= max_drop`` and ``after >= min_accuracy`` (None: not checked).

    ``Plausibility()`` is IPGuard's relative rule (at most 3 points lost); frontier stitching's
    absolute bound is ``Plausibility(max_drop=None, min_accuracy=0.95)``.
    """

    max_drop: float | None = 0.03
    min_accuracy: float | None = None

    def __post_init__(self) -> None:
        for name in ("max_drop", "min_accuracy"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))
                                  or not math.isfinite(v) or not 0.0 <= v <= 1.0):
                raise ConfigError(f"plausibility {name} must be None or a number in [0, 1], got {v!r}")
        if self.max_drop is None and self.min_accuracy is None:
            raise ConfigError("plausibility needs max_drop or min_accuracy (or both)")

    def __call__(self, before: float, after: float) -> bool:
        """Whether a drop from accuracy ``before`` to ``after`` is plausible. A tiny tolerance absorbs
        float noise (accuracies are ratios of counts)."""
        ok = True
        if self.max_drop is not None:
            ok &= before - after <= self.max_drop + 1e-9
        if self.min_accuracy is not None:
            ok &= after >= self.min_accuracy - 1e-9
        return bool(ok)

    def describe(self) -> str:
        """E.g. ``drop <= 0.03`` or ``accuracy >= 0.95``."""
        parts = []
        if self.max_drop is not None:
            parts.append(f"drop <= {self.max_drop:g}")
        if self.min_accuracy is not None:
            parts.append(f"accuracy >= {self.min_accuracy:g}")
        return " and ".join(parts)


@dataclass(frozen=True)
class AttackResult:
    """The attacked model, test accuracy before and after, the change, the cost and plausibility."""

    attack: str
    params: dict
    model: nn.Module
    accuracy_before: float
    accuracy_after: float
    seconds: float
    queries: int
    plausible: bool
    rule: str
    details: dict = field(default_factory=dict)

    @property
    def change(self) -> float:
        """accuracy_after - accuracy_before (negative: accuracy lost)."""
        return self.accuracy_after - self.accuracy_before

    def to_dict(self) -> dict:
        """Everything but the model, JSON-ready."""
        return {"attack": self.attack, "params": dict(self.params), "accuracy_before": self.accuracy_before,
                "accuracy_after": self.accuracy_after, "change": self.change, "seconds": self.seconds,
                "queries": self.queries, "plausible": self.plausible, "plausibility_rule": self.rule,
                "details": dict(self.details)}


def run_attack(attack: Attack, model: nn.Module, data: Splits | Dataset, test: Dataset | None = None, *,
               seed: int = 0, plausibility: Plausibility = Plausibility()) -> AttackResult:
    """Run ``attack`` on ``model`` with the attacker's data and measure it on the test data.

    ``data`` is either a :class:`Splits` (its ``attacker`` part is attacked with, its ``test`` part
    measures; the owner part is never touched) or the attacker's Dataset with ``test`` given.
    """
    if not isinstance(attack, Attack):
        raise ConfigError(f"expected an Attack (see make_attack), got {type(attack).__name__}")
    if isinstance(data, Splits):
        if test is not None:
            raise ConfigError("pass either Splits or an attacker Dataset plus test, not Splits plus test")
        attacker, test = data.attacker, data.test
    elif isinstance(data, Dataset) and isinstance(test, Dataset):
        attacker = data
    else:
        raise ConfigError("run_attack needs Splits, or the attacker's Dataset and a test Dataset")
    before = evaluate(model, test)
    outcome = attack.perform(model, attacker, seed=seed)
    after = evaluate(outcome.model, test)
    return AttackResult(attack=attack.name, params=attack.get_params(), model=outcome.model,
                        accuracy_before=before, accuracy_after=after, seconds=outcome.seconds,
                        queries=outcome.queries, plausible=plausibility(before, after),
                        rule=plausibility.describe(), details=outcome.details)
