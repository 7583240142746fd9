"""The Student-t prediction bound's guards: monotone where a bound can be, agreeing references, the full-match cap,
and the tail verify is charged for it (checked exactly against scipy's Beta on a skewed population)."""

import math

import numpy as np
import pytest
from scipy import stats

from modelproof.keys.nulls import prediction_upper_bound
from modelproof.references.calibration import DEFAULT_REFERENCES, TAIL, skew_tail


def logit(k: int, n: int) -> float:
    return math.log((k + 0.5) / (n - k + 0.5))


def test_one_more_match_near_zero_never_lowers_the_bound():
    """Issue 22: 23 references at 0/8 and one at 1/8 gave 0.465, below 0.481 for all 24 at 0/8 (sd floor)."""
    assert prediction_upper_bound([0] * 23 + [1], 8, TAIL) >= prediction_upper_bound([0] * 24, 8, TAIL)
    for n in (8, 30, 100):
        agreeing = [prediction_upper_bound([k] * 24, n, TAIL) for k in range(n + 1)]
        assert all(b >= a for a, b in zip(agreeing, agreeing[1:]))  # all at k, then all at k + 1
        assert prediction_upper_bound([0] * 6, n, TAIL) > 0.02  # agreeing references do not prove zero spread


def test_raising_a_count_at_or_above_the_mean_never_lowers_the_bound():
    """Random counts, raise one count by 1 .. 5: the bound never falls when that count is the largest or its
    logit is at or above the references' mean logit (where the t-bound's slope is positive)."""
    rng = np.random.default_rng(22)
    checked = 0
    for _ in range(3000):
        n, r = int(rng.integers(1, 150)), int(rng.integers(3, 30))
        counts = [int(c) for c in rng.binomial(n, rng.beta(*rng.uniform(0.1, 5, 2)), r)]
        i = int(rng.integers(r))
        mean = float(np.mean([logit(k, n) for k in counts]))
        if counts[i] == n or (counts[i] != max(counts) and logit(counts[i], n) < mean):
            continue
        raised = list(counts)
        raised[i] = min(n, counts[i] + int(rng.integers(1, 6)))
        tail = float(rng.choice([1e-4, 1e-3, 0.01]))
        assert prediction_upper_bound(raised, n, tail) >= prediction_upper_bound(counts, n, tail) - 1e-12, \
            (counts, i, raised[i], n, tail)
        checked += 1
    assert checked > 1000


def test_raising_a_low_outlier_can_lower_it_and_only_through_the_spread():
    """The documented exception: a reference far below the others stops being evidence of spread when it
    rises. Whenever a raise lowers the bound, the raised count was below the mean logit and the bound is
    still at least that of the references all at their smallest count."""
    assert prediction_upper_bound([0] + [50] * 23, 100, TAIL) > prediction_upper_bound([10] + [50] * 23, 100, TAIL)
    rng = np.random.default_rng(7)
    for _ in range(2000):
        n, r = int(rng.integers(2, 120)), int(rng.integers(3, 26))
        counts = [int(c) for c in rng.integers(0, n + 1, r)]
        i = int(rng.integers(r))
        if counts[i] == n:
            continue
        raised = list(counts)
        raised[i] += 1
        if prediction_upper_bound(raised, n, TAIL) < prediction_upper_bound(counts, n, TAIL) - 1e-12:
            assert logit(counts[i], n) < float(np.mean([logit(k, n) for k in counts]))
            assert prediction_upper_bound(raised, n, TAIL) >= prediction_upper_bound([min(raised)] * r, n, TAIL) - 1e-12


def test_a_bound_within_half_a_count_of_a_full_match_is_one():
    assert prediction_upper_bound([100] * 24, 100, TAIL) == 1.0
    assert prediction_upper_bound([99] * 23 + [100], 100, TAIL) == 1.0
    assert prediction_upper_bound([50] * 24, 100, TAIL) < 0.995


def test_the_charged_tail_covers_the_skewed_population_exactly():
    """Beta(0.125, 1.125) (mean 0.1, sd 0.2), 24 references, 100 inputs: the population's mass above each
    bound (scipy, exact per draw), averaged over 1,500 draws, exceeds the quantile's 1e-4 but not what verify
    is charged; on the symmetric Beta(12, 12) it holds the quantile's own tail."""
    rng = np.random.default_rng(3)
    charge = skew_tail(DEFAULT_REFERENCES)
    assert 0.002 <= charge <= 0.005 and skew_tail(8) == 0.005 and skew_tail(48) == 0.002
    for (a, b), lo, hi in (((0.125, 1.125), TAIL, charge), ((12.0, 12.0), 0.0, TAIL)):
        bounds = [prediction_upper_bound([int(k) for k in rng.binomial(100, rng.beta(a, b, DEFAULT_REFERENCES))],
                                         100, TAIL) for _ in range(1500)]
        realised = float(np.mean(stats.beta.sf(bounds, a, b)))
        assert lo < realised <= hi, (a, b, realised)
