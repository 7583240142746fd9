"""The statistics of ownership verification, as pure functions.

Under the null hypothesis "the suspect is independent of our model" each key label is matched
with probability ``p0`` (the key's ``null_match_prob``), independently, so the number of matches
among ``n`` answered key inputs is Binomial(n, p0). Everything here is exact arithmetic on that
model (log-space sums of binomial terms, no normal approximations); ``tests/test_stats.py`` checks
it against scipy.

Sequential verification uses a *test martingale*: the likelihood ratio

    E_n = (p1 / p0) ** m * ((1 - p1) / (1 - p0)) ** (n - m)      (m matches in n queries)

between H1 "each label matches with probability p1" and H0 "with probability p0". Under H0 it is
a non-negative martingale with E_0 = 1 (a supermartingale when the true match probability is
below p0), so Ville's inequality gives P(sup_n E_n >= 1/alpha) <= alpha: claiming ownership as
soon as E_n >= 1/alpha keeps the false-claim rate at or below alpha for *any* stopping rule,
including "look after every batch and stop when convenient". Wald's SPRT uses the slightly lower
boundary (1 - beta) / alpha, whose error bound alpha / (1 - beta) exceeds alpha; we use 1/alpha.
Symmetrically, 1/E_n is a martingale under H1, so concluding "not owned" once E_n <= beta wrongly
dismisses a suspect that matches at rate p1 with probability at most beta.
"""

from __future__ import annotations

import math

import torch
from scipy.stats import t as student_t

from ..util.errors import ConfigError


def _check_counts(matches: int, n: int) -> None:
    for name, v in (("matches", matches), ("n", n)):
        if isinstance(v, bool) or not isinstance(v, int):
            raise ConfigError(f"{name} must be an integer, got {v!r}")
    if n < 0 or not 0 <= matches <= n:
        raise ConfigError(f"need 0 <= matches <= n, got matches={matches}, n={n}")


def _check_prob(name: str, p: float, *, open_low: bool = False, open_high: bool = False) -> float:
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not math.isfinite(p):
        raise ConfigError(f"{name} must be a finite number, got {p!r}")
    p = float(p)
    if p < 0 or p > 1 or (open_low and p == 0) or (open_high and p == 1):
        lo, hi = "(" if open_low else "[", ")" if open_high else "]"
        raise ConfigError(f"{name} must lie in {lo}0, 1{hi}, got {p}")
    return p


def _log_pmf(k: int, n: int, log_p: float, log_q: float) -> float:
    return (math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)) + k * log_p + (n - k) * log_q


def _sum_pmf(lo: int, hi: int, n: int, p: float) -> float:
    """P[lo <= X <= hi] for X ~ Binomial(n, p) with 0 < p < 1, summed in log space."""
    if lo > hi:
        return 0.0
    log_p, log_q = math.log(p), math.log1p(-p)
    logs = [_log_pmf(k, n, log_p, log_q) for k in range(lo, hi + 1)]
    top = max(logs)
    return min(1.0, math.exp(top) * math.fsum(math.exp(v - top) for v in logs))


def binomial_p_value(matches: int, n: int, p0: float) -> float:
    """One-sided exact p-value P[X >= matches] for X ~ Binomial(n, p0) (the null's upper tail)."""
    _check_counts(matches, n)
    p0 = _check_prob("p0", p0)
    if matches == 0 or p0 == 1.0:
        return 1.0
    if p0 == 0.0:
        return 0.0
    return _sum_pmf(matches, n, n, p0)


def clopper_pearson_upper(k: int, n: int, confidence: float = 0.99) -> float:
    """One-sided Clopper-Pearson upper confidence bound on a binomial proportion.

    The p with P[Binomial(n, p) <= k] = 1 - confidence (1.0 when k == n), found by bisection
    on the exact lower tail; it equals the Beta(k + 1, n - k) quantile at ``confidence``.
    """
    _check_counts(k, n)
    if n == 0:
        raise ConfigError("a confidence bound needs at least one trial (n >= 1)")
    confidence = _check_prob("confidence", confidence, open_low=True, open_high=True)
    if k == n:
        return 1.0
    target = 1.0 - confidence
    lo, hi = k / n, 1.0  # the lower tail decreases in p; at p = k/n it is >= 1/2 > target
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if mid in (lo, hi):
            break
        if _sum_pmf(0, k, n, mid) > target:
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
    See :mod:`modelproof.calibration` for why this model and what it costs.
    """
    tail = _check_prob("tail", tail, open_low=True, open_high=True)
    if len(counts) < 3:
        raise ConfigError(f"a prediction bound needs at least 3 reference counts, got {len(counts)}")
    for k in counts:
        _check_counts(k, n)
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


def decision_threshold(n: int, p0: float, alpha: float) -> int:
    """The smallest match count m with binomial_p_value(m, n, p0) < alpha (n + 1 if none).

    With p0 = 1/2 and alpha = 0.05 this is 59 of 100 and 15 of 20: the frontier-stitching paper's
    tolerated-error thresholds theta = n - m + 1 = 42 and 6, where extraction succeeds iff the
    number of errors is *below* theta (its Algorithm 2).
    """
    _check_counts(0, n)
    alpha = _check_prob("alpha", alpha, open_low=True, open_high=True)
    lo, hi = 0, n + 1  # p-value is non-increasing in m; find the first m in [0, n] with p < alpha
    while lo < hi:
        mid = (lo + hi) // 2
        if binomial_p_value(mid, n, p0) < alpha:
            hi = mid
        else:
            lo = mid + 1
    return lo


def default_p1(p0: float) -> float:
    """The alternative match rate used when none is given: max(0.9, (1 + p0) / 2).

    0.9 is "a protected model, lightly attacked"; above p0 = 0.8 it moves halfway to 1 so that
    p1 > p0 always holds. It must be set below 1 (a single mismatch would otherwise end the test).
    """
    p0 = _check_prob("p0", p0, open_high=True)
    return max(0.9, (1.0 + p0) / 2.0)


def _log_ratios(p0: float, p1: float | None) -> tuple[float, float, float]:
    """(p1, log(p1/p0), log((1-p1)/(1-p0))), validated; the first is +inf when p0 == 0."""
    p0 = _check_prob("null match probability p0", p0, open_high=True)
    p1 = default_p1(p0) if p1 is None else _check_prob("p1", p1, open_low=True, open_high=True)
    if p1 <= p0:
        raise ConfigError(f"the alternative match rate p1 must exceed p0 = {p0}, got {p1}")
    up = math.inf if p0 == 0.0 else math.log(p1) - math.log(p0)
    return p1, up, math.log1p(-p1) - math.log1p(-p0)


def log_e_value(matches: int, n: int, p0: float, p1: float | None = None) -> float:
    """log E_n, the log likelihood ratio of p1 against p0 after ``matches`` of ``n`` (see module doc)."""
    _check_counts(matches, n)
    _, up, down = _log_ratios(p0, p1)
    return (matches * up if matches else 0.0) + (n - matches) * down


def sequential_decision(matches: int, n: int, p0: float, p1: float | None = None,
                        alpha: float = 0.01, beta: float = 0.05) -> str:
    """"owned" once E_n >= 1/alpha, "not owned" once E_n <= beta, otherwise "continue".

    The owned rule is Ville's: P(ever "owned" | the suspect is independent) <= alpha under
    optional stopping. ``p1`` defaults to :func:`default_p1`; ``beta`` bounds the chance of
    dismissing a suspect that truly matches at rate p1.
    """
    alpha = _check_prob("alpha", alpha, open_low=True, open_high=True)
    beta = _check_prob("beta", beta, open_low=True, open_high=True)
    value = log_e_value(matches, n, p0, p1)
    if value >= -math.log(alpha):
        return "owned"
    if value <= math.log(beta):
        return "not owned"
    return "continue"


def simulate_sequential(match_prob: float, key_size: int, p0: float, *, p1: float | None = None,
                        alpha: float = 0.01, beta: float = 0.05, batch_size: int = 10, runs: int = 10_000,
                        generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Simulate sequential verification of ``runs`` suspects that match each key label with ``match_prob``.

    Each suspect answers the key in batches of ``batch_size`` and the rule of
    :func:`sequential_decision` is applied after every batch, exactly as ``verification.verify``
    does. Returns ``(outcome, queries)``: outcome 1 = "owned", -1 = "not owned" at the lower
    boundary, 0 = key exhausted without crossing either boundary (``verify`` reports "not owned");
    queries = key inputs asked before stopping.
    """
    match_prob = _check_prob("match_prob", match_prob)
    alpha = _check_prob("alpha", alpha, open_low=True, open_high=True)
    beta = _check_prob("beta", beta, open_low=True, open_high=True)
    if key_size < 1 or batch_size < 1 or runs < 1:
        raise ConfigError(f"key_size, batch_size and runs must be >= 1, got {key_size}, {batch_size}, {runs}")
    _, up, down = _log_ratios(p0, p1)
    hits = torch.rand((runs, key_size), generator=generator, dtype=torch.float64) < match_prob
    checks = torch.cat([torch.arange(batch_size, key_size, batch_size), torch.tensor([key_size])])
    m = hits.cumsum(1, dtype=torch.int64)[:, checks - 1].to(torch.float64)
    n = checks.to(torch.float64).expand_as(m)
    up_part = torch.where(m > 0, m * up, torch.zeros_like(m))
    value = up_part + (n - m) * down
    owned, dismissed = value >= -math.log(alpha), value <= math.log(beta)
    crossed = owned | dismissed
    first = crossed.to(torch.int8).argmax(dim=1)
    any_cross = crossed.any(dim=1)
    rows = torch.arange(runs)
    outcome = torch.where(any_cross, torch.where(owned[rows, first], 1, -1), 0)
    queries = torch.where(any_cross, checks[first], key_size)
    return outcome, queries
