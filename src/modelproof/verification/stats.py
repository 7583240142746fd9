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
from ..keys.nulls import check_counts, check_prob, log_binomial_range
from ..util.errors import ConfigError


def binomial_p_value(matches: int, n: int, p0: float) -> float:
    """One-sided exact p-value P[X >= matches] for X ~ Binomial(n, p0) (the null's upper tail)."""
    return math.exp(_log_p_value(matches, n, p0))


def log10_p_value(matches: int, n: int, p0: float) -> float:
    """log10 of :func:`binomial_p_value`, computed in log space: finite where the p-value underflows to 0."""
    return _log_p_value(matches, n, p0) / math.log(10)


def _log_p_value(matches: int, n: int, p0: float) -> float:
    check_counts(matches, n)
    p0 = check_prob("p0", p0)
    if matches == 0 or p0 == 1.0:
        return 0.0
    if p0 == 0.0:
        return -math.inf
    return log_binomial_range(matches, n, n, p0)


def p_value_text(p_value: float, matches: int, n: int, p0: float) -> str:
    """A p-value for people: ``1.2e-45``, or ``10^-776.3`` where the float underflowed to 0 (a
    report saying "p = 0" would claim what no finite test can)."""
    if p_value > 0.0 or matches == 0 or not 0.0 < p0 < 1.0:
        return f"{p_value:.3g}"
    return f"10^{log10_p_value(matches, n, p0):.1f}"


def decision_threshold(n: int, p0: float, alpha: float) -> int:
    """The smallest match count m with binomial_p_value(m, n, p0) < alpha (n + 1 if none).

    With p0 = 1/2 and alpha = 0.05 this is 59 of 100 and 15 of 20: the frontier-stitching paper's
    tolerated-error thresholds theta = n - m + 1 = 42 and 6, where extraction succeeds iff the
    number of errors is *below* theta (its Algorithm 2).
    """
    check_counts(0, n)
    alpha = check_prob("alpha", alpha, open_low=True, open_high=True)
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
    p0 = check_prob("p0", p0, open_high=True)
    return max(0.9, (1.0 + p0) / 2.0)


# The highest alternative :func:`key_p1` raises to: a suspect that then misses one key input needs about
# log((1 - p0) / (1 - p1)) / log(p1 / p0) further matches to make up for it (24 at p0 0.9).
MAX_KEY_P1 = 0.99
# The share of the boundary log(1/level) a raised alternative keeps in hand when every answer matches.
KEY_P1_SPARE = 0.05


def key_p1(p0: float, n: int, level: float) -> float:
    """The sequential test's alternative for a key of ``n`` inputs tested at ``level``: :func:`default_p1`,
    raised when with it even ``n`` matches of ``n`` could not reach 1/level.

    A key with a high null and few inputs (a conferrable key of 69 at a calibrated null of 0.897) proves
    its model in the fixed test (0.897^69 = 5.6e-4) but not sequentially with p1 0.95: each match then
    adds log(p1/p0) = 0.056, and 1/level needs 4.6. Raised, p1 is the smallest value that lets ``n``
    matches reach the boundary with KEY_P1_SPARE of it in hand, if that is at most MAX_KEY_P1 (else the
    default stays and the key cannot prove sequentially). It depends on the key and the level only and
    is fixed before any answer is seen, so Ville's bound P(ever owned | independent) <= level holds as
    for any fixed p1; the price is that a suspect missing a key input loses more evidence.
    """
    p0 = check_prob("p0", p0, open_high=True)
    p1 = default_p1(p0)
    need = -math.log(check_prob("level", level, open_low=True, open_high=True))
    if p0 == 0.0 or n < 1 or n * (math.log(p1) - math.log(p0)) >= need:
        return p1
    raised = p0 * math.exp((1 + KEY_P1_SPARE) * need / n)
    return raised if raised <= MAX_KEY_P1 else p1


def _log_ratios(p0: float, p1: float | None) -> tuple[float, float, float]:
    """(p1, log(p1/p0), log((1-p1)/(1-p0))), validated; the first is +inf when p0 == 0."""
    p0 = check_prob("null match probability p0", p0, open_high=True)
    p1 = default_p1(p0) if p1 is None else check_prob("p1", p1, open_low=True, open_high=True)
    if p1 <= p0:
        raise ConfigError(f"the alternative match rate p1 must exceed p0 = {p0}, got {p1}")
    up = math.inf if p0 == 0.0 else math.log(p1) - math.log(p0)
    return p1, up, math.log1p(-p1) - math.log1p(-p0)


def log_e_value(matches: int, n: int, p0: float, p1: float | None = None) -> float:
    """log E_n, the log likelihood ratio of p1 against p0 after ``matches`` of ``n`` (see module doc)."""
    check_counts(matches, n)
    _, up, down = _log_ratios(p0, p1)
    return (matches * up if matches else 0.0) + (n - matches) * down


def sequential_decision(matches: int, n: int, p0: float, p1: float | None = None,
                        alpha: float = 0.01, beta: float = 0.05) -> str:
    """"owned" once E_n >= 1/alpha, "not owned" once E_n <= beta, otherwise "continue".

    The owned rule is Ville's: P(ever "owned" | the suspect is independent) <= alpha under
    optional stopping. ``p1`` defaults to :func:`default_p1`; ``beta`` bounds the chance of
    dismissing a suspect that truly matches at rate p1.
    """
    alpha = check_prob("alpha", alpha, open_low=True, open_high=True)
    beta = check_prob("beta", beta, open_low=True, open_high=True)
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
    match_prob = check_prob("match_prob", match_prob)
    alpha = check_prob("alpha", alpha, open_low=True, open_high=True)
    beta = check_prob("beta", beta, open_low=True, open_high=True)
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
