"""The statistics against scipy, the frontier-stitching thresholds, and the sequential test by simulation."""

from fractions import Fraction
import math

import pytest
import torch
from scipy.stats import beta as beta_dist
from scipy.stats import binom, binomtest

from modelproof.util.errors import ConfigError
from modelproof.verification.stats import (
    MAX_KEY_P1, binomial_p_value, decision_threshold, default_p1, key_p1, log10_p_value, log_e_value, p_value_text,
    sequential_decision, simulate_sequential,
)
from modelproof.keys.nulls import clopper_pearson_upper

P0S = (0.0, 1e-3, 0.1, 1 / 3, 0.5, 0.9, 0.999, 1.0)


@pytest.mark.parametrize("n", [0, 1, 2, 5, 20, 100, 257, 1000])
@pytest.mark.parametrize("p0", P0S)
def test_binomial_p_value_matches_scipy(n, p0):
    for k in sorted({0, 1, n // 3, n // 2, (2 * n) // 3, n - 1, n} - {-1}):
        if not 0 <= k <= n:
            continue
        want = float(binom.sf(k - 1, n, p0))
        got = binomial_p_value(k, n, p0)
        assert got == pytest.approx(want, rel=1e-9, abs=1e-300), (k, n, p0)
        if n and 0 < p0 < 1:
            assert got == pytest.approx(binomtest(k, n, p0, alternative="greater").pvalue, rel=1e-9, abs=1e-300)


def test_binomial_edge_cases():
    assert binomial_p_value(0, 10, 0.3) == 1.0      # nothing is evidence of nothing
    assert binomial_p_value(5, 10, 0.0) == 0.0      # a match is impossible under p0 = 0
    assert binomial_p_value(10, 10, 1.0) == 1.0     # every model matches under p0 = 1
    assert binomial_p_value(10, 10, 0.5) == 0.5 ** 10
    assert binomial_p_value(0, 0, 0.5) == 1.0


@pytest.mark.parametrize("k, n, p0", [(1, 1, 0.5), (30, 100, 0.1), (419, 419, 0.014), (400, 1000, 0.05),
                                      (5, 10, 0.999), (2000, 2000, 0.3)])
def test_log10_p_value_matches_an_exact_sum_where_the_p_value_underflows(k, n, p0):
    # exact reference: the tail summed in rationals (scipy's logsf underflows to -inf there too)
    q = Fraction(p0)
    tail = sum(math.comb(n, j) * q ** j * (1 - q) ** (n - j) for j in range(k, n + 1))
    want = math.log10(tail.numerator) - math.log10(tail.denominator)
    got = log10_p_value(k, n, p0)
    assert math.isfinite(got) and got == pytest.approx(want, rel=1e-9, abs=1e-9), (k, n, p0, want)
    p = binomial_p_value(k, n, p0)
    text = p_value_text(p, k, n, p0)
    if p > 0:
        assert text == f"{p:.3g}" and got == pytest.approx(math.log10(p), rel=1e-9, abs=1e-9)
    else:  # below the smallest float: the report gives the exponent, never "p = 0"
        assert text == f"10^{want:.1f}" and want < -300


def test_log10_p_value_edge_cases():
    assert log10_p_value(0, 10, 0.3) == 0.0 and log10_p_value(10, 10, 1.0) == 0.0
    assert log10_p_value(5, 10, 0.0) == -math.inf and p_value_text(0.0, 5, 10, 0.0) == "0"
    with pytest.raises(ConfigError):
        log10_p_value(11, 10, 0.5)


@pytest.mark.parametrize("bad", [(-1, 10, 0.5), (11, 10, 0.5), (3, 10, 1.5), (3, 10, -0.1), (3, 10, math.nan),
                                 (2.0, 10, 0.5), (True, 10, 0.5)])
def test_binomial_rejects_bad_arguments(bad):
    with pytest.raises(ConfigError):
        binomial_p_value(*bad)


@pytest.mark.parametrize("n", [1, 5, 20, 100, 600])
@pytest.mark.parametrize("confidence", [0.9, 0.95, 0.99, 0.999])
def test_clopper_pearson_upper_matches_scipy(n, confidence):
    for k in sorted({0, 1, n // 4, n // 2, n - 1} - {n}):
        want = float(beta_dist.ppf(confidence, k + 1, n - k))
        assert clopper_pearson_upper(k, n, confidence) == pytest.approx(want, rel=1e-9, abs=1e-12), (k, n)
    assert clopper_pearson_upper(n, n, confidence) == 1.0
    # one-sided at c is the upper end of scipy's two-sided exact interval at 2c - 1
    k = n // 2
    two_sided = binomtest(k, n).proportion_ci(confidence_level=2 * confidence - 1, method="exact").high
    assert clopper_pearson_upper(k, n, confidence) == pytest.approx(two_sided, rel=1e-8)


def test_clopper_pearson_rejects_bad_arguments():
    for args in ((0, 0, 0.9), (3, 10, 1.0), (3, 10, 0.0), (11, 10, 0.9)):
        with pytest.raises(ConfigError):
            clopper_pearson_upper(*args)


def test_paper_thresholds_frontier_stitching():
    # Le Merrer et al. section 3: p0 = 1/2, p-value 0.05; extraction succeeds iff errors < theta,
    # theta = 42 for |K| = 100 and 6 for |K| = 20 (their Algorithm 2).
    for n, theta in ((100, 42), (20, 6)):
        m = decision_threshold(n, 0.5, 0.05)
        assert n - m + 1 == theta
        assert binomial_p_value(m, n, 0.5) < 0.05 <= binomial_p_value(m - 1, n, 0.5)
    assert decision_threshold(100, 0.5, 0.05) == 59 and decision_threshold(20, 0.5, 0.05) == 15


def test_decision_threshold_is_minimal_everywhere():
    for n in (1, 7, 50, 200):
        for p0 in (0.0, 0.1, 0.5, 0.8, 1.0):
            for alpha in (0.001, 0.01, 0.05):
                m = decision_threshold(n, p0, alpha)
                if m <= n:
                    assert binomial_p_value(m, n, p0) < alpha
                if 0 < m <= n + 1 and m - 1 <= n:
                    assert binomial_p_value(m - 1, n, p0) >= alpha
    assert decision_threshold(100, 1.0, 0.05) == 101  # a null every model meets can never be rejected


def test_sequential_decision_boundaries():
    # p0 = 0.5, p1 = 0.9: each match multiplies E by 1.8, each miss by 0.2
    assert sequential_decision(0, 0, 0.5) == "continue"
    assert sequential_decision(8, 8, 0.5, 0.9, alpha=0.01) == "owned"           # 1.8**8 = 110 >= 100
    assert sequential_decision(7, 7, 0.5, 0.9, alpha=0.01) == "continue"        # 1.8**7 = 61
    assert sequential_decision(0, 2, 0.5, 0.9, beta=0.05) == "not owned"        # 0.04 <= 0.05
    assert sequential_decision(1, 1, 0.0, 0.9) == "owned"                       # impossible under the null
    assert log_e_value(3, 5, 0.5, 0.9) == pytest.approx(3 * math.log(1.8) + 2 * math.log(0.2))
    assert default_p1(0.1) == 0.9 and default_p1(0.5) == 0.9 and default_p1(0.9) == pytest.approx(0.95)
    for bad in (dict(p1=0.4), dict(p1=1.0), dict(alpha=0.0), dict(beta=1.0)):
        with pytest.raises(ConfigError):
            sequential_decision(3, 5, 0.5, **{"p1": None, **bad})
    with pytest.raises(ConfigError):
        sequential_decision(3, 5, 1.0)


def test_simulation_applies_the_same_rule_as_sequential_decision():
    gen = torch.Generator().manual_seed(7)
    outcome, queries = simulate_sequential(0.7, 60, 0.5, p1=0.8, alpha=0.05, beta=0.1, batch_size=7, runs=300,
                                           generator=gen)
    hits = torch.rand((300, 60), generator=torch.Generator().manual_seed(7), dtype=torch.float64) < 0.7
    for r in range(300):
        state, asked = "continue", 0
        for start in range(0, 60, 7):
            asked = min(start + 7, 60)
            state = sequential_decision(int(hits[r, :asked].sum()), asked, 0.5, 0.8, 0.05, 0.1)
            if state != "continue":
                break
        assert {"owned": 1, "not owned": -1, "continue": 0}[state] == int(outcome[r]) and asked == int(queries[r])


@pytest.mark.parametrize("p0,key_size,batch_size", [(0.1, 100, 10), (0.5, 100, 1), (0.5, 1000, 5), (0.8, 400, 1)])
def test_sequential_false_claim_rate_at_most_alpha(p0, key_size, batch_size):
    """20,000 independent suspects matching with probability exactly p0, stopping whenever the rule says."""
    alpha, runs = 0.01, 20_000
    outcome, _ = simulate_sequential(p0, key_size, p0, alpha=alpha, batch_size=batch_size, runs=runs,
                                     generator=torch.Generator().manual_seed(int(p0 * 1000) + key_size))
    rate = float((outcome == 1).double().mean())
    assert rate <= alpha + 3 * math.sqrt(alpha * (1 - alpha) / runs), rate


def test_key_p1_is_the_default_unless_the_key_is_too_small_for_it():
    assert key_p1(0.5, 100, 0.01) == default_p1(0.5) and key_p1(0.0, 5, 0.01) == default_p1(0.0)
    # Keras CNN conferrable key (6 Dec): 69 inputs at a calibrated null of 0.897, tested at 0.009
    need, p1 = -math.log(0.009), key_p1(0.897, 69, 0.009)
    assert default_p1(0.897) < p1 <= MAX_KEY_P1
    assert log_e_value(69, 69, 0.897, default_p1(0.897)) < need <= log_e_value(69, 69, 0.897, p1)
    assert log_e_value(69, 69, 0.897, p1) < 1.1 * need  # the smallest such p1, with 5% to spare
    assert log_e_value(68, 69, 0.897, p1) < need  # one miss: this key can no longer claim
    assert key_p1(0.97, 20, 0.01) == default_p1(0.97)  # it would need p1 above 0.99: unchanged, cannot prove


@pytest.mark.parametrize("p0,key_size", [(0.897, 69), (0.6, 10), (0.8, 25)])
def test_sequential_false_claim_rate_at_most_alpha_with_a_raised_p1(p0, key_size):
    """Keys too small for the default alternative: the raised p1 is fixed before any answer, Ville still holds."""
    alpha, runs = 0.01, 40_000
    p1 = key_p1(p0, key_size, alpha)
    assert p1 > default_p1(p0)
    outcome, _ = simulate_sequential(p0, key_size, p0, p1=p1, alpha=alpha, runs=runs,
                                     generator=torch.Generator().manual_seed(key_size))
    rate = float((outcome == 1).double().mean())
    assert rate <= alpha + 3 * math.sqrt(alpha * (1 - alpha) / runs), rate
    owned, _ = simulate_sequential(1.0, key_size, p0, p1=p1, alpha=alpha, runs=10)
    assert bool((owned == 1).all())  # while a suspect answering every key input is owned


def test_naive_repeated_testing_would_break_the_bound():
    """The simulation is sharp enough to see the failure it guards against: re-testing the fixed p-value
    after every query and stopping at the first p < alpha claims far more often than alpha."""
    alpha, n, runs = 0.05, 300, 20_000
    hits = torch.rand((runs, n), generator=torch.Generator().manual_seed(3)) < 0.5
    need = torch.tensor([decision_threshold(t, 0.5, alpha) for t in range(1, n + 1)])
    naive = (hits.cumsum(1) >= need).any(1).double().mean()
    assert naive > 2 * alpha
    outcome, _ = simulate_sequential(0.5, n, 0.5, alpha=alpha, batch_size=1, runs=runs,
                                     generator=torch.Generator().manual_seed(3))
    assert float((outcome == 1).double().mean()) <= alpha


@pytest.mark.parametrize("p0", [0.1, 0.5])
def test_owned_suspect_decided_with_far_fewer_queries(p0):
    outcome, queries = simulate_sequential(0.95, 100, p0, alpha=0.01, batch_size=1, runs=10_000,
                                           generator=torch.Generator().manual_seed(11))
    assert float((outcome == 1).double().mean()) > 0.99
    assert float(queries[outcome == 1].double().mean()) < (10 if p0 == 0.1 else 25)
