"""Key commitments: content (nothing about the key inputs), signatures, tamper detection, CLI, claims."""

import json
import subprocess

import pytest
import torch
from typer.testing import CliRunner

from modelproof.cli.app import app
from modelproof.keys.commitments import (
    CommitmentError, check_commitment, commitment_path, earliest_claim, file_digest, read_commitment,
    timestamp_request, write_commitment,
)
from modelproof.keys.key import OwnershipKey
from modelproof.keys.container import save_key
from modelproof.models.modelfile import load_model, save_model, weights_digest
from modelproof.keys.signing import fingerprint, generate_signing_key, raw_public_key, save_signing_key
from cli_secrets import passphrase, secret

runner = CliRunner()


def make_key(seed: int = 0, target: int = 3) -> OwnershipKey:
    gen = torch.Generator().manual_seed(seed)
    return OwnershipKey(inputs=torch.rand(12, 1, 8, 8, generator=gen), labels=torch.full((12,), target),
                        method="zhang-content", params={"resolved_target": target, "count": 4},
                        num_classes=10, input_shape=(1, 8, 8), null_match_prob=0.5,
                        null_source=f"floor 0.5; the target {target} answered 1/200", model_digest="ab" * 32)


def test_commitment_holds_digests_and_public_fields_only(tmp_path):
    key = make_key(target=7)
    written = write_commitment(key, tmp_path / "k.commitment.json")
    doc = json.loads((tmp_path / "k.commitment.json").read_text())
    body = doc["commitment"]
    assert body["key_digest"] == key.digest() and body["model_digest"] == "ab" * 32
    assert body["method"] == "zhang-content" and body["key_size"] == 12 and body["null_match_prob"] == 0.5
    assert doc["signature"] is None and written["signer"] is None
    assert written["sha256"] == file_digest(tmp_path / "k.commitment.json")
    text = json.dumps(doc)
    assert "params" not in body and "null_source" not in body and "resolved_target" not in text
    assert "labels" not in body and "inputs" not in body
    assert commitment_path(tmp_path / "key.mpkey").name == "key.commitment.json"


def test_signed_commitment_checks_key_and_signer(tmp_path):
    owner, other = generate_signing_key(), generate_signing_key()
    key = make_key()
    path = tmp_path / "c.json"
    write_commitment(key, path, signing_key=owner)
    record = check_commitment(key, path, owner.public_key())
    assert record["signer"] == fingerprint(raw_public_key(owner.public_key()))
    assert record["key_digest"] == key.digest() and record["sha256"] == file_digest(path)
    with pytest.raises(CommitmentError, match="not by the expected key") as err:
        check_commitment(key, path, other.public_key())
    assert "\n" not in str(err.value)
    with pytest.raises(CommitmentError, match="is not the committed key") as err:
        check_commitment(make_key(seed=1), path)
    assert "\n" not in str(err.value)


def test_tampered_commitment_is_refused(tmp_path):
    owner = generate_signing_key()
    path = tmp_path / "c.json"
    write_commitment(make_key(), path, signing_key=owner)
    doc = json.loads(path.read_text())
    doc["commitment"]["created"] = "2000-01-01T00:00:00.000Z"  # an earlier date, digest left as it was
    path.write_text(json.dumps(doc))
    with pytest.raises(CommitmentError, match="does not match its recorded digest") as err:
        read_commitment(path)
    assert "\n" not in str(err.value)
    from modelproof.keys.key import canonical_json
    import hashlib
    doc["body_sha256"] = hashlib.sha256(canonical_json(doc["commitment"])).hexdigest()  # digest redone too
    path.write_text(json.dumps(doc))
    with pytest.raises(CommitmentError, match="signature does not verify"):
        read_commitment(path)
    doc["signature"] = None  # signature stripped: only caught when a signer is required
    path.write_text(json.dumps(doc))
    assert read_commitment(path)["record"]["signer"] is None
    with pytest.raises(CommitmentError, match="not signed"):
        read_commitment(path, owner.public_key())
    path.write_text("{}")
    with pytest.raises(CommitmentError, match="not a modelproof key commitment"):
        read_commitment(path)


def test_timestamp_request_is_rfc3161(tmp_path):
    path = tmp_path / "c.json"
    write_commitment(make_key(), path)
    tsq = timestamp_request(path, tmp_path / "c.tsq")
    raw = tsq.read_bytes()
    assert raw[0] == 0x30 and bytes.fromhex(file_digest(path)) in raw
    try:
        out = subprocess.run(["openssl", "ts", "-query", "-in", str(tsq), "-text"], capture_output=True, text=True)
    except FileNotFoundError:
        return  # openssl absent: the DER layout was checked above
    assert out.returncode == 0 and "sha256" in out.stdout


def test_earliest_claim_settles_competing_commitments(tmp_path):
    first = {"created": "2026-01-01T10:00:00.000Z", "who": "owner"}
    later = {"created": "2026-03-01T10:00:00.000Z", "who": "counterfeiter"}
    assert earliest_claim([later, first])["who"] == "owner"
    with pytest.raises(CommitmentError, match="same time"):
        earliest_claim([first, dict(first, who="other")])


def test_cli_protect_commit_and_verify(tmp_path, trained_cnn):
    save_model(trained_cnn, tmp_path / "m.safetensors", dataset="digits")
    save_signing_key(generate_signing_key(), tmp_path / "owner")
    save_signing_key(generate_signing_key(), tmp_path / "other")
    out = tmp_path / "fp"
    res = runner.invoke(app, ["protect", "--sign", str(tmp_path / "owner.key"), "adi", "--model",
                              str(tmp_path / "m.safetensors"), *secret("s"), "--epochs", "15", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "signed by ed25519:" in res.output and (out / "key.commitment.tsq").is_file()
    base = ["verify", "--key", str(out / "key.mpkey"), "--suspect", str(out / "model.safetensors"),
            "--commitment", str(out / "key.commitment.json")]
    res = runner.invoke(app, base + ["--public-key", str(tmp_path / "owner.pub"), "--report",
                                     str(tmp_path / "ev.json")])
    assert res.exit_code == 0, res.output
    recorded = json.loads((tmp_path / "ev.json").read_text())["report"]["commitment"]
    assert recorded["sha256"] == file_digest(out / "key.commitment.json") and recorded["signer"].startswith("ed25519:")
    res = runner.invoke(app, base + ["--public-key", str(tmp_path / "other.pub")])
    assert res.exit_code == 2 and res.output.count("\n") == 1 and "not by the expected key" in res.output
    other_key = tmp_path / "other.mpkey"
    save_key(make_key(), other_key)
    res = runner.invoke(app, ["verify", "--key", str(other_key), "--suspect", str(tmp_path / "m.safetensors"),
                              "--commitment", str(out / "key.commitment.json")])
    assert res.exit_code == 2 and "not the committed key" in res.output and res.output.count("\n") == 1
    res = runner.invoke(app, ["keys", "commit", str(out / "key.mpkey"), "--model", str(out / "model.safetensors"),
                              "--out", str(tmp_path / "again.json"), "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["signer"] is None
    assert read_commitment(tmp_path / "again.json")["body"]["model_digest"] == \
        weights_digest(load_model(out / "model.safetensors"))
