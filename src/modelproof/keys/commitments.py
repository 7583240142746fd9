"""Key commitments: a signed digest of an OwnershipKey, made before any dispute, that settles who came first.

A verdict proves that a suspect answers a key as the key says; it does not prove who made the key
first. A counterfeiter holding a copy of the model can make keys of its own that the copy answers
(``attacks.forgery``). What it cannot do is show a commitment to such a key made *before* it got
the model. The commitment file ``KEY.commitment.json`` is

    {"commitment": BODY, "body_sha256": ..., "signature": {...} | null}

BODY holds the key's digest (``OwnershipKey.digest``: SHA-256 over every field, the inputs and the
labels), the method, the parameters that may be public (key size, classes, input shape, null
match probability), the protected model's weight digest, the key's and the commitment's creation
times and the tool version. It holds nothing from which the key inputs could be rebuilt or
recognised: no params (they may hold the target label), no null source (it may name it), no
tensor statistics. ``body_sha256`` catches edits; the optional Ed25519 signature (the same code as
evidence reports, ``report.sign_message``) proves who committed.

The commitment's own ``created`` is what its author says. What makes it evidence is an outside
record of the file's SHA-256 (:func:`file_digest`) from before the dispute: a notary, a public
post, or an RFC 3161 timestamping service, for which :func:`timestamp_request` writes the request
(a ``.tsq`` file; modelproof contacts no service). Between two claims on one model, the claim whose
key matches a commitment with the earlier outside timestamp wins (README, "Key commitments").
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timezone
from pathlib import Path

from torch import nn

from .. import __version__
from ..util.errors import ModelproofError
from .key import OwnershipKey, canonical_json
from ..util.files import atomic_write_bytes, refuse_existing
from ..util.jsonsafe import loads as json_loads
from ..models.modelfile import weights_digest
from .signing import ReportError, check_signature, fingerprint, load_public_key, raw_public_key, sign_message

FORMAT = "modelproof-commitment"
FORMAT_VERSION = 1
SUFFIX = ".commitment.json"
_FIELDS = ("format", "format_version", "key_digest", "method", "key_size", "num_classes", "input_shape",
           "null_match_prob", "model_digest", "key_created", "created", "tool", "tool_version")


class CommitmentError(ModelproofError):
    """A commitment is unreadable, edited, signed by another key, or does not match the key."""


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def commitment_path(key_path: str | Path) -> Path:
    """Where the commitment of the key at ``key_path`` goes: ``key.mpkey`` -> ``key.commitment.json``."""
    key_path = Path(key_path)
    return key_path.with_name(key_path.stem + SUFFIX)


def commitment_body(key: OwnershipKey, model: nn.Module | None = None) -> dict:
    """The committed fields of ``key`` (see the module docstring); ``model`` gives the weight digest."""
    return {"format": FORMAT, "format_version": FORMAT_VERSION, "key_digest": key.digest(), "method": key.method,
            "key_size": len(key), "num_classes": key.num_classes, "input_shape": list(key.input_shape),
            "null_match_prob": key.null_match_prob,
            "model_digest": weights_digest(model) if model is not None else key.model_digest,
            "key_created": key.created, "created": _now(), "tool": "modelproof", "tool_version": __version__}


def write_commitment(key: OwnershipKey, path: str | Path, *, model: nn.Module | None = None,
                     signing_key=None) -> dict:
    """Write the commitment of ``key`` to ``path`` (atomically), signed when ``signing_key`` is given.

    Returns ``{"path", "sha256", "created", "signer"}``: ``sha256`` is the digest of the file to hand
    a notary or timestamping service.
    """
    body = commitment_body(key, model)
    message = canonical_json(body)
    signature = sign_message(signing_key, message) if signing_key is not None else None
    document = {"commitment": body, "body_sha256": hashlib.sha256(message).hexdigest(), "signature": signature}
    raw = (json.dumps(document, indent=2, sort_keys=True) + "\n").encode()
    path = Path(path)
    atomic_write_bytes(path, raw)
    signer = fingerprint(raw_public_key(signing_key.public_key())) if signing_key is not None else None
    return {"path": str(path), "sha256": hashlib.sha256(raw).hexdigest(), "created": body["created"],
            "signer": signer}


def file_digest(path: str | Path) -> str:
    """Hex SHA-256 of a commitment file's bytes: the value to have timestamped."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def read_commitment(path: str | Path, public_key=None) -> dict:
    """Check a commitment file: format, body digest, signature and (given ``public_key``) the signer.

    ``public_key`` is an Ed25519PublicKey or the path of a PEM public key. Returns ``{"body",
    "record"}`` where ``record`` (``sha256``, ``created``, ``signer``, ``file``) is what an evidence
    report records. CommitmentError naming the file otherwise.
    """
    path = Path(path)
    if not path.is_file():
        raise CommitmentError(f"commitment file not found: {path}")
    raw = path.read_bytes()
    try:
        document = json_loads(raw)
        if not isinstance(document, dict) or set(document) != {"commitment", "body_sha256", "signature"}:
            raise KeyError("expected the fields body_sha256, commitment, signature")
        body, recorded, signature = document["commitment"], document["body_sha256"], document["signature"]
        if not isinstance(body, dict) or body.get("format") != FORMAT or set(body) != set(_FIELDS):
            raise KeyError(f"format {body.get('format') if isinstance(body, dict) else None!r}")
        message = canonical_json(body)
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
        raise CommitmentError(f"{path}: not a modelproof key commitment ({exc})") from None
    if body["format_version"] != FORMAT_VERSION:
        raise CommitmentError(f"{path}: unsupported commitment format version {body['format_version']!r}")
    if hashlib.sha256(message).hexdigest() != recorded:
        raise CommitmentError(f"{path}: the commitment does not match its recorded digest (edited)")
    try:
        expected = load_public_key(public_key) if isinstance(public_key, (str, Path)) else public_key
        if signature is None:
            if expected is not None:
                raise CommitmentError(f"{path}: the commitment is not signed, but a signer's public key was given")
            signer = None
        else:
            signer = fingerprint(check_signature(signature, message, expected, str(path), "commitment"))
    except ReportError as exc:
        raise CommitmentError(str(exc)) from None
    record = {"file": str(path), "sha256": hashlib.sha256(raw).hexdigest(), "created": body["created"],
              "signer": signer, "key_digest": body["key_digest"], "model_digest": body["model_digest"]}
    return {"body": body, "record": record}


def check_commitment(key: OwnershipKey, path: str | Path, public_key=None) -> dict:
    """:func:`read_commitment`, and the key must be the committed one; returns the report ``record``."""
    checked = read_commitment(path, public_key)
    committed = checked["body"]["key_digest"]
    if key.digest() != committed:
        raise CommitmentError(f"{path}: the key (sha256:{key.digest()[:16]}...) is not the committed key "
                              f"(sha256:{str(committed)[:16]}...)")
    return checked["record"]


def earliest_claim(records: list[dict]) -> dict:
    """Of competing claims (each with ``created``: an outside timestamp, verified by the caller), the first.

    CommitmentError when two claims carry the same time (nothing then tells them apart).
    """
    if not records:
        raise CommitmentError("no commitments to compare")
    ordered = sorted(records, key=lambda r: datetime.fromisoformat(str(r["created"]).replace("Z", "+00:00")))
    if len(ordered) > 1 and ordered[0]["created"] == ordered[1]["created"]:
        raise CommitmentError(f"two commitments carry the same time {ordered[0]['created']}; a finer timestamp "
                              "is needed to tell them apart")
    return ordered[0]


def timestamp_request(path: str | Path, out: str | Path) -> Path:
    """Write an RFC 3161 TimeStampReq (DER, SHA-256 of the commitment file, certReq true) to ``out``.

    Send it to any timestamping authority (``Content-Type: application/timestamp-query``) and keep
    the reply (``.tsr``) with the commitment; ``openssl ts -verify -data FILE -in REPLY.tsr`` checks it.
    """
    digest = hashlib.sha256(Path(path).read_bytes()).digest()

    def der(tag: int, content: bytes) -> bytes:
        n = len(content)
        length = bytes([n]) if n < 128 else bytes([0x80 | ((n.bit_length() + 7) // 8)]) + n.to_bytes(
            (n.bit_length() + 7) // 8, "big")
        return bytes([tag]) + length + content

    sha256_oid = bytes.fromhex("0609608648016503040201")  # OID 2.16.840.1.101.3.4.2.1, DER-encoded
    algorithm = der(0x30, sha256_oid + bytes.fromhex("0500"))
    imprint = der(0x30, algorithm + der(0x04, digest))
    request = der(0x30, der(0x02, b"\x01") + imprint + der(0x01, b"\xff"))
    out = Path(out)
    atomic_write_bytes(out, request)
    return out


def commit_key(key: OwnershipKey, key_path: str | Path, *, model: nn.Module | None = None, signing_key=None,
               out: str | Path | None = None, force: bool = False) -> dict:
    """Write KEY.commitment.json (signed when ``signing_key`` is given) and its RFC 3161 request KEY.commitment.tsq.

    ``out`` replaces the default path beside the key. An existing commitment (whose hash may already be
    timestamped) or request is replaced only with ``force``. Returns :func:`write_commitment`'s record
    plus ``timestamp_request``, the path of the request.
    """
    path = Path(out) if out is not None else commitment_path(key_path)
    refuse_existing([path, path.with_suffix(".tsq")], force)
    written = write_commitment(key, path, model=model, signing_key=signing_key)
    written["timestamp_request"] = str(timestamp_request(path, path.with_suffix(".tsq")))
    return written
