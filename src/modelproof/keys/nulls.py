"""The null a key carries: bounds on how often an independent model matches it, and its calibration record.

A key's ``null_match_prob`` p0 is an upper bound on the match rate of a model that is independent of
the owner's. This module computes the two bounds keys are made with: the exact one-sided
Clopper-Pearson bound on one model's rate (``clopper_pearson_upper``: an unprotected model's matches
bound the null of a trigger set) and the Student-t prediction bound on the rate of a new model drawn
from a population of references (``prediction_upper_bound``: the calibration of
:mod:`modelproof.references.calibration`). It also reads what a calibration recorded in the key
(``is_calibrated``, ``tail_of``), which verification needs. The exact binomial arithmetic shared with
the tests of :mod:`modelproof.verification.stats` lives here too (``check_counts``, ``check_prob``,
``binomial_range``).
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
    if lo > hi:
        return 0.0
    log_p, log_q = math.log(p), math.log1p(-p)
    logs = [_log_pmf(k, n, log_p, log_q) for k in range(lo, hi + 1)]
    top = max(logs)
    return min(1.0, math.exp(top) * math.fsum(math.exp(v - top) for v in logs))


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


def prediction_upper_bound(counts: list[int], n: int, tail: float) -> float:
    """Upper prediction bound on the match rate of a NEW model drawn from the references' population.

    ``counts`` are the matches of R >= 3 reference models on the same ``n`` key inputs. Each rate is
    mapped to the empirical logit ``log((k + 1/2) / (n - k + 1/2))`` and the one-sided Student-t
    prediction bound ``mean + t_{1 - tail, R - 1} * sd * sqrt(1 + 1/R)`` is mapped back. For a normal
    population (of logits) the bound is exceeded by a new draw with probability exactly ``tail``,
    averaged over the references drawn. The binomial noise in the observed counts is NOT subtracted:
    it widens the bound (most at small keys and small counts), but subtracting it (DerSimonian-Laird)
    claimed 3.9% of suspects from the skewed population Beta(0.125, 1.125), where a cluster of
    near-zero references is the only hint of the long tail. The spread is floored at half a count's
    step (references that all agree do not prove zero spread).
    See :mod:`modelproof.references.calibration` for why this model and what it costs.
    """
    tail = check_prob("tail", tail, open_low=True, open_high=True)
    if len(counts) < 3:
        raise ConfigError(f"a prediction bound needs at least 3 reference counts, got {len(counts)}")
    for k in counts:
        check_counts(k, n)
    if n < 1:
        raise ConfigError("a prediction bound needs at least one key input (n >= 1)")
    z = [math.log((k + 0.5) / (n - k + 0.5)) for k in counts]
    r = len(z)
    mean = math.fsum(z) / r
    sd = math.sqrt(math.fsum((v - mean) ** 2 for v in z) / (r - 1))
    # References that all agree (say, every one 0 of 30) do not show that models never differ: the
    # spread is floored at half the logit step of one more match at the mean count.
    k_mean = min(max(sum(counts) / r, 0.0), n - 1.0)
    step = math.log((k_mean + 1.5) / (n - k_mean - 0.5)) - math.log((k_mean + 0.5) / (n - k_mean + 0.5))
    sd = max(sd, 0.5 * step)
    upper = mean + float(student_t.ppf(1.0 - tail, r - 1)) * sd * math.sqrt(1.0 + 1.0 / r)
    return 1.0 / (1.0 + math.exp(-upper)) if upper > -700 else 0.0


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
