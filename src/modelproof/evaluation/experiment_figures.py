"""The report's figures as inline PNG data URIs (matplotlib, Agg backend): robustness curves, ROC
curves and key-sample grids. Nothing is written to disk and nothing is fetched."""

from __future__ import annotations

import base64
import io
from collections import defaultdict
from statistics import mean

import numpy as np

from ..errors import ConfigError


def _figure(width: float, height: float):
    try:
        import matplotlib
    except ImportError:
        raise ConfigError("the experiment report needs matplotlib: pip install 'modelproof[report]'") from None
    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def data_uri(fig) -> str:
    """The figure as a ``data:image/png;base64,...`` URI."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def robustness_curves(rows: list[dict]) -> list[tuple[str, str]]:
    """(title, PNG URI) per swept attack: each protection's mean match rate vs the swept parameter."""
    series: dict[tuple[str, str], dict[str, dict[float, list[float]]]] = defaultdict(lambda: defaultdict(
        lambda: defaultdict(list)))
    for r in rows:
        if r["role"] == "positive" and r["status"] == "ok" and r["strength_param"] != "":
            series[(r["attack"], r["strength_param"])][r["protection"]][float(r["strength"])].append(r["match_rate"])
    out = []
    for (attack, param), by_prot in series.items():
        fig = _figure(4.6, 3.2)
        ax = fig.subplots()
        for prot, points in by_prot.items():
            xs = sorted(points)
            ax.plot(xs, [mean(points[x]) for x in xs], marker="o", ms=3, label=prot)
        ax.set_xlabel(f"{attack}: {param}")
        ax.set_ylabel("key match rate (mean over seeds)")
        ax.set_ylim(-0.02, 1.02)
        ax.legend(fontsize=6, ncols=2)
        out.append((f"{attack} ({param})", data_uri(fig)))
    return out


def roc_figure(curves: dict[str, tuple[list[float], list[float]]]) -> str | None:
    """ROC curves of match rate, positive vs negative suspects, one line per protection."""
    if not curves:
        return None
    fig = _figure(4.6, 3.6)
    ax = fig.subplots()
    for prot, (fpr, tpr) in curves.items():
        ax.step(fpr, tpr, where="post", label=prot)
    ax.plot([0, 1], [0, 1], color="grey", lw=0.6, ls=":")
    ax.set_xlabel("false positive rate (negatives)")
    ax.set_ylabel("true positive rate (plausible positives)")
    ax.legend(fontsize=6, ncols=2)
    return data_uri(fig)


def key_grid(preview: dict) -> str:
    """Key samples (top row) above the nearest owner image of each (bottom row)."""
    shape = preview["shape"]
    keys, sources = np.asarray(preview["key"], dtype=np.uint8), np.asarray(preview["source"], dtype=np.uint8)
    n = len(keys)
    fig = _figure(0.9 * n + 0.4, 2.0)
    axes = fig.subplots(2, n, squeeze=False)
    for row, images in enumerate((keys, sources)):
        for i in range(n):
            img = images[i].transpose(1, 2, 0) if shape[0] == 3 else images[i][0]
            axes[row][i].imshow(img, cmap=None if shape[0] == 3 else "gray", vmin=0, vmax=255)
            axes[row][i].set_xticks([])
            axes[row][i].set_yticks([])
        axes[row][0].set_ylabel(("key", "nearest\nowner")[row], fontsize=7)
    return data_uri(fig)
