"""The null a key carries: bounds on how often an independent model matches it, and its calibration record.

A key's ``null_match_prob`` p0 is an upper bound on the match rate of a model that is independent of
the owner's. This module computes the two bounds keys are made with: the exact one-sided
Clopper-Pearson bound on one model's rate (``clopper_pearson_upper``: an unprotected model's matches
bound the null of a trigger set) and the Student-t prediction bound on the rate of a new model drawn
from a population of references (``prediction_upper_bound``: the calibration of
:mod:`modelproof.references.calibration`). It also reads what a calibration recorded in the key
(``is_calibrated``, ``tail_of``), which verification needs. The exact binomial arithmetic shared with
the tests of :mod:`modelproof.verification.stats` lives here too (``check_counts``, ``check_prob``,
``binomial_range`` and its log, ``log_binomial_range``).
"""

from __future__ import annotations

import math

from scipy.stats import t as student_t

from ..util.errors import ConfigError
from .key import OwnershipKey


def check_counts(matches: int, n: int) -> None:
    for name, v in (("matches", matches), ("n", n)):
        if isinstance(v, bool) or not isinstance(v, int):
            raise ConfigError(f"{name} must be an integer, got {v!r}")
    if n < 0 or not 0 <= matches <= n:
        raise ConfigError(f"need 0 <= matches <= n, got matches={matches}, n={n}")


def check_prob(name: str, p: float, *, open_low: bool = False, open_high: bool = False) -> float:
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not math.isfinite(p):
        raise ConfigError(f"{name} must be a finite number, got {p!r}")
    p = float(p)
    if p < 0 or p > 1 or (open_low and p == 0) or (open_high and p == 1):
        lo, hi = "(" if open_low else "[", ")" if open_high else "]"
        raise ConfigError(f"{name} must lie in {lo}0, 1{hi}, got {p}")
    return p


def _log_pmf(k: int, n: int, log_p: float, log_q: float) -> float:
    return (math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)) + k * log_p + (n - k) * log_q


def binomial_range(lo: int, hi: int, n: int, p: float) -> float:
    """P[lo <= X <= hi] for X ~ Binomial(n, p) with 0 < p < 1, summed in log space."""
    return math.exp(log_binomial_range(lo, hi, n, p))  # the log is capped at 0


def log_binomial_range(lo: int, hi: int, n: int, p: float) -> float:
    """The natural log of P[lo <= X <= hi] for X ~ Binomial(n, p) with 0 < p < 1 (-inf when lo > hi):
    finite where the probability itself is below the smallest float (a 419-input key matched in full at
    a null of 0.014 has log10 p of about -776)."""
    if lo > hi:
        return -math.inf
    log_p, log_q = math.log(p), math.log1p(-p)
    logs = [_log_pmf(k, n, log_p, log_q) for k in range(lo, hi + 1)]
    top = max(logs)
    return min(0.0, top + math.log(math.fsum(math.exp(v - top) for v in logs)))


def clopper_pearson_upper(k: int, n: int, confidence: float = 0.99) -> float:
    """One-sided Clopper-Pearson upper confidence bound on a binomial proportion.

    The p with P[Binomial(n, p) <= k] = 1 - confidence (1.0 when k == n), found by bisection
    on the exact lower tail; it equals the Beta(k + 1, n - k) quantile at ``confidence``.
    """
    check_counts(k, n)
    if n == 0:
        raise ConfigError("a confidence bound needs at least one trial (n >= 1)")
    confidence = check_prob("confidence", confidence, open_low=True, open_high=True)
    if k == n:
        return 1.0
    target = 1.0 - confidence
    lo, hi = k / n, 1.0  # the lower tail decreases in p; at p = k/n it is >= 1/2 > target
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if mid in (lo, hi):
            break
        if binomial_range(0, k, n, mid) > target:
            lo = mid
        else:
            hi = mid
    return hi


def _logit(k: float, n: int) -> float:
    return math.log((k + 0.5) / (n - k + 0.5))


def _agreeing_bound(k: int, n: int, c: float) -> float:
    """The logit bound of references that all match ``k`` of ``n``, made non-decreasing in ``k``.

    Agreeing references do not show that models never differ: their spread is taken as half the logit
    step of one more match, ``z(k) + c * step(k) / 2``. That step shrinks as ``k`` moves from 0 towards
    n/2, so the expression itself can fall when ``k`` rises (n = 8: 0.481 at k = 0, 0.47 at k = 1);
    the running maximum over ``j <= k`` keeps it from falling.
    """
    js = range(0, k + 1)
    return max(_logit(j, n) + c * 0.5 * (_logit(j + 1, n) - _logit(j, n)) if j < n else _logit(j, n) for j in js)


def prediction_upper_bound(counts: list[int], n: int, tail: float) -> float:
    """Upper prediction bound on the match rate of a NEW model drawn from the references' population.

    ``counts`` are the matches of R >= 3 reference models on the same ``n`` key inputs. Each rate is
    mapped to the empirical logit ``z = log((k + 1/2) / (n - k + 1/2))`` and the one-sided Student-t
    prediction bound ``mean + t_{1 - tail, R - 1} * sd * sqrt(1 + 1/R)`` is mapped back. For a normal
    population (of logits) the bound is exceeded by a new draw with probability exactly ``tail``,
    averaged over the references drawn; on skewed populations it is exceeded more often
    (:mod:`modelproof.references.calibration` says by how much and what verify is charged for it).
    The binomial noise in the observed counts is NOT subtracted: it widens the bound (most at small keys
    and small counts), but subtracting it (DerSimonian-Laird) claimed 3.9% of suspects from the skewed
    population Beta(0.125, 1.125), where a cluster of near-zero references is the only hint of the long
    tail.

    Two guards:

    * references that agree (say, every one 0 of 30) do not prove zero spread: the bound is never
      below that of R references all at the smallest count, with half a count's logit step as their
      spread (:func:`_agreeing_bound`, non-decreasing in that count);
    * a bound within half a count of a full match (``>= 1 - 1/(2n)``) is 1: some independent models
      may answer the whole key, and no key of ``n`` inputs can resolve a rate above it. (Such a key
      proves nothing at any alpha below 0.6; at 1 the bound's own tail is 0, not the mass the
      population has above 0.995.)

    Monotonicity: raising the largest count, or any count at or above the mean logit, never lowers
    the bound (the t-bound is convex in the logits and its slope in ``z_i`` is
    ``1/R + c (z_i - mean) / ((R - 1) sd) >= 0`` there; the guards are non-decreasing). Raising a count
    far BELOW the others can lower it: that reference stops being evidence of spread. Any bound that
    widens with the spread the references show has this property (a monotone bound is at most the
    bound of R references all agreeing at the largest count); the two monotone envelopes of this
    bound were measured and rejected: the smallest monotone bound above it (the worst lowering of any
    references) leaves at least 99.9% of keys unable to prove anything on 14 of the 15 populations of
    ``benchmarks/false_claims.py``, the largest monotone bound below it (the low references raised to
    a common level) leaves a realised tail of 0.01-0.04 instead of 1e-4. A bound monotone in every
    count that shifts with the logits is at most the largest logit plus a constant; the constant
    that holds 1e-4 on those populations (4.1) refuses 30-100% of the keys where this bound refuses none.
    """
    tail = check_prob("tail", tail, open_low=True, open_high=True)
    if len(counts) < 3:
        raise ConfigError(f"a prediction bound needs at least 3 reference counts, got {len(counts)}")
    for k in counts:
        check_counts(k, n)
    if n < 1:
        raise ConfigError("a prediction bound needs at least one key input (n >= 1)")
    z = [_logit(k, n) for k in counts]
    r = len(z)
    mean = math.fsum(z) / r
    sd = math.sqrt(math.fsum((v - mean) ** 2 for v in z) / (r - 1))
    c = float(student_t.ppf(1.0 - tail, r - 1)) * math.sqrt(1.0 + 1.0 / r)
    upper = max(mean + c * sd, _agreeing_bound(min(counts), n, c))
    bound = 1.0 / (1.0 + math.exp(-upper)) if upper > -700 else 0.0
    return 1.0 if bound >= 1.0 - 0.5 / n else bound


def is_calibrated(key: OwnershipKey) -> bool:
    """Whether the key's null was estimated from reference models."""
    return isinstance(key.params.get("calibration"), dict)


def tail_of(key: OwnershipKey) -> float:
    """The probability mass the key's bounds leave above them (0 for keys bounded no such way): the
    calibration's tail plus, for a new-label key bounded on other owners' models, that bound's tail."""
    tail = 0.0
    for field_ in ("calibration", "foreign_owners"):
        entry = key.params.get(field_)
        tail += float(entry.get("tail", 0.0)) if isinstance(entry, dict) else 0.0
    return tail
