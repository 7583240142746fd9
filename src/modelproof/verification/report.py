"""Evidence reports: a Verdict as JSON (optionally Ed25519-signed) plus a short human-readable summary.

The report file is ``{"report": BODY, "body_sha256": ..., "signature": {...} | null}``. BODY holds
the Verdict (queries, matches, p-value, decision, key digest, suspect identity, method, null
source, timestamps) and the tool version; never the key inputs or labels. ``body_sha256`` is the
SHA-256 of the canonical JSON of BODY (sorted keys, no spaces, ASCII; see ``keys.canonical_json``)
and catches accidental edits; the signature, over the same canonical bytes, is what proves who
wrote the report: its raw public key is stored beside it and ``check_report`` can require it to
equal an expected public key.
"""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import datetime, timezone
from pathlib import Path

from .. import __version__
from ..util.errors import ModelproofError
from ..keys.key import canonical_json
from ..models.modelfile import atomic_write_bytes
from .verify import Verdict

FORMAT = "modelproof-report"
FORMAT_VERSION = 1


class ReportError(ModelproofError):
    """A report is unreadable, edited, or its signature does not verify."""


def summary(verdict: Verdict) -> str:
    """A few lines for a human: decision, evidence, test, and who/what was checked."""
    v = verdict
    test = (f"sequential test martingale: e-value {v.e_value:.4g} (owned at >= {1 / v.alpha:.4g}, "
            f"p1 = {v.p1:.3g}, beta = {v.beta:.3g})" if v.mode == "sequential"
            else f"fixed-sample test: owned needs >= {v.threshold} matches of {v.queries}")
    return "\n".join([
        f"decision: {v.decision.upper()} at alpha = {v.alpha:g} ({v.mode} mode)",
        f"evidence: {v.matches} of {v.queries} key labels matched ({v.match_rate:.1%}); key holds {v.key_size}",
        f"null:     an independent model matches with probability {v.null_match_prob:.4g} ({v.null_source})",
        f"p-value:  {v.p_value:.3g} (exact one-sided binomial"
        + ("; NOT valid at the data-dependent stopping time of a sequential run: the decision rests on the "
           "e-value)" if v.mode == "sequential" else ")"),
        f"test:     {test}" + (f"; run at alpha - {v.null_tail:g} (calibration tail)" if v.null_tail else ""),
        *([f"note:     {v.note}"] if v.note else []),
        f"queries:  {v.queries_sent} sent, {v.replayed} replayed from the query log"
        + (f", budget {v.budget}" if v.budget is not None else ""),
        f"suspect:  {v.suspect}",
        f"key:      sha256:{v.key_digest} ({v.method}); protected model sha256:{v.model_digest}",
        f"time:     {v.started} .. {v.finished} (modelproof {__version__})",
    ])


def report_body(verdict: Verdict, commitment: dict | None = None) -> dict:
    """The signed part of a report: the Verdict, the tool and the time written (no key material).

    ``commitment`` (from ``commitments.check_commitment``'s ``record``) names the key commitment
    the key was checked against: its SHA-256, creation time and signer.
    """
    body = {"format": FORMAT, "format_version": FORMAT_VERSION, "tool": "modelproof", "tool_version": __version__,
            "written": datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z"),
            "verdict": verdict.to_dict(), "summary": summary(verdict)}
    if commitment is not None:
        body["commitment"] = commitment
        body["summary"] += (f"\ncommit:   sha256:{commitment['sha256']} made {commitment['created']}, "
                            f"signed by {commitment['signer'] or 'nobody (unsigned)'}")
    return body


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str) -> bytes:
    """Strict base64: only the canonical spelling of the bytes is accepted (no ignored bits)."""
    data = base64.b64decode(text, validate=True)
    if _b64(data) != text:
        raise ValueError("non-canonical base64")
    return data


def raw_public_key(public_key) -> bytes:
    """The 32 raw bytes of an Ed25519 public key."""
    from cryptography.hazmat.primitives import serialization

    return public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def write_report(verdict: Verdict, path: str | Path, *, signing_key=None, commitment: dict | None = None) -> Path:
    """Write the JSON report (signed when ``signing_key``, an Ed25519PrivateKey, is given) and a .txt summary.

    Both files are written atomically; the summary goes beside the JSON with the suffix ``.txt``.
    Returns the JSON path.
    """
    path = Path(path)
    body = report_body(verdict, commitment)
    message = canonical_json(body)
    signature = sign_message(signing_key, message) if signing_key is not None else None
    document = {"report": body, "body_sha256": hashlib.sha256(message).hexdigest(), "signature": signature}
    atomic_write_bytes(path, (json.dumps(document, indent=2, sort_keys=True) + "\n").encode())
    atomic_write_bytes(summary_path(path), (body["summary"] + "\n").encode())
    return path


def summary_path(path: str | Path) -> Path:
    """Where the human-readable summary of a report at ``path`` goes."""
    path = Path(path)
    txt = path.with_suffix(".txt")
    return txt if txt != path else path.with_name(path.name + ".summary.txt")


def check_report(path: str | Path, public_key=None) -> dict:
    """Check a report: the body digest, the signature (if any) and, when given, the expected signer.

    ``public_key`` is an Ed25519PublicKey or a path to a PEM public key; then the report must be
    signed by it. Returns ``{"valid", "signed", "public_key", "fingerprint", "report"}``; raises
    ReportError on any edit, a bad signature or a different signer.
    """
    path = Path(path)
    if not path.is_file():
        raise ReportError(f"report not found: {path}")
    try:
        document = json.loads(path.read_bytes())
        if set(document) != {"report", "body_sha256", "signature"}:
            raise KeyError(f"top-level fields {sorted(document)}; expected body_sha256, report, signature")
        body = document["report"]
        message = canonical_json(body)
        recorded = document["body_sha256"]
        signature = document.get("signature")
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
        raise ReportError(f"{path}: not a modelproof report ({type(exc).__name__}: {exc})") from None
    if not isinstance(body, dict) or body.get("format") != FORMAT:
        found = body.get("format") if isinstance(body, dict) else None
        raise ReportError(f"{path}: not a modelproof report (format {found!r})")
    if hashlib.sha256(message).hexdigest() != recorded:
        raise ReportError(f"{path}: the report body does not match its recorded digest (edited)")
    expected = load_public_key(public_key) if isinstance(public_key, (str, Path)) else public_key
    if signature is None:
        if expected is not None:
            raise ReportError(f"{path}: the report is not signed, but a signer's public key was given")
        return {"valid": True, "signed": False, "public_key": None, "fingerprint": None, "report": body}
    raw = check_signature(signature, message, expected, f"{path}", "report")
    return {"valid": True, "signed": True, "public_key": _b64(raw), "fingerprint": fingerprint(raw), "report": body}


def sign_message(signing_key, message: bytes) -> dict:
    """The signature block ``{"algorithm": "Ed25519", "public_key", "value"}`` (base64) of ``message``."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    if not isinstance(signing_key, Ed25519PrivateKey):
        raise ReportError(f"signing key must be an Ed25519 private key, got {type(signing_key).__name__}")
    return {"algorithm": "Ed25519", "public_key": _b64(raw_public_key(signing_key.public_key())),
            "value": _b64(signing_key.sign(message))}


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
        raw, value = _unb64(signature["public_key"]), _unb64(signature["value"])  # type: ignore[index]
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
    atomic_write_bytes(private_path, pem)  # mkstemp creates it 0600
    atomic_write_bytes(public_path, private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    public_path.chmod(0o644)
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
