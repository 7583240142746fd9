"""Fingerprint metrics as pure functions: matching rate, robustness and uniqueness curves, ARUC.

IPGuard §5.1.5: the *matching rate* of a suspect is the fraction of fingerprint points whose label
it predicts as the target did. At threshold tau a suspect is verified when its matching rate is
>= tau; *robustness* R(tau) is the fraction of positive suspects verified, *uniqueness* U(tau) the
fraction of negative suspects not verified. ARUC (Eq. 7) is the area under min(R, U) over [0,1],
with [0,1] cut into r intervals each represented by its rightmost point:

    ARUC = (1/r) * sum_{tau'=1..r} min(R(tau'/r), U(tau'/r)),   r = 100 in the paper.

Matching rates are ratios m/n; comparisons with tau allow 1e-9 of float slack so that a rate of
exactly 7/100 counts as >= 0.07 however it was computed.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ..util.errors import ConfigError

TOLERANCE = 1e-9


def matching_rate(expected: torch.Tensor | Sequence[int], answered: torch.Tensor | Sequence[int]) -> float:
    """Fraction of positions where ``answered`` equals ``expected`` (the fingerprint's labels)."""
    a = torch.as_tensor(expected).flatten()
    b = torch.as_tensor(answered).flatten()
    if a.shape != b.shape or a.numel() == 0:
        raise ConfigError(f"need two non-empty label vectors of equal length, got {a.numel()} and {b.numel()}")
    return float((a == b).double().mean())


def _rates(name: str, rates: Sequence[float] | np.ndarray) -> np.ndarray:
    arr = np.asarray(rates, dtype=np.float64).reshape(-1)
    if arr.size == 0:
        raise ConfigError(f"{name}: need at least one matching rate")
    if not np.all(np.isfinite(arr)) or arr.min() < 0 or arr.max() > 1:
        raise ConfigError(f"{name}: matching rates must lie in [0, 1], got {arr.tolist()}")
    return arr


def thresholds(r: int = 100) -> np.ndarray:
    """The r thresholds 1/r, 2/r, ..., 1 of Eq. 7."""
    if isinstance(r, bool) or not isinstance(r, int) or r < 1:
        raise ConfigError(f"r must be an integer >= 1, got {r!r}")
    return np.arange(1, r + 1, dtype=np.float64) / r


def robustness_curve(positive: Sequence[float], taus: Sequence[float] | np.ndarray) -> np.ndarray:
    """R(tau): fraction of positive suspects whose matching rate is >= tau, for each tau."""
    pos = _rates("positive suspects", positive)
    t = np.asarray(taus, dtype=np.float64)
    return (pos[None, :] >= t[:, None] - TOLERANCE).mean(axis=1)


def uniqueness_curve(negative: Sequence[float], taus: Sequence[float] | np.ndarray) -> np.ndarray:
    """U(tau): fraction of negative suspects whose matching rate is < tau, for each tau."""
    neg = _rates("negative suspects", negative)
    t = np.asarray(taus, dtype=np.float64)
    return (neg[None, :] < t[:, None] - TOLERANCE).mean(axis=1)


def aruc(positive: Sequence[float], negative: Sequence[float], r: int = 100) -> float:
    """Area under the robustness-uniqueness curves (IPGuard Eq. 7) with ``r`` intervals."""
    taus = thresholds(r)
    return float(np.minimum(robustness_curve(positive, taus), uniqueness_curve(negative, taus)).mean())


def auc(positive: Sequence[float], negative: Sequence[float]) -> float:
    """Probability that a random positive outranks a random negative (ties count 1/2), for comparison."""
    pos, neg = _rates("positive suspects", positive), _rates("negative suspects", negative)
    diff = pos[:, None] - neg[None, :]
    return float(((diff > TOLERANCE) + 0.5 * (np.abs(diff) <= TOLERANCE)).mean())


def separation_gap(positive: Sequence[float], negative: Sequence[float]) -> float:
    """Smallest positive matching rate minus the largest negative one (§5.2; negative: overlap)."""
    return float(_rates("positive suspects", positive).min() - _rates("negative suspects", negative).max())
