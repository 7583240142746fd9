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

import hashlib
import json
from datetime import datetime, timezone
from pathlib import Path

from .. import __version__
from ..keys.key import canonical_json
from ..keys.signing import ReportError, b64, check_signature, fingerprint, load_public_key, sign_message
from ..util.files import atomic_write_bytes
from ..util.jsonsafe import loads as json_loads
from .verifier import Verdict
from .stats import p_value_text

FORMAT = "modelproof-report"
FORMAT_VERSION = 1


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
        f"p-value:  {p_value_text(v.p_value, v.matches, v.queries, v.null_match_prob)} (exact one-sided binomial"
        + ("; NOT valid at the data-dependent stopping time of a sequential run: the decision rests on the "
           "e-value)" if v.mode == "sequential" else ")"),
        f"test:     {test}" + (f"; run at alpha - {v.null_tail:g} (calibration tail)" if v.null_tail else ""),
        *([f"note:     {v.note}"] if v.note else []),
        *([f"warning:  {v.warning}"] if v.warning else []),
        f"queries:  {v.queries_sent} sent, {v.replayed} replayed from the query log"
        + (f", budget {v.budget}" if v.budget is not None else ""),
        *([_replay_line(v.replay)] if v.replay else []),
        f"suspect:  {v.suspect}",
        f"key:      sha256:{v.key_digest} ({v.method}); protected model sha256:{v.model_digest}",
        f"time:     {v.started} .. {v.finished} (modelproof {__version__})",
    ])


def _replay_line(replay: dict) -> str:
    r = replay
    return (f"replayed: {r['answers']} answers from the query log {r['log']} (hash chain {r['chain']}), given by "
            f"{', '.join(r['endpoints'])} between {r['first']} and {r['last']}; {r['rechecked']} re-asked of "
            f"{r['rechecked_at']}, all agreed")


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
        document = json_loads(path.read_bytes())
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
    return {"valid": True, "signed": True, "public_key": b64(raw), "fingerprint": fingerprint(raw), "report": body}


