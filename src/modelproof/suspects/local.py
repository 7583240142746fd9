"""Local suspects: a torch module, an ONNX file, a scikit-learn estimator; and ``open_suspect``.

Adapters wrap a torch module, an ONNX file and a scikit-learn estimator (here) and an HTTP
endpoint (:mod:`modelproof.suspects.http`); ``open_suspect`` opens any of them from a path or URL.
Counting, the query budget and the query log live in :class:`~modelproof.suspects.queried.QueriedSuspect`.
"""

from __future__ import annotations

import hashlib
import inspect
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..data.splits import Dataset
from ..util.errors import ConfigError, ModelFileError, SuspectError
from .base import Suspect, check_labels, file_sha256, labels_from_scores
from .http.client import HttpSuspect


class TorchSuspect:
    """A torch module, asked in eval mode without gradients, in batches of ``batch_size``."""

    def __init__(self, model: nn.Module, identity: str | None = None, *, num_classes: int | None = None,
                 input_shape: tuple[int, int, int] | None = None, batch_size: int = 512) -> None:
        from ..models.modelfile import weights_digest

        shape = input_shape if input_shape is not None else getattr(model, "input_shape", None)
        if shape is None or len(tuple(shape)) != 3:
            raise ConfigError(f"{type(model).__name__}: pass input_shape=(C, H, W); the model does not say, got {shape}")
        self.model, self.batch_size = model, int(batch_size)
        self.input_shape: tuple[int, int, int] = tuple(int(s) for s in shape)  # type: ignore[assignment]
        k = num_classes if num_classes is not None else getattr(model, "num_classes", None)
        self.num_classes = int(k) if k is not None else int(self.logits(torch.zeros(1, *self.input_shape)).shape[1])
        self.identity = identity or f"torch:{type(model).__name__}:sha256:{weights_digest(model)}"

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """The module's raw outputs (on CPU) for ``images``."""
        from ..models.training import logits

        return logits(self.model, images, self.batch_size).float().cpu()  # moved to the model's device per batch

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """Argmax labels of the module's outputs."""
        return labels_from_scores(self.logits(images), len(images), self.num_classes, self.identity)


class OnnxSuspect:
    """An ONNX file run by onnxruntime on CPU; shapes come from the graph unless given."""

    def __init__(self, path: str | Path, *, num_classes: int | None = None,
                 input_shape: tuple[int, int, int] | None = None, batch_size: int = 256) -> None:
        import onnxruntime as ort

        path = Path(path)
        if not path.is_file():
            raise ModelFileError(f"ONNX file not found: {path}")
        raw = path.read_bytes()
        self.identity = "sha256:" + hashlib.sha256(raw).hexdigest()
        try:
            self.session = ort.InferenceSession(raw, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise ModelFileError(f"{path}: not a loadable ONNX model ({str(exc)[:200]})") from None
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1 or inputs[0].type != "tensor(float)" or len(inputs[0].shape) != 4:
            raise ModelFileError(f"{path}: expected one float input of rank 4 (N, C, H, W), "
                                 f"got {[(i.name, i.type, i.shape) for i in inputs]}")
        self.input_name, dims = inputs[0].name, inputs[0].shape
        graph_shape = tuple(d if isinstance(d, int) else None for d in dims[1:])
        if input_shape is None and None in graph_shape:
            raise ConfigError(f"{path}: the graph's input shape {dims} is not fixed; pass input_shape=(C, H, W)")
        self.input_shape = tuple(int(s) for s in (input_shape or graph_shape))  # type: ignore[assignment]
        if any(g is not None and g != s for g, s in zip(graph_shape, self.input_shape)):
            raise ConfigError(f"{path}: input_shape {self.input_shape} disagrees with the graph's {dims}")
        out_dims = outputs[0].shape
        self.outputs_scores = outputs[0].type in ("tensor(float)", "tensor(double)", "tensor(float16)") and len(out_dims) == 2
        k = num_classes if num_classes is not None else (out_dims[1] if self.outputs_scores else None)
        if not isinstance(k, int):
            raise ConfigError(f"{path}: cannot read the number of classes from output {out_dims}; pass num_classes")
        self.num_classes = int(k)
        self._fixed_batch = isinstance(dims[0], int)
        self.batch_size = dims[0] if self._fixed_batch else int(batch_size)

    def outputs(self, images: torch.Tensor) -> np.ndarray:
        """The graph's first output for ``images`` (padded to a fixed batch size when the graph has one)."""
        x = images.detach().cpu().numpy().astype(np.float32, copy=False)
        parts = []
        for start in range(0, len(x), self.batch_size):
            chunk = x[start:start + self.batch_size]
            pad = self.batch_size - len(chunk) if self._fixed_batch else 0
            if pad:
                chunk = np.concatenate([chunk, np.zeros((pad, *chunk.shape[1:]), np.float32)])
            try:
                out = self.session.run(None, {self.input_name: chunk})[0]
            except Exception as exc:
                raise SuspectError(f"onnxruntime failed on suspect {self.identity}: {str(exc)[:200]}") from None
            parts.append(out[:len(out) - pad])
        return np.concatenate(parts) if parts else np.empty((0, self.num_classes), np.float32)

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """Labels: argmax of score outputs, or the graph's own integer labels."""
        out = torch.from_numpy(np.ascontiguousarray(self.outputs(images)))
        if self.outputs_scores:
            return labels_from_scores(out.float(), len(images), self.num_classes, self.identity)
        return check_labels(out, len(images), self.num_classes, self.identity)


class SklearnSuspect:
    """A fitted scikit-learn classifier applied to flattened pixels (integer class labels)."""

    def __init__(self, estimator: Any, input_shape: tuple[int, int, int], num_classes: int,
                 identity: str | None = None) -> None:
        from sklearn.exceptions import NotFittedError
        from sklearn.utils.validation import check_is_fitted

        if not hasattr(estimator, "predict"):
            raise ConfigError(f"{type(estimator).__name__} has no predict method")
        try:
            check_is_fitted(estimator)
        except NotFittedError:
            raise ConfigError(f"{type(estimator).__name__} is not fitted yet") from None
        self.estimator, self.num_classes = estimator, int(num_classes)
        self.input_shape = tuple(int(s) for s in input_shape)  # type: ignore[assignment]
        self.identity = identity or f"sklearn:{estimator!r}".replace("\n", "").replace("  ", "")

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """The estimator's predicted classes for the flattened images."""
        flat = images.detach().cpu().reshape(len(images), -1).numpy()
        out = np.asarray(self.estimator.predict(flat))
        if not np.issubdtype(out.dtype, np.integer):
            raise SuspectError(f"{self.identity} predicted non-integer classes of dtype {out.dtype}")
        return torch.from_numpy(out.astype(np.int64))


def train_random_forest(data: Dataset, n_trees: int = 20, seed: int = 0) -> SklearnSuspect:
    """A random forest fitted on ``data``'s flattened pixels (the papers' non-neural negative suspect)."""
    from sklearn.ensemble import RandomForestClassifier

    if n_trees < 1 or len(data) == 0:
        raise ConfigError(f"a random forest needs n_trees >= 1 and data, got {n_trees} trees and {len(data)} images")
    forest = RandomForestClassifier(n_estimators=n_trees, random_state=seed)
    forest.fit(data.images.reshape(len(data), -1).numpy(), data.labels.numpy())
    return SklearnSuspect(forest, data.input_shape, data.num_classes)


def _construct(cls: type, *args: Any, **options: Any) -> Any:
    allowed = set(inspect.signature(cls).parameters) - {"self"}
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise ConfigError(f"unknown option(s) {', '.join(unknown)} for a {cls.__name__}; "
                          f"allowed: {', '.join(sorted(allowed - {'model', 'path', 'url'}))}")
    return cls(*args, **options)


def open_suspect(spec: str | Path, **options: Any) -> Suspect:
    """A suspect from a .safetensors model file, an .onnx file or an http(s):// URL (``options`` go to the adapter)."""
    text = str(spec)
    if text.lower().startswith(("http://", "https://")):
        return _construct(HttpSuspect, text, **options)
    path = Path(spec)
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        return _construct(OnnxSuspect, path, **options)
    if suffix == ".safetensors":
        from ..models.modelfile import load_model

        return _construct(TorchSuspect, load_model(path), **{"identity": f"sha256:{file_sha256(path)}", **options})
    raise ConfigError(f"cannot open suspect {text!r}: expected a .safetensors model file, an .onnx file "
                      "or an http(s):// URL")
