"""Suspects: anything that answers labels for a batch of images, and the one wrapper that counts its queries.

A :class:`Suspect` is the smallest black box: ``predict(images) -> labels`` plus ``num_classes``,
``input_shape`` and an ``identity`` for reports. Adapters wrap a torch module, an ONNX file and a
scikit-learn estimator (here) and an HTTP endpoint (:mod:`modelproof.suspects_http`). Counting,
the query budget and the query log live in :class:`QueriedSuspect` only; it also checks every
input and every answer, so a malformed answer is an error, never a match.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn

from ..data.splits import Dataset
from ..util.errors import ConfigError, ModelFileError, SuspectError
from ..util.progress import report
from .http.client import HttpSuspect

__all__ = ["Suspect", "BudgetExhausted", "QueriedSuspect", "TorchSuspect", "OnnxSuspect", "SklearnSuspect",
           "HttpSuspect", "open_suspect", "train_random_forest", "check_images", "check_labels", "input_digests"]

_INT_DTYPES = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)


@runtime_checkable
class Suspect(Protocol):
    """A black-box classifier: float32 NCHW images in [0,1] -> int64 labels of shape (N,)."""

    num_classes: int
    input_shape: tuple[int, int, int]
    identity: str

    def predict(self, images: torch.Tensor) -> torch.Tensor: ...


class BudgetExhausted(SuspectError):
    """Answering a batch would exceed the query budget; nothing of that batch was asked."""


def check_images(images: Any, input_shape: tuple[int, int, int], source: str = "suspect") -> torch.Tensor:
    """``images`` as a contiguous CPU float32 tensor (N, *input_shape) with finite values in [0,1], else ConfigError."""
    if not isinstance(images, torch.Tensor):
        raise ConfigError(f"{source}: queries must be a torch.Tensor, got {type(images).__name__}")
    if images.dtype != torch.float32:
        raise ConfigError(f"{source}: queries must be float32, got {images.dtype}")
    if images.dim() != 4 or tuple(images.shape[1:]) != tuple(input_shape):
        raise ConfigError(f"{source}: expects queries of shape (N, {', '.join(map(str, input_shape))}), "
                          f"got {tuple(images.shape)}")
    x = images.detach().cpu().contiguous()
    if x.numel() and not bool(torch.isfinite(x).all()):
        raise ConfigError(f"{source}: queries contain NaN or infinite values")
    if x.numel() and (float(x.min()) < 0.0 or float(x.max()) > 1.0):
        raise ConfigError(f"{source}: query values must lie in [0, 1], got [{float(x.min()):.3g}, {float(x.max()):.3g}]")
    return x


def check_labels(answer: Any, n: int, num_classes: int, source: str = "suspect") -> torch.Tensor:
    """A suspect's answer as int64 labels (n,), else SuspectError naming what was wrong."""
    if isinstance(answer, np.ndarray):
        answer = torch.from_numpy(np.ascontiguousarray(answer))
    if not isinstance(answer, torch.Tensor):
        raise SuspectError(f"{source} answered a {type(answer).__name__}, expected a tensor of labels")
    if answer.dim() == 2 and answer.shape[1] == 1:
        answer = answer.flatten()
    if answer.dim() != 1 or answer.shape[0] != n:
        raise SuspectError(f"{source} answered shape {tuple(answer.shape)} for {n} queries, expected ({n},)")
    if answer.is_floating_point() and not bool(torch.isfinite(answer).all()):
        raise SuspectError(f"{source} answered NaN or infinite labels")
    if answer.dtype not in _INT_DTYPES:
        raise SuspectError(f"{source} answered labels of dtype {answer.dtype}, expected integers")
    labels = answer.to(torch.int64).cpu()
    if n and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise SuspectError(f"{source} answered label(s) outside [0, {num_classes}): "
                           f"{sorted({int(v) for v in labels if not 0 <= int(v) < num_classes})[:5]}")
    return labels


def labels_from_scores(scores: torch.Tensor, n: int, num_classes: int, source: str) -> torch.Tensor:
    """Argmax of (n, num_classes) finite scores; SuspectError on the wrong shape or NaN."""
    if scores.dim() != 2 or tuple(scores.shape) != (n, num_classes):
        raise SuspectError(f"{source} produced scores of shape {tuple(scores.shape)}, expected ({n}, {num_classes})")
    if not bool(torch.isfinite(scores).all()):
        raise SuspectError(f"{source} produced NaN or infinite scores")
    return scores.argmax(dim=1).to(torch.int64).cpu()


def input_digests(images: torch.Tensor) -> list[str]:
    """SHA-256 of each input's little-endian float32 bytes (what the query log stores instead of inputs)."""
    arr = np.ascontiguousarray(images.detach().cpu().numpy().astype("<f4", copy=False))
    return [hashlib.sha256(row.tobytes()).hexdigest() for row in arr]


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


class QueriedSuspect:
    """Wraps a suspect: checks queries and answers, counts queries, enforces a budget, keeps a query log.

    The log (``log_path``) is append-only JSON lines, one per answered query: time, suspect identity,
    SHA-256 of the input's float32 bytes and the label (never the input: keys are secret), flushed and
    fsynced per chunk. An input whose digest is already in the log is answered from it without asking
    again, so a killed run resumes where it stopped. ``budget`` bounds the queries sent to the suspect
    over the whole log (earlier runs included); a batch that would exceed it raises
    :class:`BudgetExhausted` before anything is asked. Batches go to the suspect in chunks of
    ``chunk_size`` (logged one by one). ``queries`` counts queries answered by the suspect in this
    process, ``replayed`` those answered from the log. Each verification decision taken on the log
    is appended to it too (``"type": "decision"`` lines: key digest, mode, budget, alpha, p1, the
    answer count decided on), so that a later run can refuse a look that would invalidate the test.

    A log is bound to the model, not to where it is served: ``model`` in each record is the suspect's
    ``model_identity`` (an HTTP model's protocol, name and version: the same model on another host or
    port resumes) or else its ``identity``, and ``key`` is ``key_digest`` when given; a log of another
    model or key is refused with what differs.
    """

    def __init__(self, suspect: Suspect, *, budget: int | None = None, log_path: str | Path | None = None,
                 chunk_size: int | None = 256, key_digest: str | None = None) -> None:
        if budget is not None and (isinstance(budget, bool) or not isinstance(budget, int) or budget < 0):
            raise ConfigError(f"budget must be a non-negative integer or None, got {budget!r}")
        if chunk_size is not None and chunk_size < 1:
            raise ConfigError(f"chunk_size must be a positive integer or None, got {chunk_size!r}")
        self.suspect = suspect
        self.num_classes = int(suspect.num_classes)
        self.input_shape: tuple[int, int, int] = tuple(int(s) for s in suspect.input_shape)  # type: ignore[assignment]
        self.identity = str(suspect.identity)
        self.model_identity = str(getattr(suspect, "model_identity", None) or self.identity)
        self.key_digest = key_digest
        if self.num_classes < 1 or len(self.input_shape) != 3:
            raise ConfigError(f"suspect {self.identity}: bad num_classes {self.num_classes} or input_shape {self.input_shape}")
        self.budget, self.chunk_size = budget, chunk_size
        self.queries, self.replayed = 0, 0
        self.log: list[dict] = []
        self.decisions: list[dict] = []
        self.log_path = Path(log_path) if log_path is not None else None
        self._answers: dict[str, int] = {}
        if self.log_path is not None and self.log_path.exists():
            self._load_log()
        self._logged_before = len(self.log)

    @property
    def spent(self) -> int:
        """Queries sent to the suspect so far, counting those of earlier runs in the log."""
        return self._logged_before + self.queries

    @property
    def remaining(self) -> int | None:
        """Queries left in the budget (None without a budget)."""
        return None if self.budget is None else max(self.budget - self.spent, 0)

    def close(self) -> None:
        """Close the wrapped suspect's resources (an HTTP connection pool), if it has any."""
        if callable(getattr(self.suspect, "close", None)):
            self.suspect.close()

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """Labels for ``images``: replayed from the log where known, asked (and logged) otherwise."""
        x = check_images(images, self.input_shape, f"suspect {self.identity}")
        digests = input_digests(x)
        out = torch.empty(len(digests), dtype=torch.int64)
        todo = []
        for i, d in enumerate(digests):
            if d in self._answers:
                out[i] = self._answers[d]
            else:
                todo.append(i)
        if self.budget is not None and self.spent + len(todo) > self.budget:
            raise BudgetExhausted(f"suspect {self.identity}: this batch needs {len(todo)} new queries but only "
                                  f"{self.remaining} of the budget of {self.budget} are left; nothing was asked")
        self.replayed += len(digests) - len(todo)
        step = self.chunk_size or max(len(todo), 1)
        for start in range(0, len(todo), step):
            idx = torch.tensor(todo[start:start + step], dtype=torch.int64)
            labels = check_labels(self.suspect.predict(x[idx]), len(idx), self.num_classes, f"suspect {self.identity}")
            self._record([digests[i] for i in idx.tolist()], labels.tolist())
            self.queries += len(idx)
            out[idx] = labels
            report(len(idx), queries=self.spent)
        return out

    def _record(self, digests: list[str], labels: list[int]) -> None:
        now = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
        bound = {"model": self.model_identity, **({"key": self.key_digest} if self.key_digest else {})}
        records = [{"n": len(self.log) + k, "time": now, "suspect": self.identity, "input_sha256": d, "label": int(y),
                    **bound} for k, (d, y) in enumerate(zip(digests, labels))]
        self._append(records)
        if self.log_path is not None:
            for r in records:
                self._answers.setdefault(r["input_sha256"], r["label"])
        self.log.extend(records)

    def record_decision(self, decision: dict) -> None:
        """Append a verification decision (JSON-ready fields) to the log."""
        now = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
        record = {**decision, "type": "decision", "time": now, "suspect": self.identity, "model": self.model_identity,
                  **({"key": self.key_digest} if self.key_digest else {})}
        self._append([record])
        self.decisions.append(record)

    def _append(self, records: list[dict]) -> None:
        if self.log_path is None:
            return
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as fh:
            fh.write("".join(json.dumps(r, sort_keys=True) + "\n" for r in records).encode())
            fh.flush()
            os.fsync(fh.fileno())

    def _check_binding(self, rec: dict) -> None:
        """Refuse a log record of another model or key, saying what differs."""
        logged = rec.get("model", rec.get("suspect"))
        differs = []
        if logged != self.model_identity:
            differs.append(f"it was made with {logged!r}, this run asks {self.model_identity!r}")
        if self.key_digest and rec.get("key") and rec["key"] != self.key_digest:
            differs.append(f"it was made with key {str(rec['key'])[:12]}..., this run uses key {self.key_digest[:12]}...")
        if differs:
            raise ConfigError(f"query log {self.log_path} belongs to another model or key: {'; '.join(differs)}; "
                              "use another log file")

    def _load_log(self) -> None:
        path = self.log_path
        assert path is not None
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise ConfigError(f"cannot read query log {path}: {exc}") from None
        lines = raw.split(b"\n")
        complete = len(lines) - 1  # the piece after the last newline is empty or a truncated write
        for number, line in enumerate(lines[:complete], start=1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                if isinstance(rec, dict) and rec.get("type") == "decision":
                    self._check_binding(rec)
                    self.decisions.append(rec)
                    continue
                ok = (isinstance(rec, dict) and isinstance(rec.get("input_sha256"), str)
                      and len(rec["input_sha256"]) == 64 and isinstance(rec.get("label"), int))
            except (ValueError, UnicodeDecodeError):
                ok = False
            if not ok:
                raise ConfigError(f"query log {path}: line {number} is not a query record; refusing to resume from it")
            self._check_binding(rec)
            if not 0 <= rec["label"] < self.num_classes:
                raise ConfigError(f"query log {path}: line {number} has label {rec['label']} outside [0, {self.num_classes})")
            self.log.append(rec)
            self._answers.setdefault(rec["input_sha256"], rec["label"])
        if lines[-1]:  # drop the torn last line so that new records start on a line of their own
            with open(path, "r+b") as fh:
                fh.truncate(len(raw) - len(lines[-1]))
                fh.flush()
                os.fsync(fh.fileno())


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

        param = next(self.model.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
        return logits(self.model, images.to(device), self.batch_size).float().cpu()

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
