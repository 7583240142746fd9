"""Non-neural reference models stored as plain arrays: forests, linear and kernel models, nearest neighbours.

scikit-learn fits them; what is kept is only arrays (a safetensors file, never a pickle), and
:class:`ArrayModel` answers labels from those arrays with numpy alone, so a population folder is
safe to load and a second ``protect`` refits nothing. The kinds:

- ``random-forest`` / ``extra-trees``: every tree's nodes (children, feature, threshold, class
  fractions); a tree is walked for all images at once, the class fractions averaged over the trees
  and the argmax taken, as scikit-learn's ``predict`` does;
- ``logistic``: multinomial logistic regression on the pixels (weights and bias);
- ``rbf-kernel``: an RBF-kernel classifier, random Fourier features (Rahimi & Recht) with a logistic
  head (the features' weights and offsets plus the head), which stands for an RBF-SVM at a cost that
  does not grow with the square of the training set;
- ``knn``: k nearest neighbours (k = 3) over a seeded subsample of the training images.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..data.splits import Dataset
from ..util.errors import ConfigError, ModelFileError
from ..util.files import atomic_write_bytes

ESTIMATOR_KINDS = ("random-forest", "extra-trees", "logistic", "rbf-kernel", "knn")
META_KEY = "modelproof-estimator"
MAX_FIT = {"random-forest": 20000, "extra-trees": 20000, "logistic": 10000, "rbf-kernel": 10000, "knn": 5000}


@dataclass
class ArrayModel:
    """A fitted non-neural classifier as arrays; ``predict(images)`` answers int64 labels."""

    kind: str
    arrays: dict[str, np.ndarray]
    input_shape: tuple[int, int, int]
    num_classes: int
    identity: str = ""
    meta: dict = field(default_factory=dict)

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """Labels for ``images`` (NCHW in [0, 1]) from the stored arrays."""
        x = images.detach().cpu().reshape(len(images), -1).numpy().astype(np.float32)
        if self.kind in ("random-forest", "extra-trees"):
            scores = _forest_scores(self.arrays, x)
        elif self.kind == "knn":
            scores = _knn_scores(self.arrays, x, self.num_classes)
        else:
            if self.kind == "rbf-kernel":
                x = np.cos(x @ self.arrays["rff_weights"] + self.arrays["rff_offsets"]) * self.arrays["rff_scale"]
            scores = x @ self.arrays["coef"].T + self.arrays["intercept"]
        return torch.from_numpy(self.arrays["classes"][np.argmax(scores, axis=1)].astype(np.int64))

    def digest(self) -> str:
        """SHA-256 over the kind and the arrays (names, dtypes, shapes, bytes), like a torch model's weights digest."""
        h = hashlib.sha256(self.kind.encode())
        for name in sorted(self.arrays):
            a = np.ascontiguousarray(self.arrays[name])
            h.update(f"|{name}|{a.dtype}|{a.shape}|".encode())
            h.update(a.tobytes())
        return h.hexdigest()


def _forest_scores(arrays: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    offsets, left, right = arrays["tree_offsets"], arrays["left"], arrays["right"]
    feature, threshold, value = arrays["feature"], arrays["threshold"], arrays["value"]
    scores = np.zeros((len(x), value.shape[1]), dtype=np.float64)
    rows = np.arange(len(x))
    for t in range(len(offsets) - 1):
        node = np.full(len(x), offsets[t], dtype=np.int64)
        while True:
            inner = left[node] >= 0
            if not inner.any():
                break
            go_left = x[rows, np.maximum(feature[node], 0)] <= threshold[node]
            node = np.where(inner, np.where(go_left, left[node], right[node]), node)
        scores += value[node]
    return scores


def _knn_scores(arrays: dict[str, np.ndarray], x: np.ndarray, num_classes: int, k: int = 3) -> np.ndarray:
    bank, labels = torch.from_numpy(arrays["bank"]), arrays["bank_labels"]
    scores = np.zeros((len(x), num_classes), dtype=np.float64)
    for start in range(0, len(x), 512):
        dist = torch.cdist(torch.from_numpy(x[start:start + 512]), bank)
        near = dist.topk(k, largest=False).indices.numpy()
        for j in range(k):  # nearer neighbours break ties: weights 1 + tiny decreasing extra
            np.add.at(scores[start:start + 512], (np.arange(len(near)), labels[near[:, j]]), 1.0 + 1e-6 * (k - j))
    return scores


def _subsample(data: Dataset, limit: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    x = data.images.reshape(len(data), -1).numpy().astype(np.float32)
    y = data.labels.numpy()
    if len(x) > limit:
        idx = np.sort(np.random.default_rng(seed).choice(len(x), limit, replace=False))
        x, y = x[idx], y[idx]
    return x, y


def fit_estimator(kind: str, data: Dataset, seed: int) -> ArrayModel:
    """Fit a ``kind`` of :data:`ESTIMATOR_KINDS` on a seeded subsample of ``data`` (at most 80% of it, and at
    most ``MAX_FIT[kind]`` images); deterministic in ``seed``."""
    if kind not in ESTIMATOR_KINDS:
        raise ConfigError(f"unknown reference estimator {kind!r}; expected one of {', '.join(ESTIMATOR_KINDS)}")
    x, y = _subsample(data, min(MAX_FIT[kind], int(0.8 * len(data))), seed)  # members of one kind differ
    arrays: dict[str, np.ndarray]
    if kind in ("random-forest", "extra-trees"):
        from sklearn.ensemble import ExtraTreesClassifier, RandomForestClassifier

        cls = RandomForestClassifier if kind == "random-forest" else ExtraTreesClassifier
        forest = cls(n_estimators=20, random_state=seed).fit(x, y)
        arrays = _forest_arrays(forest)
        arrays["classes"] = forest.classes_.astype(np.int64)
    elif kind == "knn":
        arrays = {"bank": x, "bank_labels": y.astype(np.int64), "classes": np.arange(data.num_classes, dtype=np.int64)}
    else:
        from sklearn.linear_model import LogisticRegression

        if kind == "rbf-kernel":
            rng = np.random.default_rng(seed)
            gamma = 1.0 / (x.shape[1] * max(float(x.var()), 1e-6))  # scikit-learn's gamma="scale"
            width = 2000
            arrays = {"rff_weights": (rng.standard_normal((x.shape[1], width)) * np.sqrt(2 * gamma)).astype(np.float32),
                      "rff_offsets": rng.uniform(0, 2 * np.pi, width).astype(np.float32),
                      "rff_scale": np.array(np.sqrt(2.0 / width), dtype=np.float32)}
            x = np.cos(x @ arrays["rff_weights"] + arrays["rff_offsets"]) * arrays["rff_scale"]
        else:
            arrays = {}
        head = LogisticRegression(C=1.0 if kind == "logistic" else 10.0, max_iter=300, random_state=seed).fit(x, y)
        arrays.update(coef=head.coef_.astype(np.float32), intercept=head.intercept_.astype(np.float32),
                      classes=head.classes_.astype(np.int64))
    return ArrayModel(kind, arrays, tuple(data.input_shape), data.num_classes)  # type: ignore[arg-type]


def _forest_arrays(forest) -> dict[str, np.ndarray]:
    parts: dict[str, list[np.ndarray]] = {"left": [], "right": [], "feature": [], "threshold": [], "value": []}
    offsets = [0]
    for est in forest.estimators_:
        tree, base = est.tree_, offsets[-1]
        leaf = tree.children_left < 0
        parts["left"].append(np.where(leaf, -1, tree.children_left + base))
        parts["right"].append(np.where(leaf, -1, tree.children_right + base))
        parts["feature"].append(tree.feature)
        parts["threshold"].append(tree.threshold.astype(np.float32))
        value = tree.value[:, 0, :].astype(np.float64)
        parts["value"].append(value / np.maximum(value.sum(axis=1, keepdims=True), 1e-12))
        offsets.append(base + tree.node_count)
    out = {k: np.concatenate(v) for k, v in parts.items()}
    out["left"], out["right"], out["feature"] = (out[k].astype(np.int64) for k in ("left", "right", "feature"))
    out["tree_offsets"] = np.asarray(offsets, dtype=np.int64)
    return out


def save_estimator(model: ArrayModel, path: str | Path) -> Path:
    """Write ``model``'s arrays and record to one safetensors file, atomically."""
    from safetensors.numpy import save

    record = {"kind": model.kind, "input_shape": list(model.input_shape), "num_classes": model.num_classes,
              "meta": model.meta}
    path = Path(path)
    atomic_write_bytes(path, save({k: np.ascontiguousarray(v) for k, v in model.arrays.items()},
                                  metadata={META_KEY: json.dumps(record, sort_keys=True)}))
    return path


def load_estimator(path: str | Path, identity: str | None = None) -> ArrayModel:
    """Read an estimator file written by :func:`save_estimator` (safetensors only: nothing is unpickled)."""
    from safetensors import SafetensorError, safe_open
    from safetensors.numpy import load_file

    path = Path(path)
    try:
        with safe_open(str(path), framework="np") as fh:
            meta = fh.metadata() or {}
        arrays = load_file(str(path))
        record = json.loads(meta[META_KEY])
        kind, shape, classes = str(record["kind"]), tuple(int(s) for s in record["input_shape"]), int(record["num_classes"])
    except (SafetensorError, OSError, KeyError, ValueError, TypeError) as exc:
        raise ModelFileError(f"{path}: not a modelproof estimator file ({str(exc)[:200]})") from None
    if kind not in ESTIMATOR_KINDS or len(shape) != 3:
        raise ModelFileError(f"{path}: unknown estimator kind {kind!r} or bad input shape {shape}")
    return ArrayModel(kind, dict(arrays), shape, classes, identity or path.name, dict(record.get("meta", {})))  # type: ignore[arg-type]
