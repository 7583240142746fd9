"""Ed25519 signatures over canonical JSON: signing keys, public keys, signature blocks.

Evidence reports (:mod:`modelproof.verification.report`) and key commitments
(:mod:`modelproof.keys.commitments`) are signed the same way: a block
``{"algorithm": "Ed25519", "public_key", "value"}`` (base64) over the canonical JSON of a body
(:func:`modelproof.keys.key.canonical_json`). ``check_signature`` verifies a block and can require an
expected signer. Errors are ``ReportError``, the error type of everything that is signed.
"""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

from ..util.errors import ModelproofError
from ..util.files import atomic_write_bytes


class ReportError(ModelproofError):
    """A report is unreadable, edited, or its signature does not verify."""


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def unb64(text: str) -> bytes:
    """Strict base64: only the canonical spelling of the bytes is accepted (no ignored bits)."""
    data = base64.b64decode(text, validate=True)
    if b64(data) != text:
        raise ValueError("non-canonical base64")
    return data


def raw_public_key(public_key) -> bytes:
    """The 32 raw bytes of an Ed25519 public key."""
    from cryptography.hazmat.primitives import serialization

    return public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def sign_message(signing_key, message: bytes) -> dict:
    """The signature block ``{"algorithm": "Ed25519", "public_key", "value"}`` (base64) of ``message``."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    if not isinstance(signing_key, Ed25519PrivateKey):
        raise ReportError(f"signing key must be an Ed25519 private key, got {type(signing_key).__name__}")
    return {"algorithm": "Ed25519", "public_key": b64(raw_public_key(signing_key.public_key())),
            "value": b64(signing_key.sign(message))}


def check_signature(signature: object, message: bytes, expected, source: str, what: str = "report") -> bytes:
    """The signer's raw public key, after checking a :func:`sign_message` block over ``message``.

    ``expected`` (an Ed25519PublicKey or None) must be the signer when given. ReportError naming
    ``source`` for a malformed block, a signature that does not verify, or another signer.
    """
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        if signature["algorithm"] != "Ed25519":  # type: ignore[index]
            raise ReportError(f"{source}: unsupported signature algorithm {signature['algorithm']!r}")  # type: ignore[index]
        if set(signature) != {"algorithm", "public_key", "value"}:  # type: ignore[arg-type]
            raise KeyError(f"signature fields {sorted(signature)}; expected algorithm, public_key, value")  # type: ignore[arg-type]
        raw, value = unb64(signature["public_key"]), unb64(signature["value"])  # type: ignore[index]
        Ed25519PublicKey.from_public_bytes(raw).verify(value, message)
    except ReportError:
        raise
    except InvalidSignature:
        raise ReportError(f"{source}: the signature does not verify ({what} edited or signed by another key)") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise ReportError(f"{source}: malformed signature block ({exc})") from None
    if expected is not None and raw_public_key(expected) != raw:
        raise ReportError(f"{source}: signed by key {fingerprint(raw)}, not by the expected key "
                          f"{fingerprint(raw_public_key(expected))}")
    return raw


def fingerprint(raw: bytes) -> str:
    """A short identifier of a public key: the first 16 hex digits of the SHA-256 of its raw bytes."""
    return "ed25519:" + hashlib.sha256(raw).hexdigest()[:16]


def generate_signing_key():
    """A fresh Ed25519 private key."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    return Ed25519PrivateKey.generate()


def save_signing_key(private_key, prefix: str | Path, passphrase: str | None = None, *,
                     overwrite: bool = False) -> tuple[Path, Path]:
    """Write ``PREFIX.key`` (PKCS#8 PEM, encrypted when a passphrase is given; mode 0600) and ``PREFIX.pub``."""
    from cryptography.hazmat.primitives import serialization

    private_path, public_path = Path(f"{prefix}.key"), Path(f"{prefix}.pub")
    for p in (private_path, public_path):
        if p.exists() and not overwrite:
            raise ReportError(f"{p} already exists; refusing to overwrite a signing key")
    if passphrase is not None and not passphrase:
        raise ReportError("the passphrase of a signing key must not be empty")
    encryption = (serialization.BestAvailableEncryption(passphrase.encode()) if passphrase
                  else serialization.NoEncryption())
    pem = private_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)
    atomic_write_bytes(private_path, pem, secret=True)  # 0600 from its first byte
    atomic_write_bytes(public_path, private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))  # the usual mode
    return private_path, public_path


def load_signing_key(path: str | Path, passphrase: str | None = None):
    """An Ed25519 private key from a PEM file (ReportError if missing, encrypted without passphrase, or not Ed25519)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    path = Path(path)
    if not path.is_file():
        raise ReportError(f"signing key not found: {path}")
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), passphrase.encode() if passphrase else None)
    except TypeError:
        raise ReportError(f"{path}: the signing key is encrypted; pass its passphrase" if not passphrase
                          else f"{path}: the signing key is not encrypted; drop the passphrase") from None
    except ValueError:
        raise ReportError(f"{path}: not a PEM private key, or wrong passphrase") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ReportError(f"{path}: expected an Ed25519 private key, got {type(key).__name__}")
    return key


def load_public_key(path: str | Path):
    """An Ed25519 public key from a PEM file."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    path = Path(path)
    if not path.is_file():
        raise ReportError(f"public key not found: {path}")
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except ValueError:
        raise ReportError(f"{path}: not a PEM public key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise ReportError(f"{path}: expected an Ed25519 public key, got {type(key).__name__}")
    return key
