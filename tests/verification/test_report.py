"""Evidence reports: content (no key material), summary, Ed25519 signing and tamper detection."""

import json

import pytest

from modelproof import __version__
from modelproof.keys.signing import (
    ReportError, fingerprint, generate_signing_key, load_public_key, load_signing_key, raw_public_key,
    save_signing_key,
)
from modelproof.verification.report import check_report, summary, summary_path, write_report
from modelproof.verification.verifier import Verdict


def make_verdict(**changes) -> Verdict:
    fields = dict(decision="owned", mode="sequential", queries=30, matches=30, match_rate=1.0, key_size=100,
                  null_match_prob=0.5, p_value=0.5 ** 30, alpha=0.01, threshold=22, e_value=1.8 ** 30, p1=0.9,
                  beta=0.05, key_digest="12" * 32, method="frontier-stitching",
                  null_source="1/2: the paper's null model", model_digest="34" * 32,
                  suspect="http://127.0.0.1:8000/v2/models/m", started="2024-01-01T00:00:00.000Z",
                  finished="2024-01-01T00:00:01.000Z", queries_sent=20, replayed=10, budget=None, batch_size=10)
    fields.update(changes)
    return Verdict(**fields)


def walk_keys(obj):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield k
            yield from walk_keys(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from walk_keys(v)


def test_unsigned_report_content_and_summary(tmp_path):
    path = write_report(make_verdict(), tmp_path / "evidence.json")
    doc = json.loads(path.read_text())
    body = doc["report"]
    assert body["tool_version"] == __version__ and doc["signature"] is None
    v = body["verdict"]
    for name in ("decision", "queries", "matches", "p_value", "key_digest", "suspect", "started", "finished",
                 "method", "null_source", "queries_sent", "replayed"):
        assert name in v
    assert not {"inputs", "labels"} & set(walk_keys(doc))
    text = summary_path(path).read_text()
    assert summary_path(path) == tmp_path / "evidence.txt"
    assert "OWNED" in text and "30 of 30" in text and "20 sent, 10 replayed" in text
    checked = check_report(path)
    assert checked["valid"] and not checked["signed"] and checked["report"] == body


def test_summary_of_fixed_mode_and_infinite_e_value():
    assert "needs >= 22 matches of 30" in summary(make_verdict(mode="fixed", e_value=None, p1=None, beta=None))
    v = make_verdict(e_value=float("inf"))
    assert v.to_dict()["e_value"] == "inf" and "inf" in summary(v)


def test_summary_never_says_p_is_zero():
    # 419 of 419 matched at a null of 0.014 (the MNIST LeNet-5 blind key): p = 0.014^419 underflows to 0.0
    v = make_verdict(mode="fixed", queries=419, matches=419, key_size=419, null_match_prob=0.014, p_value=0.0,
                     e_value=None, p1=None, beta=None)
    assert "p-value:  10^-776.8 (exact" in summary(v)
    assert "p-value:  9.31e-10 (exact" in summary(make_verdict())


def test_signed_report_verifies_and_detects_the_signer(tmp_path):
    key, other = generate_signing_key(), generate_signing_key()
    save_signing_key(key, tmp_path / "owner")
    save_signing_key(other, tmp_path / "other")
    path = write_report(make_verdict(), tmp_path / "r.json", signing_key=key)
    checked = check_report(path, tmp_path / "owner.pub")
    assert checked["signed"] and checked["fingerprint"] == fingerprint(raw_public_key(key.public_key()))
    assert check_report(path)["signed"]
    with pytest.raises(ReportError, match="not by the expected key"):
        check_report(path, tmp_path / "other.pub")
    with pytest.raises(ReportError, match="not signed"):
        check_report(write_report(make_verdict(), tmp_path / "u.json"), load_public_key(tmp_path / "owner.pub"))


def test_any_edit_is_detected(tmp_path):
    path = write_report(make_verdict(), tmp_path / "r.json", signing_key=generate_signing_key())
    original = path.read_text()
    parsed = json.loads(original)
    tried = 0
    for pos in range(0, len(original), 3):
        ch = original[pos]
        edited = original[:pos] + ("7" if ch != "7" else "8") + original[pos + 1:]
        try:
            same = json.loads(edited) == parsed
        except ValueError:
            same = False
        path.write_text(edited)
        if same:
            check_report(path)  # a change that leaves the document identical is not an edit
            continue
        tried += 1
        with pytest.raises(ReportError):
            check_report(path)
    assert tried > 100


def test_forged_or_stripped_signature(tmp_path):
    key = generate_signing_key()
    path = write_report(make_verdict(decision="not owned"), tmp_path / "r.json", signing_key=key)
    doc = json.loads(path.read_text())
    # an attacker edits the decision and re-signs with their own key: valid, but not the owner's
    forged = write_report(make_verdict(decision="owned"), tmp_path / "f.json", signing_key=generate_signing_key())
    fdoc = json.loads(forged.read_text())
    fdoc["signature"]["public_key"] = doc["signature"]["public_key"]
    forged.write_text(json.dumps(fdoc))
    with pytest.raises(ReportError, match="signature does not verify"):
        check_report(forged)
    # stripping the signature leaves an honest "not signed", which fails when the signer is required
    doc["signature"] = None
    path.write_text(json.dumps(doc))
    assert check_report(path)["signed"] is False
    with pytest.raises(ReportError, match="not signed"):
        check_report(path, key.public_key())
    for bad in ("{}", "not json", json.dumps({"report": {"format": "x"}, "body_sha256": ""})):
        path.write_text(bad)
        with pytest.raises(ReportError):
            check_report(path)
    with pytest.raises(ReportError, match="not found"):
        check_report(tmp_path / "missing.json")


def test_signing_key_files(tmp_path):
    key = generate_signing_key()
    private, public = save_signing_key(key, tmp_path / "enc", passphrase="s3cret")
    assert (private.stat().st_mode & 0o777) == 0o600 and b"ENCRYPTED" in private.read_bytes()
    loaded = load_signing_key(private, "s3cret")
    assert raw_public_key(loaded.public_key()) == raw_public_key(load_public_key(public))
    with pytest.raises(ReportError, match="encrypted; pass its passphrase"):
        load_signing_key(private)
    with pytest.raises(ReportError, match="wrong passphrase"):
        load_signing_key(private, "nope")
    with pytest.raises(ReportError, match="already exists"):
        save_signing_key(key, tmp_path / "enc")
    save_signing_key(key, tmp_path / "plain")
    with pytest.raises(ReportError, match="not encrypted"):
        load_signing_key(tmp_path / "plain.key", "s3cret")
    with pytest.raises(ReportError, match="public key"):
        load_public_key(private)
    with pytest.raises(ReportError, match="not found"):
        load_signing_key(tmp_path / "none.key")
