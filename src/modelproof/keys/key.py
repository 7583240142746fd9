"""The OwnershipKey: key inputs, their expected labels, the null and its provenance, and the key's digest.

The key digest (:meth:`OwnershipKey.digest`) is the SHA-256 of ``b"modelproof-key/1\\n"``, the
canonical JSON (sorted keys, no spaces) of every field except ``created`` plus the tensor shapes,
a newline, then the raw little-endian bytes of ``inputs`` and ``labels``. ``created`` is left out
so that the same secret saved twice keeps one identity; everything the verdict depends on
(including ``null_match_prob`` and its provenance) is in.

``params`` are shown by ``modelproof keys info``: a protection method keeps its hyper-parameters
there, never a secret that would let someone rebuild the key inputs.

Its file format and encryption are in :mod:`modelproof.keys.container`.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import time
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any

import torch
from torch import nn

from ..util.errors import KeyFileError
from ..models.modelfile import weights_digest

FORMAT = "modelproof-key"
FORMAT_VERSION = 1


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def canonical_json(obj: Any) -> bytes:
    """Sorted-key, space-free, ASCII JSON bytes (NaN and infinity refused): the form that is hashed and signed."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode()


def _bad(name: str, why: str) -> KeyFileError:
    return KeyFileError(f"key field {name!r}: {why}")


@dataclass(frozen=True, eq=False)
class OwnershipKey:
    """Key inputs, their expected labels, and everything needed to test a suspect against them.

    Validated on construction (raises KeyFileError naming the bad field); the tensors are copied.
    """

    inputs: torch.Tensor
    labels: torch.Tensor
    method: str
    params: dict
    num_classes: int
    input_shape: tuple[int, int, int]
    null_match_prob: float
    null_source: str
    model_digest: str
    created: str = field(default_factory=_now)

    def __post_init__(self) -> None:
        x, y = self.inputs, self.labels
        if not isinstance(x, torch.Tensor) or x.dtype != torch.float32 or x.dim() != 4 or x.shape[0] < 1:
            raise _bad("inputs", f"need a float32 tensor (N, C, H, W) with N >= 1, got "
                                 f"{getattr(x, 'dtype', type(x).__name__)} {tuple(getattr(x, 'shape', ()))}")
        if not bool(torch.isfinite(x).all()) or float(x.min()) < 0.0 or float(x.max()) > 1.0:
            raise _bad("inputs", "values must be finite and lie in [0, 1]")
        if not isinstance(y, torch.Tensor) or y.dtype != torch.int64 or tuple(y.shape) != (x.shape[0],):
            raise _bad("labels", f"need an int64 tensor of shape ({x.shape[0]},), got "
                                 f"{getattr(y, 'dtype', type(y).__name__)} {tuple(getattr(y, 'shape', ()))}")
        if not isinstance(self.method, str) or not self.method.strip():
            raise _bad("method", f"need a non-empty string, got {self.method!r}")
        if not isinstance(self.params, dict) or not all(isinstance(k, str) for k in self.params):
            raise _bad("params", f"need a JSON object with string keys, got {type(self.params).__name__}")
        try:
            params = json.loads(canonical_json(self.params))
        except (TypeError, ValueError) as exc:
            raise _bad("params", f"not JSON-serialisable ({exc})") from None
        k = self.num_classes
        if isinstance(k, bool) or not isinstance(k, int) or k < 2:
            raise _bad("num_classes", f"need an integer >= 2, got {k!r}")
        if int(y.min()) < 0 or int(y.max()) >= k:
            raise _bad("labels", f"values must lie in [0, num_classes={k}), got [{int(y.min())}, {int(y.max())}]")
        shape = self.input_shape
        if (not isinstance(shape, (tuple, list)) or len(shape) != 3
                or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in shape)):
            raise _bad("input_shape", f"need three positive integers (C, H, W), got {shape!r}")
        if tuple(shape) != tuple(x.shape[1:]):
            raise _bad("input_shape", f"{tuple(shape)} does not match the inputs' shape {tuple(x.shape[1:])}")
        p = self.null_match_prob
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not math.isfinite(p) or not 0 <= p <= 1:
            raise _bad("null_match_prob", f"need a probability in [0, 1], got {p!r}")
        rows = x.detach().cpu().contiguous().reshape(x.shape[0], -1)
        if len(torch.unique(rows, dim=0)) != x.shape[0]:
            raise _bad("inputs", f"{x.shape[0] - len(torch.unique(rows, dim=0))} key input(s) repeat another: "
                                 "repeated inputs are not independent trials")
        if not isinstance(self.null_source, str) or not self.null_source.strip():
            raise _bad("null_source", "need a non-empty note saying where null_match_prob comes from")
        if not isinstance(self.model_digest, str) or not re.fullmatch(r"[0-9a-f]{64}", self.model_digest):
            raise _bad("model_digest", f"need a lowercase hex SHA-256 (64 characters), got {self.model_digest!r}")
        try:
            datetime.fromisoformat(str(self.created).replace("Z", "+00:00"))
        except ValueError:
            raise _bad("created", f"need an ISO 8601 time, got {self.created!r}") from None
        for name, value in (("inputs", x.detach().cpu().contiguous().clone()),
                            ("labels", y.detach().cpu().contiguous().clone()), ("params", params),
                            ("input_shape", tuple(int(s) for s in shape)), ("null_match_prob", float(p))):
            object.__setattr__(self, name, value)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def fields_json(self) -> dict:
        """The JSON fields (everything but the tensors), as stored in the file's metadata."""
        return {f.name: getattr(self, f.name) if f.name != "input_shape" else list(self.input_shape)
                for f in fields(self) if f.name not in ("inputs", "labels")}

    def digest(self) -> str:
        """SHA-256 over the canonical content (see the module docstring); identifies the key in reports."""
        meta = {k: v for k, v in self.fields_json().items() if k != "created"}
        meta.update(inputs_shape=list(self.inputs.shape), labels_shape=list(self.labels.shape),
                    format=FORMAT, format_version=FORMAT_VERSION)
        h = hashlib.sha256(b"modelproof-key/1\n" + canonical_json(meta) + b"\n")
        h.update(self.inputs.numpy().astype("<f4", copy=False).tobytes())
        h.update(self.labels.numpy().astype("<i8", copy=False).tobytes())
        return h.hexdigest()

    def info(self) -> dict:
        """Metadata safe to show: method, sizes, digest, null probability and provenance; never inputs or labels."""
        out = self.fields_json()
        out.update(key_size=len(self), digest=self.digest())
        return out


def key_from_model(model: nn.Module, inputs: torch.Tensor, *, method: str, params: dict | None = None,
                   null_match_prob: float, null_source: str, num_classes: int | None = None) -> OwnershipKey:
    """A key whose labels are ``model``'s own predictions on ``inputs`` (fingerprints, tests)."""
    from ..models.training import logits

    scores = logits(model, inputs)
    return OwnershipKey(inputs=inputs, labels=scores.argmax(dim=1), method=method, params=dict(params or {}),
                        num_classes=int(num_classes or getattr(model, "num_classes", scores.shape[1])),
                        input_shape=tuple(int(s) for s in inputs.shape[1:]),  # type: ignore[arg-type]
                        null_match_prob=null_match_prob, null_source=null_source,
                        model_digest=weights_digest(model))


