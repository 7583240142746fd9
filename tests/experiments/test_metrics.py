"""Matching rate, robustness / uniqueness curves and ARUC (IPGuard Eq. 7) on hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from modelproof.util.errors import ConfigError
from modelproof.experiments.metrics import (
    aruc, auc, matching_rate, robustness_curve, separation_gap, thresholds, uniqueness_curve,
)


def test_matching_rate():
    assert matching_rate(torch.tensor([1, 2, 3, 4]), torch.tensor([1, 0, 3, 0])) == 0.5
    assert matching_rate([7] * 3, [7] * 3) == 1.0
    with pytest.raises(ConfigError, match="equal length"):
        matching_rate([1, 2], [1])


def test_thresholds_are_the_right_ends_of_r_intervals():
    assert thresholds(4).tolist() == [0.25, 0.5, 0.75, 1.0]
    assert len(thresholds()) == 100 and thresholds()[0] == 0.01
    with pytest.raises(ConfigError, match="r must be"):
        thresholds(0)


def test_curves_by_hand():
    taus = [0.0, 0.25, 0.5, 0.75, 1.0]
    # robustness: fraction of positives with rate >= tau
    assert robustness_curve([1.0, 0.5, 0.2], taus).tolist() == pytest.approx([1, 2 / 3, 2 / 3, 1 / 3, 1 / 3])
    # uniqueness: fraction of negatives with rate < tau
    assert uniqueness_curve([0.0, 0.5], taus).tolist() == [0.0, 0.5, 0.5, 1.0, 1.0]


def test_rate_equal_to_threshold_counts_as_verified():
    assert robustness_curve([0.07], [7 / 100]).tolist() == [1.0]
    assert robustness_curve([0.1 + 0.2 - 0.3 + 0.07], [0.07]).tolist() == [1.0]  # float slack
    assert uniqueness_curve([0.07], [0.07]).tolist() == [0.0]


def test_aruc_hand_computed_cases():
    # perfect separation: R = 1 for every tau <= 1, U = 1 for every tau > 0
    assert aruc([1.0, 1.0], [0.0, 0.0]) == 1.0
    # identical rates: R = 1 only for tau <= 0.5, U = 1 only for tau > 0.5 -> min is 0 everywhere
    assert aruc([0.5], [0.5]) == 0.0
    # one positive at 0.8, one negative at 0.2: min = 1 for tau in (0.2, 0.8], i.e. 60 of 100 thresholds
    assert aruc([0.8], [0.2]) == pytest.approx(0.60)
    # r = 4: taus 0.25, 0.5, 0.75, 1; R = [1, 1, 1, 0], U = [1, 1, 1, 1] -> 3/4
    assert aruc([0.8], [0.2], r=4) == pytest.approx(0.75)
    # a mixed case: 55 thresholds at 1, then partial plateaus (worked out in metrics' docs) -> 0.82
    assert aruc([1, 0.98, 0.9, 0.85], [0.0, 0.05, 0.1, 0.3]) == pytest.approx(0.82)
    # reversed: positives below negatives -> no threshold makes both large
    assert aruc([0.1], [0.9]) == 0.0


def test_aruc_is_symmetric_in_the_order_of_suspects():
    rng = np.random.default_rng(0)
    pos, neg = rng.uniform(0.6, 1, 15), rng.uniform(0, 0.5, 30)
    assert aruc(pos, neg) == aruc(pos[::-1], neg[::-1])


def test_auc_and_gap():
    assert auc([0.9, 0.8], [0.1, 0.2]) == 1.0
    assert auc([0.5], [0.5]) == 0.5
    assert separation_gap([0.9, 0.8], [0.1, 0.3]) == pytest.approx(0.5)
    assert separation_gap([0.2], [0.3]) == pytest.approx(-0.1)


def test_bad_rates():
    with pytest.raises(ConfigError, match="positive suspects"):
        aruc([], [0.1])
    with pytest.raises(ConfigError, match=r"\[0, 1\]"):
        aruc([1.2], [0.1])


def test_plot_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    from modelproof.experiments.plots import plot_curves

    path = plot_curves({"IPGuard": ([1.0, 0.9], [0.0, 0.1]), "FGSM": ([0.7, 0.5], [0.6, 0.2])},
                       tmp_path / "curves.png", title="test")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000
    with pytest.raises(ConfigError, match="at least one"):
        plot_curves({}, tmp_path / "none.png")
