"""The OwnershipKey: the owner's secret, and its safe file format (optionally encrypted at rest).

A key file is ONE safetensors file with exactly two tensors, ``inputs`` (float32 NCHW in [0,1])
and ``labels`` (int64), and one metadata entry ``modelproof_key`` holding the JSON fields plus the
key's digest, which ``load_key`` recomputes (a corrupted or edited plain file is refused).

With a passphrase the safetensors bytes are encrypted with AES-256-GCM under a key derived by
scrypt (n = 2**17, r = 8, p = 1, the current OWASP recommendation; keys written with n = 2**15 still
load). The container is

    offset  size  field
    0       8     magic b"MPKEYENC"
    8       1     container version (1)
    9       1     log2(n) of scrypt
    10      1     r of scrypt
    11      1     p of scrypt
    12      16    random salt
    28      12    random nonce
    40      ...   ciphertext of the safetensors bytes followed by the 16-byte GCM tag

and the 40-byte header is authenticated as associated data: any flipped byte, or a wrong
passphrase, fails authentication and nothing is loaded.

The key digest (:meth:`OwnershipKey.digest`) is the SHA-256 of ``b"modelproof-key/1\\n"``, the
canonical JSON (sorted keys, no spaces) of every field except ``created`` plus the tensor shapes,
a newline, then the raw little-endian bytes of ``inputs`` and ``labels``. ``created`` is left out
so that the same secret saved twice keeps one identity; everything the verdict depends on
(including ``null_match_prob`` and its provenance) is in.

``params`` are shown by ``modelproof keys info``: a protection method keeps its hyper-parameters
there, never a secret that would let someone rebuild the key inputs.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import struct
import time
from dataclasses import dataclass, field, fields
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..util.errors import KeyFileError
from ..models.modelfile import atomic_write_bytes, looks_like_pickle, weights_digest

FORMAT = "modelproof-key"
FORMAT_VERSION = 1
META_KEY = "modelproof_key"
MAGIC = b"MPKEYENC"
CONTAINER_VERSION = 1
SCRYPT_LOG2_N, SCRYPT_R, SCRYPT_P = 17, 8, 1
_HEADER = struct.Struct("<8sBBBB16s12s")
_REQUIRED = ("method", "params", "num_classes", "input_shape", "null_match_prob", "null_source", "model_digest")


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


def _to_safetensors(key: OwnershipKey) -> bytes:
    from safetensors.torch import save

    meta = dict(key.fields_json(), format=FORMAT, format_version=FORMAT_VERSION, digest=key.digest())
    return save({"inputs": key.inputs, "labels": key.labels}, metadata={META_KEY: canonical_json(meta).decode()})


def _derive(passphrase: str, salt: bytes, log2_n: int, r: int, p: int) -> bytes:
    from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

    if not isinstance(passphrase, str) or not passphrase:
        raise KeyFileError("the passphrase must be a non-empty string")
    return Scrypt(salt=salt, length=32, n=2 ** log2_n, r=r, p=p).derive(passphrase.encode("utf-8"))


def encrypt_bytes(plain: bytes, passphrase: str) -> bytes:
    """The encrypted container (see the module docstring) holding ``plain``."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    salt, nonce = os.urandom(16), os.urandom(12)
    header = _HEADER.pack(MAGIC, CONTAINER_VERSION, SCRYPT_LOG2_N, SCRYPT_R, SCRYPT_P, salt, nonce)
    return header + AESGCM(_derive(passphrase, salt, SCRYPT_LOG2_N, SCRYPT_R, SCRYPT_P)).encrypt(nonce, plain, header)


def decrypt_bytes(blob: bytes, passphrase: str, source: str = "key file") -> bytes:
    """The plaintext of an encrypted container; KeyFileError on a wrong passphrase or any altered byte."""
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    if len(blob) < _HEADER.size + 16:
        raise KeyFileError(f"{source}: encrypted key file is truncated ({len(blob)} bytes)")
    magic, version, log2_n, r, p, salt, nonce = _HEADER.unpack_from(blob)
    if magic != MAGIC or version != CONTAINER_VERSION:
        raise KeyFileError(f"{source}: unsupported encrypted key container version {version}")
    if not (10 <= log2_n <= 20 and 1 <= r and 1 <= p <= 4 and 128 * r * 2 ** log2_n <= 256 * 2 ** 20):
        raise KeyFileError(f"{source}: scrypt parameters out of range (n=2**{log2_n}, r={r}, p={p}); file altered?")
    try:
        return AESGCM(_derive(passphrase, salt, log2_n, r, p)).decrypt(nonce, blob[_HEADER.size:], blob[:_HEADER.size])
    except InvalidTag:
        raise KeyFileError(f"{source}: wrong passphrase, or the encrypted key file was altered") from None


def save_key(key: OwnershipKey, path: str | Path, passphrase: str | None = None) -> Path:
    """Write ``key`` to one safetensors file (encrypted when a passphrase is given), atomically."""
    data = _to_safetensors(key)
    if passphrase is not None:
        data = encrypt_bytes(data, passphrase)
    path = Path(path)
    atomic_write_bytes(path, data)
    return path


def safetensors_metadata(raw: bytes, source: str) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors blob, parsed defensively."""
    if len(raw) < 8:
        raise KeyFileError(f"{source}: not a safetensors key file (too short)")
    (size,) = struct.unpack_from("<Q", raw)
    if size > len(raw) - 8:
        raise KeyFileError(f"{source}: not a safetensors key file (bad header length)")
    try:
        header = json.loads(raw[8:8 + size])
    except (UnicodeDecodeError, ValueError):
        raise KeyFileError(f"{source}: not a safetensors key file (header is not JSON)") from None
    meta = header.get("__metadata__") if isinstance(header, dict) else None
    return meta if isinstance(meta, dict) else {}


def key_from_bytes(raw: bytes, source: str = "key file") -> OwnershipKey:
    """Parse and validate the (decrypted) safetensors bytes of a key file."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    if looks_like_pickle(raw):
        raise KeyFileError(f"{source}: looks like a pickle or torch.save archive; modelproof never unpickles "
                           "files (a key is a .safetensors file written by save_key)")
    meta = safetensors_metadata(raw, source)
    try:
        tensors = load(raw)
    except (SafetensorError, ValueError, RuntimeError) as exc:
        raise KeyFileError(f"{source}: not a readable safetensors file ({exc})") from None
    if set(tensors) != {"inputs", "labels"}:
        raise KeyFileError(f"{source}: a key holds exactly the tensors 'inputs' and 'labels', got {sorted(tensors)}")
    if META_KEY not in meta:
        raise KeyFileError(f"{source}: safetensors file has no ownership key metadata ({META_KEY!r})")
    try:
        d = json.loads(meta[META_KEY])
    except ValueError as exc:
        raise KeyFileError(f"{source}: key metadata is not valid JSON ({exc})") from None
    if not isinstance(d, dict) or d.get("format") != FORMAT:
        raise KeyFileError(f"{source}: not a modelproof key (format {d.get('format') if isinstance(d, dict) else d!r})")
    if d.get("format_version") != FORMAT_VERSION:
        raise KeyFileError(f"{source}: unsupported key format version {d.get('format_version')!r}")
    missing = [name for name in (*_REQUIRED, "created", "digest") if name not in d]
    if missing:
        raise KeyFileError(f"{source}: key metadata lacks required field(s) {', '.join(missing)}")
    shape = d["input_shape"]
    try:
        key = OwnershipKey(inputs=tensors["inputs"], labels=tensors["labels"], method=d["method"],
                           params=d["params"], num_classes=d["num_classes"],
                           input_shape=tuple(shape) if isinstance(shape, list) else shape,
                           null_match_prob=d["null_match_prob"], null_source=d["null_source"],
                           model_digest=d["model_digest"], created=d["created"])
    except KeyFileError as exc:
        raise KeyFileError(f"{source}: {exc}") from None
    if key.digest() != d["digest"]:
        raise KeyFileError(f"{source}: key content does not match its recorded digest (file corrupted or edited)")
    return key


def is_encrypted(path: str | Path) -> bool:
    """Whether ``path`` starts with the encrypted-container magic."""
    with open(path, "rb") as fh:
        return fh.read(len(MAGIC)) == MAGIC


def read_plain(path: str | Path, passphrase: str | None = None, what: str = "key file") -> bytes:
    """The bytes of ``path``, decrypted when it is an encrypted container; KeyFileError if missing,
    encrypted without a passphrase, or not decryptable."""
    path = Path(path)
    if not path.is_file():
        raise KeyFileError(f"{what} not found: {path}")
    raw = path.read_bytes()
    if raw.startswith(MAGIC):
        if passphrase is None:
            raise KeyFileError(f"{path}: the {what} is encrypted; pass its passphrase (--passphrase)")
        raw = decrypt_bytes(raw, passphrase, str(path))
    return raw


def load_key(path: str | Path, passphrase: str | None = None) -> OwnershipKey:
    """Load and validate a key file; KeyFileError naming the problem (nothing is partially loaded)."""
    return key_from_bytes(read_plain(path, passphrase), str(path))
