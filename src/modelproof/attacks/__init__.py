"""Removal attacks: turn a (protected) model into a suspect by fine-tuning, pruning, compressing,
overwriting or distilling it, using only the attacker's share of the data.

``make_attack(name, **params)`` builds one from the registry ``ATTACKS``; ``attack.attack(model,
attacker_data, seed=...)`` returns a new model and never modifies its input; ``run_attack`` measures
test accuracy before and after, the cost (seconds, victim queries) and plausibility.
"""

from __future__ import annotations

from .base import Attack, AttackOutcome, Param
from .compression import SVDCompression
from .extraction import Extraction, QueryCounter
from .filters import FilterPruning
from .finetune import FTAL, FTLL, RTAL, RTLL, SmallSetFineTune
from .overwrite import AdversarialFineTune, make_adversaries
from .pruning import WeightPruning
from .quantization import Quantisation
from .registry import ATTACKS, canonical_name, describe_attacks, make_attack, parse_params
from .result import AttackResult, Plausibility, run_attack

__all__ = [
    "ATTACKS", "AdversarialFineTune", "Attack", "AttackOutcome", "AttackResult", "Extraction", "FTAL", "FTLL",
    "FilterPruning", "Param", "Plausibility", "QueryCounter", "Quantisation", "RTAL", "RTLL", "SVDCompression",
    "SmallSetFineTune", "WeightPruning", "canonical_name", "describe_attacks", "make_adversaries",
    "make_attack", "parse_params", "run_attack",
]
