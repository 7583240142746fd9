"""Black-box ownership verification: ask a suspect the key, count matches, decide with a sound test.

``verify`` is the same for every protection method. Under the null hypothesis "the suspect is
independent of our model" each key label is matched with probability ``key.null_match_prob``;
the decision is part of the result (a :class:`Verdict`), never a bare accuracy.

- **fixed** mode asks the whole key and decides "owned" iff the exact one-sided binomial p-value
  is below alpha.
- **sequential** mode asks in batches and stops as soon as the test martingale of
  :mod:`modelproof.stats` crosses 1/alpha ("owned", false-claim rate <= alpha under optional
  stopping by Ville's inequality) or falls to beta ("not owned"). A key that runs out before
  either boundary gives "not owned" (the evidence did not reach level alpha).
- A query budget that runs out first gives "inconclusive" (sequential), or in fixed mode the exact
  test on the answered prefix: "owned" if it already rejects at alpha (the prefix length was fixed
  by the budget, not by the answers, so the test stays valid), "inconclusive" otherwise.

Key inputs are asked in one fixed order: a permutation seeded by the key digest (so frontier-
stitching keys, stored true adversaries first, are not asked in blocks, and a resumed run asks
the same order). With ``log_path`` every answer is logged by ``suspects.QueriedSuspect``; a run
killed mid-way and started again replays logged answers without re-asking them.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import torch

from .errors import ConfigError, SuspectError
from .keys import OwnershipKey
from .stats import (binomial_p_value, clopper_pearson_upper, decision_threshold, default_p1, log_e_value,
                    sequential_decision)

MODES = ("fixed", "sequential")
DECISIONS = ("owned", "not owned", "inconclusive")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class Verdict:
    """The outcome of one verification: the evidence, the test and the decision."""

    decision: str
    mode: str
    queries: int            # key inputs whose answers were counted (asked now + replayed from the log)
    matches: int
    match_rate: float
    key_size: int
    null_match_prob: float
    p_value: float          # exact one-sided binomial on the answered inputs
    alpha: float
    threshold: int          # matches needed for p < alpha at this many queries (fixed-sample test)
    e_value: float | None   # sequential: the test martingale's final value (owned iff >= 1/alpha)
    p1: float | None
    beta: float | None
    key_digest: str
    method: str
    null_source: str
    model_digest: str
    suspect: str
    started: str
    finished: str
    queries_sent: int       # queries actually sent to the suspect by this run
    replayed: int           # answers taken from the query log instead of asking again
    budget: int | None
    batch_size: int

    def to_dict(self) -> dict:
        """A JSON-ready dict (a non-finite e-value is written as the string "inf")."""
        d = dataclasses.asdict(self)
        return {k: (str(v) if isinstance(v, float) and not math.isfinite(v) else v) for k, v in d.items()}


def _check_inputs(alpha: float, mode: str, batch_size: int, budget: int | None, beta: float) -> None:
    for name, p in (("alpha", alpha), ("beta", beta)):
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 < p < 1:
            raise ConfigError(f"{name} must be a number in (0, 1), got {p!r}")
    if mode not in MODES:
        raise ConfigError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    if budget is not None and (isinstance(budget, bool) or not isinstance(budget, int) or budget < 1):
        raise ConfigError(f"budget must be an integer >= 1 (or None for no limit), got {budget!r}")


def check_compatible(key: OwnershipKey, suspect: object) -> None:
    """SuspectError unless the suspect takes the key's input shape; fewer classes is allowed (non-matches)."""
    shape = tuple(int(s) for s in getattr(suspect, "input_shape", ()))
    if shape != tuple(key.input_shape):
        raise SuspectError(f"suspect {getattr(suspect, 'identity', suspect)!s} expects inputs of shape {shape} "
                           f"(C, H, W), but the key's inputs have shape {tuple(key.input_shape)}")


def key_order(key: OwnershipKey) -> torch.Tensor:
    """The order in which key inputs are asked: a permutation seeded by the key digest."""
    seed = int(key.digest()[:15], 16)
    return torch.randperm(len(key), generator=torch.Generator().manual_seed(seed))


def _ask(suspect, images: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """The suspect's labels for ``images`` and whether the budget ran out (then possibly fewer labels)."""
    from .suspects import BudgetExhausted

    try:
        return _labels(suspect.predict(images), len(images)), False
    except BudgetExhausted:
        pass
    answered = []  # use what is left of the budget one input at a time (replayed inputs cost nothing)
    for i in range(len(images)):
        try:
            answered.append(_labels(suspect.predict(images[i:i + 1]), 1))
        except BudgetExhausted:
            break
    return (torch.cat(answered) if answered else torch.empty(0, dtype=torch.int64)), True


def _exp(x: float) -> float:
    return math.exp(x) if x < 709.0 else math.inf


def _labels(answer: object, n: int) -> torch.Tensor:
    if not isinstance(answer, torch.Tensor) or answer.dtype != torch.int64 or tuple(answer.shape) != (n,):
        raise SuspectError(f"suspect answered {type(answer).__name__} "
                           f"{tuple(getattr(answer, 'shape', ()))} instead of {n} int64 labels")
    return answer


def verify(key: OwnershipKey, suspect, *, alpha: float = 0.01, mode: str = "fixed", batch_size: int = 10,
           budget: int | None = None, log_path: str | Path | None = None, p1: float | None = None,
           beta: float = 0.05) -> Verdict:
    """Ask ``suspect`` the key and decide ownership at level ``alpha`` (see the module docstring).

    ``suspect`` is any Suspect; it is wrapped in ``suspects.QueriedSuspect`` (budget, query log,
    resume). ``p1`` and ``beta`` set the sequential test (``stats.default_p1`` when ``p1`` is None).
    """
    from .suspects import QueriedSuspect

    _check_inputs(alpha, mode, batch_size, budget, beta)
    p0 = key.null_match_prob
    if mode == "sequential":
        if p0 >= 1.0:
            raise ConfigError("sequential verification needs null_match_prob < 1 (a key every model matches "
                              "proves nothing); calibrate the key")
        p1 = default_p1(p0) if p1 is None else p1
        log_e_value(0, 0, p0, p1)  # validates p1 against p0
    check_compatible(key, suspect)
    if isinstance(suspect, QueriedSuspect):
        if budget is not None or log_path is not None:
            raise ConfigError("pass budget and log_path to the QueriedSuspect, or a bare suspect to verify")
        queried = suspect
    else:
        queried = QueriedSuspect(suspect, budget=budget, log_path=log_path, key_digest=key.digest())
    started, sent0, replayed0 = _now(), queried.queries, queried.replayed
    order, asked, matches, exhausted, state = key_order(key), 0, 0, False, "continue"
    for start in range(0, len(key), batch_size):
        idx = order[start:start + batch_size]
        answers, exhausted = _ask(queried, key.inputs[idx])
        matches += int((answers == key.labels[idx[:len(answers)]]).sum())
        asked += len(answers)
        if mode == "sequential" and asked:
            state = sequential_decision(matches, asked, p0, p1, alpha, beta)
            if state != "continue":
                break
        if exhausted:
            break
    p_value = binomial_p_value(matches, asked, p0)
    if mode == "fixed":
        decision = "owned" if p_value < alpha else ("inconclusive" if exhausted else "not owned")
    else:
        decision = state if state != "continue" else ("inconclusive" if exhausted else "not owned")
    e_value = _exp(log_e_value(matches, asked, p0, p1)) if mode == "sequential" else None
    return Verdict(decision=decision, mode=mode, queries=asked, matches=matches,
                   match_rate=matches / asked if asked else 0.0, key_size=len(key), null_match_prob=p0,
                   p_value=p_value, alpha=float(alpha), threshold=decision_threshold(asked, p0, alpha),
                   e_value=e_value, p1=p1 if mode == "sequential" else None,
                   beta=float(beta) if mode == "sequential" else None, key_digest=key.digest(),
                   method=key.method, null_source=key.null_source, model_digest=key.model_digest,
                   suspect=str(queried.identity), started=started, finished=_now(),
                   queries_sent=queried.queries - sent0, replayed=queried.replayed - replayed0,
                   budget=budget, batch_size=batch_size)


def match_count(key: OwnershipKey, suspect, batch_size: int = 256) -> int:
    """How many key labels ``suspect`` answers (the whole key, through a QueriedSuspect)."""
    from .suspects import QueriedSuspect

    check_compatible(key, suspect)
    queried = suspect if isinstance(suspect, QueriedSuspect) else QueriedSuspect(suspect)
    total = 0
    for start in range(0, len(key), batch_size):
        answers = _labels(queried.predict(key.inputs[start:start + batch_size]),
                          len(key.inputs[start:start + batch_size]))
        total += int((answers == key.labels[start:start + batch_size]).sum())
    return total


CALIBRATIONS = ("worst", "pooled")


def calibrate(key: OwnershipKey, reference_suspects: list, confidence: float = 0.99,
              method: str = "worst") -> OwnershipKey:
    """The key with ``null_match_prob`` estimated from independently trained reference models.

    Every reference answers the whole key, and gets a one-sided Clopper-Pearson upper bound at
    ``confidence`` on its match rate. ``method="worst"`` (the default) keeps the largest of these
    bounds: the null must hold for every kind of independent model a suspect may be, and kinds
    differ a lot (on MNIST, frontier-stitching keys of an MLP were matched 25% by other MLPs and
    88% by CNNs; a pooled estimate claimed half of the held-out CNNs). ``method="pooled"`` bounds
    the pooled rate (R references x n inputs as independent trials): tighter, and valid only when
    the references are draws of one kind of suspect (one architecture and recipe, other seeds).
    Provenance goes to ``null_source`` and ``params["calibration"]``.
    """
    if not reference_suspects:
        raise ConfigError("calibration needs at least one independently trained reference model")
    if isinstance(confidence, bool) or not isinstance(confidence, (int, float)) or not 0 < confidence < 1:
        raise ConfigError(f"confidence must be a number in (0, 1), got {confidence!r}")
    if method not in CALIBRATIONS:
        raise ConfigError(f"calibration method must be one of {', '.join(CALIBRATIONS)}, got {method!r}")
    refs = []
    for suspect in reference_suspects:
        matches = match_count(key, suspect)
        refs.append({"identity": str(getattr(suspect, "identity", type(suspect).__name__)), "matches": matches,
                     "queries": len(key), "upper": clopper_pearson_upper(matches, len(key), float(confidence))})
    k, trials = sum(r["matches"] for r in refs), len(key) * len(refs)
    if method == "worst":
        worst = max(refs, key=lambda r: r["upper"])
        bound = worst["upper"]
        source = (f"Clopper-Pearson {confidence:.4g} upper bound of the most-matching of {len(refs)} reference "
                  f"model(s) ({worst['identity']}: {worst['matches']}/{len(key)}; pooled {k}/{trials})")
    else:
        bound = clopper_pearson_upper(k, trials, float(confidence))
        source = (f"Clopper-Pearson {confidence:.4g} upper bound from {len(refs)} reference model(s): "
                  f"{k}/{trials} pooled matches")
    calibration = {"confidence": float(confidence), "method": method, "matches": k, "trials": trials,
                   "references": refs, "previous_null_match_prob": key.null_match_prob,
                   "previous_null_source": key.null_source, "time": _now()}
    return dataclasses.replace(key, null_match_prob=bound, null_source=source,
                               params=dict(key.params, calibration=calibration))
