"""The key file: one safetensors file, optionally encrypted at rest.

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
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

from ..util.errors import KeyFileError
from ..util.files import atomic_write_bytes, looks_like_pickle
from ..util.jsonsafe import loads as json_loads
from .key import FORMAT, FORMAT_VERSION, OwnershipKey, canonical_json

META_KEY = "modelproof_key"
SCRYPT_LOG2_N, SCRYPT_R, SCRYPT_P = 17, 8, 1
MAGIC = b"MPKEYENC"
CONTAINER_VERSION = 1
_HEADER = struct.Struct("<8sBBBB16s12s")
_REQUIRED = ("method", "params", "num_classes", "input_shape", "null_match_prob", "null_source", "model_digest")


def _to_safetensors(key: OwnershipKey) -> bytes:
    from safetensors.torch import save

    meta = dict(key.fields_json(), format=FORMAT, format_version=FORMAT_VERSION, digest=key.digest())
    return save({"inputs": key.inputs, "labels": key.labels}, metadata={META_KEY: canonical_json(meta).decode()})


def _derive(passphrase: str, salt: bytes, log2_n: int, r: int, p: int) -> bytes:
    from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

    if not isinstance(passphrase, str) or not passphrase:
        raise KeyFileError("the passphrase must be a non-empty string")
    try:
        return Scrypt(salt=salt, length=32, n=2 ** log2_n, r=r, p=p).derive(passphrase.encode("utf-8"))
    except (MemoryError, ValueError) as exc:  # OpenSSL refuses some (n, r) pairs that fit the memory bound
        raise KeyFileError(f"scrypt parameters n=2**{log2_n}, r={r}, p={p} cannot be used ({exc}); file altered?") from None


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
    atomic_write_bytes(path, data, secret=True)  # a key: its owner's only
    return path


def safetensors_metadata(raw: bytes, source: str) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors blob, parsed defensively."""
    if len(raw) < 8:
        raise KeyFileError(f"{source}: not a safetensors key file (too short)")
    (size,) = struct.unpack_from("<Q", raw)
    if size > len(raw) - 8:
        raise KeyFileError(f"{source}: not a safetensors key file (bad header length)")
    try:
        header = json_loads(raw[8:8 + size])
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
        d = json_loads(meta[META_KEY])
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
