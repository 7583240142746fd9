"""What would make a refused key prove its model: computed from the calibration bound, not guessed.

A key is refused when its protected model, matching ``matched`` of its ``n`` inputs, does not reach
the test's level against the null bounded from the references' match counts. Three changes can
help, and :func:`refusal_advice` tries each with the same bound and the same tests as verification
(the exact binomial test, and the sequential e-value once every answer is in):

* more references: the same match counts seen from more models narrow the Student-t bound;
* a larger key: the same match *rates* on more inputs (references and protected model alike);
* more epochs: the protected model matching every key input instead of ``matched`` (for a method that
  trains its key into the model; a fingerprint has no epochs, and the advice does not name them).
"""

from __future__ import annotations

import math
from itertools import cycle, islice

from ..keys.nulls import prediction_upper_bound
from ..verification.stats import binomial_p_value, key_p1, log_e_value

MAX_REFERENCES = 64
KEY_FACTORS = (2, 3, 4, 6, 8)


def passes(matched: int, n: int, null: float, level: float) -> bool:
    """Whether ``matched`` of ``n`` reaches ``level`` against ``null`` in both modes the self-check runs: the
    exact binomial test, and the sequential test's e-value after all ``n`` answers (the key's p1,
    :func:`~modelproof.verification.stats.key_p1`)."""
    if null >= 1.0:
        return False
    return (binomial_p_value(matched, n, null) <= level
            and log_e_value(matched, n, null, key_p1(null, n, level)) >= -math.log(level))


def refusal_advice(counts: list[int], n: int, matched: int, alpha: float, tail: float,
                   exact_null: float | None = None, charged: float | None = None, trains: bool = True) -> str:
    """One sentence: the references' match counts, the bound they give, and which change would pass.

    ``tail``: the bound's quantile tail; ``charged``: what verify subtracts from alpha (default ``tail``).
    ``exact_null`` is the method's own null when calibration kept it (then references do not move it).
    ``trains``: whether the method trains its key into the model (only then are more epochs advice).
    """
    def null_for(refs: list[int], size: int) -> float:
        return exact_null if exact_null is not None else min(1.0, prediction_upper_bound(refs, size, tail))

    level = alpha - (tail if charged is None else charged)
    null = null_for(counts, n)
    shown = ", ".join(f"{c}/{n}" for c in counts)
    text = f"the {len(counts)} references matched the key on {shown}, " + (
        f"which bounds the null at {null:.3g}" if exact_null is None else f"and the method's exact null is {null:.3g}")
    text += f"; the protected model matched {matched}/{n}"
    helps = []
    if exact_null is None:
        more = next((r for r in range(len(counts) + 1, MAX_REFERENCES + 1)
                     if passes(matched, n, null_for(list(islice(cycle(counts), r)), n), level)), None)
        if more is not None:
            helps.append(f"more references (--references {more}, or {more - len(counts)} more --reference "
                         f"models matching as these do, would pass)")
    for factor in KEY_FACTORS:
        size = n * factor
        if passes(round(matched * factor), size, null_for([round(c * factor) for c in counts], size), level):
            helps.append(f"a larger key (--key-size {size} would pass at the same match rates)")
            break
    if trains and matched < n and passes(n, n, null, level):
        helps.append(f"more epochs (a protected model matching all {n} key inputs would pass)")
    if helps:
        return text + "; would help: " + "; ".join(helps)
    why = (f"the method's own null ({null:.3g}) is what bounds the test, and references do not move it"
           if exact_null is not None else
           "the references answer the key as the protected model does" if max(counts) >= 0.9 * matched else
           f"the references' matches spread too widely ({min(counts)}/{n} to {max(counts)}/{n}) for a tight bound")
    tried = [f"up to {MAX_REFERENCES} references", f"a key up to {KEY_FACTORS[-1]}x larger"]
    tried += ["more epochs"] if trains else []
    return text + f"; neither {', '.join(tried[:-1])} nor {tried[-1]} would pass: {why}; change the method's parameters"


def full_match_proves(counts: list[int], n: int, alpha: float = 0.01) -> tuple[float, bool]:
    """(The null that references matching ``counts`` of ``n`` key inputs bound, as calibration bounds it by
    default; whether a protected model matching all ``n`` inputs passes the self-check against it at
    ``alpha``, protect's default). Fewer than the calibration's minimum of references: (1.0, True),
    nothing foreseen. What :class:`~modelproof.protections.selection.Selection` hands a protection that
    can foresee its calibration (random-fingerprint's pilot)."""
    from .calibration import MIN_REFERENCES, TAIL, skew_tail

    if len(counts) < MIN_REFERENCES:
        return 1.0, True
    null = min(1.0, prediction_upper_bound(list(counts), n, TAIL))
    return null, passes(n, n, null, alpha - skew_tail(len(counts)))


__all__ = ["refusal_advice", "passes", "full_match_proves"]
