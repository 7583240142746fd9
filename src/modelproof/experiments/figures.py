"""The report's figures as inline PNG data URIs (matplotlib, Agg backend): robustness curves, ROC
curves and key-sample grids. Nothing is written to disk and nothing is fetched."""

from __future__ import annotations

import base64
import io
from collections import defaultdict
from statistics import mean

import numpy as np

from ..util.errors import ConfigError


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
        fig = _figure(6.0, 4.2)
        ax = fig.subplots()
        for prot, points in by_prot.items():
            xs = sorted(points)
            ax.plot(xs, [mean(points[x]) for x in xs], marker="o", ms=3, label=prot)
        ax.set_xlabel(f"{attack}: {param}")
        ax.set_ylabel("key match rate (mean over seeds)")
        ax.set_ylim(-0.02, 1.02)
        ax.legend(fontsize=9, ncols=2 if len(ax.get_lines()) > 6 else 1, framealpha=0.8)
        out.append((f"{attack} ({param})", data_uri(fig)))
    return out


def roc_figure(curves: dict[str, tuple[list[float], list[float]]]) -> str | None:
    """ROC curves of match rate, positive vs negative suspects, one line per protection."""
    if not curves:
        return None
    fig = _figure(6.0, 4.6)
    ax = fig.subplots()
    for prot, (fpr, tpr) in curves.items():
        ax.step(fpr, tpr, where="post", label=prot)
    ax.plot([0, 1], [0, 1], color="grey", lw=0.6, ls=":")
    ax.set_xlabel("false positive rate (negatives)")
    ax.set_ylabel("true positive rate (plausible positives)")
    ax.legend(fontsize=9, ncols=2 if len(ax.get_lines()) > 6 else 1, framealpha=0.8)
    return data_uri(fig)


def key_grid(preview: dict, cell: int = 48, gap: int = 4) -> str:
    """Key samples (top row) above the nearest owner image of each (bottom row), as one PNG mosaic
    (nearest-neighbour upscaled to ``cell`` pixels; drawn with Pillow, which is fast)."""
    from PIL import Image

    channels, height, width = preview["shape"]
    rows = [np.asarray(preview[k], dtype=np.uint8).reshape(-1, channels, height, width) for k in ("key", "source")]
    n = len(rows[0])
    scale = max(1, cell // max(height, width))
    h, w = height * scale, width * scale
    canvas = np.full((2 * h + 3 * gap, n * w + (n + 1) * gap, 3), 255, dtype=np.uint8)
    for r, images in enumerate(rows):
        for i, image in enumerate(images):
            tile = image.repeat(scale, axis=1).repeat(scale, axis=2).transpose(1, 2, 0)
            y, x = gap + r * (h + gap), gap + i * (w + gap)
            canvas[y:y + h, x:x + w] = tile if channels == 3 else tile.repeat(3, axis=2)
    buffer = io.BytesIO()
    Image.fromarray(canvas).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
