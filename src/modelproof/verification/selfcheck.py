"""The self-check: a key that cannot prove its own protected model is not written.

``self_check`` verifies the protected model against its new key, in both modes, at the level the
key will be used at; any mode that does not say "owned" is a problem the caller refuses on.
"""

from __future__ import annotations

from ..keys.key import OwnershipKey
from ..protections.base import Protected
from ..suspects.local import TorchSuspect
from .verifier import verify


def self_check(result: Protected, key: OwnershipKey, alpha: float = 0.01) -> list[str]:
    """The problems found verifying the protected model against its own key (empty when it proves it)."""
    problems = []
    for mode in ("fixed", "sequential"):
        if mode == "sequential" and key.null_match_prob >= 1.0:
            problems.append("sequential: the null is 1, no evidence can reach alpha")
            continue
        verdict = verify(key, TorchSuspect(result.model), alpha=alpha, mode=mode)
        if verdict.decision != "owned":
            problems.append(f"{mode}: {verdict.matches}/{verdict.queries} matched, null {key.null_match_prob:.3g}")
    return problems
