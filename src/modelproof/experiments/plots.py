"""Robustness and uniqueness curves (IPGuard Fig. 2) as PNG files, drawn with matplotlib's Agg backend."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from ..util.errors import ConfigError
from .metrics import aruc, robustness_curve, uniqueness_curve


def plot_curves(methods: Mapping[str, tuple[Sequence[float], Sequence[float]]], path: str | Path, *,
                title: str = "", r: int = 100) -> Path:
    """One panel per method: R(tau) and U(tau) over tau in [0,1], the ARUC area shaded; returns ``path``.

    ``methods`` maps a method's name to (positive matching rates, negative matching rates).
    """
    if not methods:
        raise ConfigError("plot_curves needs at least one method's matching rates")
    try:
        import matplotlib
    except ImportError:
        raise ConfigError("plotting needs matplotlib: pip install 'modelproof[plot]'") from None
    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    taus = np.linspace(0.0, 1.0, 10 * r + 1)
    fig = Figure(figsize=(3.2 * len(methods), 3.2), layout="constrained")
    axes = fig.subplots(1, len(methods), squeeze=False)[0]
    for ax, (name, (pos, neg)) in zip(axes, methods.items()):
        rob, uni = robustness_curve(pos, taus), uniqueness_curve(neg, taus)
        ax.step(taus, rob, where="post", color="tab:blue", label="robustness R")
        ax.step(taus, uni, where="post", color="tab:orange", label="uniqueness U")
        ax.fill_between(taus, np.minimum(rob, uni), step="post", color="tab:green", alpha=0.25)
        ax.set_title(f"{name}\nARUC = {aruc(pos, neg, r):.3f}", fontsize=9)
        ax.set_xlabel("matching-rate threshold")
        ax.set_xlim(0, 1)
        ax.set_ylim(-0.02, 1.05)
    axes[0].set_ylabel("fraction of suspects")
    axes[0].legend(loc="lower left", fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path
