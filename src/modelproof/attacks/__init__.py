"""Attacks: turn a (protected) model into a suspect by fine-tuning, pruning, compressing, overwriting,
distilling or unlearning it, or by deploying it behind an input transform, using only the attacker's
share of the data; ``chain`` combines any of them.

``make_attack(name, **params)`` builds one from the registry ``ATTACKS``; ``attack.attack(model,
attacker_data, seed=...)`` returns a new model and never modifies its input; ``run_attack`` measures
test accuracy before and after, the cost (seconds, victim queries) and plausibility.
"""

from __future__ import annotations

from .adversarial_training import AdversarialTraining
from .base import Attack, AttackOutcome, Param
from .chain import Chain
from .cleanse import NeuralCleanse
from .compression import SVDCompression
from .extraction import Extraction, QueryCounter
from .filters import FilterPruning
from .fineprune import FinePruning
from .finetune import FTAL, FTLL, RTAL, RTLL, SmallSetFineTune
from .knockoff import KnockoffNets, TransferLearning
from .laundering import NeuralLaundering
from .overwrite import AdversarialFineTune, make_adversaries
from .preprocessing import FeatureSqueezing, InputQuantisation, InputSmoothing, JPEGCompression, PreprocessedModel
from .pruning import WeightPruning
from .quantization import Quantisation
from .registry import ATTACKS, canonical_name, describe_attacks, make_attack, parse_params
from .regularisation import LabelSmoothing, Regularisation
from .result import AttackResult, Plausibility, run_attack
from .shifting import FeaturePermutation, WeightShifting

__all__ = [
    "ATTACKS", "AdversarialFineTune", "AdversarialTraining", "Attack", "AttackOutcome", "AttackResult", "Chain",
    "Extraction", "FTAL", "FTLL", "FeaturePermutation", "FeatureSqueezing", "FilterPruning", "FinePruning",
    "InputQuantisation", "InputSmoothing", "JPEGCompression", "KnockoffNets", "LabelSmoothing", "NeuralCleanse",
    "NeuralLaundering", "Param", "Plausibility", "PreprocessedModel", "QueryCounter", "Quantisation", "RTAL",
    "RTLL", "Regularisation", "SVDCompression", "SmallSetFineTune", "TransferLearning", "WeightPruning",
    "WeightShifting", "canonical_name", "describe_attacks", "make_adversaries", "make_attack", "parse_params",
    "run_attack",
]
