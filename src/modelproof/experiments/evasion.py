"""The evasion matrix: which protection still proves ownership when the thief filters the owner's queries.

For each registered protection: protect the base model with the owner's split, build Ray et al.'s
pirate on the protected model with the attacker's surrogate set, and verify both the protected
model and the pirated one with the owner's key (the fixed-sample test of ``verification.verify``).
A row holds both decisions, the pirate's matches, p-value, FPR on clean test images, FNR on the
key, the clean accuracy of both models and the pirate's time per query as a ratio. A protection
whose protect step fails gives a row with its error message instead. Given ``references`` (a
population from ``references.train_references``), each key is calibrated and self-checked as
``modelproof protect`` does (``safeguards.finalize_key``, weak keys kept and flagged) before either
verification, so the verdicts are the ones a user would get.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from torch import nn

from ..attacks.evasion.metrics import pirate_report
from ..attacks.evasion.pirate import build_pirate
from ..data.splits import Dataset
from ..util.errors import ModelproofError
from ..protections.base import PROTECTIONS, discover_protections, make_protection
from ..suspects.local import TorchSuspect
from ..verification.verifier import verify


def protection_names() -> list[str]:
    """Every registered protection, in registry order."""
    discover_protections()
    return list(PROTECTIONS)


def quick_params(name: str) -> dict:
    """The protection's ``demo_params`` (sized for small CPU runs) or {} for its defaults."""
    discover_protections()
    params = getattr(PROTECTIONS[name], "demo_params", None)
    return dict(params) if isinstance(params, dict) else {}


def evasion_row(name: str, model: nn.Module, owner: Dataset, surrogate: Dataset, clean: Dataset, *,
                params: dict | None = None, pirate_kwargs: dict | None = None, seed: int = 0,
                alpha: float = 0.01, references: list | None = None) -> dict[str, Any]:
    """Protect ``model`` with ``name``, pirate it, verify both; the row of the evasion matrix."""
    start = time.perf_counter()
    calibrated: dict[str, Any] = {}
    try:
        protection = make_protection(name, **(quick_params(name) if params is None else params))
        protected = protection.protect(model, owner, seed=seed)
        key = protected.key
        if references is not None:
            from ..references.finalize import finalize_key

            final = finalize_key(protected, protection, owner, allow_weak=True, alpha=alpha, trained=references)
            key = final.key
            calibrated = {"null_before": final.summary.get("null_before"), "self_check": final.summary["self_check"]}
    except ModelproofError as exc:
        return {"method": name, "error": str(exc)}
    plain = verify(key, TorchSuspect(protected.model), alpha=alpha)
    pirate, details = build_pirate(protected.model, surrogate, seed=seed, **dict(pirate_kwargs or {}))
    pirate.reset_answers()
    evaded = verify(key, TorchSuspect(pirate), alpha=alpha)
    report = pirate_report(pirate, protected.model, clean, key.inputs)
    return {"method": name, "kind": PROTECTIONS[name].kind, "key_size": len(key),
            "null_match_prob": key.null_match_prob, **calibrated, "protected_decision": plain.decision,
            "protected_matches": plain.matches, "protected_p_value": plain.p_value,
            "pirate_decision": evaded.decision, "pirate_matches": evaded.matches, "pirate_p_value": evaded.p_value,
            **report, "heatmap": details["heatmap"]["method"], "seconds": time.perf_counter() - start}


def evasion_matrix(model: nn.Module, owner: Dataset, surrogate: Dataset, clean: Dataset, *,
                   names: Sequence[str] | None = None, pirate_kwargs: dict | None = None, seed: int = 0,
                   log: Any = None, references: list | None = None) -> list[dict]:
    """One :func:`evasion_row` per protection in ``names`` (default: every registered one)."""
    rows = []
    for name in names or protection_names():
        row = evasion_row(name, model, owner, surrogate, clean, pirate_kwargs=pirate_kwargs, seed=seed,
                          references=references)
        rows.append(row)
        if log is not None:
            log(row)
    return rows
