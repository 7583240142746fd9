"""Sound verdicts: no false claim under realistic use, no key that silently cannot prove anything.

One test (or a few) per point of the review: uncalibrated frontier keys, calibration by default,
looking again at one query log, weak keys, defaults, secrets, duplicates, integrity, leaks,
passphrases, held-out choices, the sequential p-value, and ONNX temporary files.
"""

import dataclasses
import json
import struct

import pytest
import torch
from typer.testing import CliRunner

from modelproof.keys import container as keys_module
from modelproof.cli.app import app
from modelproof.data.splits import Dataset
from modelproof.util.errors import ConfigError, KeyFileError
from modelproof.protections.fingerprints.ipguard import IPGuard
from modelproof.keys.key import OwnershipKey, key_from_model
from modelproof.keys.container import load_key, save_key
from modelproof.models.modelfile import export_onnx, save_model
from modelproof.protections.base import make_protection
from modelproof.verification.report import summary
from modelproof.suspects.queried import QueriedSuspect
from modelproof.suspects.local import TorchSuspect
from modelproof.verification.verifier import verify
from modelproof.protections.watermarks.frontier import EPS_GRID, FrontierStitching, build_key
from cli_secrets import passphrase, secret
from modelproof.references.calibration import selectors
from modelproof.references.mix import KINDS

runner = CliRunner()


def key_selectors(path):
    return selectors(load_key(path))


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def one_line_error(r, fragment):
    assert r.exit_code == 2, r.output
    lines = [ln for ln in r.stderr.splitlines() if ln.strip() and not ln.startswith("no --secret")]
    assert len(lines) == 1 and lines[0].startswith("error:") and fragment in lines[0], r.stderr


@pytest.fixture(scope="module")
def model_file(tmp_path_factory, mlp16):
    return save_model(mlp16, tmp_path_factory.mktemp("m") / "mlp16.safetensors", dataset="digits",
                      extra={"train_lr": 0.003, "size": 16})


def blends(images, n, seed):
    gen = torch.Generator().manual_seed(seed)
    i, j = torch.randint(0, len(images), (2, n), generator=gen)
    return 0.5 * images[i] + 0.5 * images[j]


# 1. An uncalibrated frontier-stitching key never says "owned", not even of the protected model.
def test_uncalibrated_frontier_key_is_inconclusive(mlp16, digits16, negatives16):
    key = key_from_model(mlp16, blends(digits16.test.images, 100, 0), method="frontier-stitching",
                         null_match_prob=0.5, null_source="Le Merrer et al.: 1/2")
    forest = negatives16[-1]
    for suspect in (TorchSuspect(mlp16), forest):
        verdict = verify(key, suspect)
        assert verdict.decision == "inconclusive" and "calibrate" in verdict.note


# 2. protect calibrates by default against a population of several kinds, and refuses dependent references.
def test_protect_calibrates_by_default(model_file, tmp_path):
    r = run("protect", "zhang-noise", "--model", model_file, "--size", "16", "--out", tmp_path / "z",
            *secret("s"), "--epochs", "15", "--json", "--quiet")
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["calibrated"] is True and out["self_check"] == "passed" and out["reference_seconds"] >= 0
    assert [ref["kind"] for ref in out["references"]] == [kind.name for kind in KINDS] * 2  # 12 kinds, 24 models
    assert out["selection_references"] == 24 and len(key_selectors(tmp_path / "z" / "key.mpkey")) == 24
    key = load_key(tmp_path / "z" / "key.mpkey")
    record = key.params["calibration"]
    assert key.null_match_prob == record["bound"] != record["previous_null_match_prob"] == out["null_before"]
    assert key.params["source_model_digest"] != key.model_digest
    r = run("protect", "zhang-noise", "--model", model_file, "--size", "16", "--out", tmp_path / "n",
            *secret("s"), "--epochs", "15", "--no-calibration", "--json", "--quiet")
    assert r.exit_code == 0 and json.loads(r.stdout)["calibrated"] is False, r.output
    assert "calibration" not in load_key(tmp_path / "n" / "key.mpkey").params
    refs = [a for f in [model_file] * 4 for a in ("--reference", f)]
    one_line_error(run("protect", "zhang-noise", "--model", model_file, "--size", "16", "--out", tmp_path / "x",
                       *secret("s"), "--epochs", "15", *refs, "--quiet"), "mlp16.safetensors is the model the key "
                   "was made from")
    assert not (tmp_path / "x").exists()


# 3. Looking again at the same query log.
def test_second_fixed_look_at_one_log_is_refused(mlp16, digits16, tmp_path):
    key = key_from_model(mlp16, blends(digits16.test.images, 100, 1), method="blend", null_match_prob=0.5,
                         null_source="exact for the test")
    other = TorchSuspect(mlp16, identity="suspect")
    log = tmp_path / "log.jsonl"
    first = verify(key, other, budget=10, log_path=log)
    assert first.queries == 10
    again = verify(key, other, budget=10, log_path=log)  # the same look again replays it: allowed
    assert (again.decision, again.matches, again.replayed) == (first.decision, first.matches, 10)
    with pytest.raises(ConfigError, match="use --sequential"):
        verify(key, other, budget=20, log_path=log)
    with pytest.raises(ConfigError, match="use --sequential"):
        verify(key, other, budget=10, alpha=0.05, log_path=log)
    seq = verify(key, other, mode="sequential", log_path=log)
    assert seq.replayed == 10 and "sum of their alphas" in seq.note
    with pytest.raises(ConfigError, match="keep p1 and beta"):
        verify(key, other, mode="sequential", p1=0.95, log_path=log)
    decisions = [json.loads(line) for line in log.read_text().splitlines() if '"decision"' in line]
    assert [(d["mode"], d["budget"], d["queries"]) for d in decisions] == \
           [("fixed", 10, 10), ("fixed", 10, 10), ("sequential", None, seq.queries)]
    assert QueriedSuspect(other, log_path=log).decisions == decisions


# 4. Keys that can never prove anything.
def test_weak_key_is_inconclusive_and_refused_by_protect(mlp16, digits16, model_file, tmp_path):
    key = key_from_model(mlp16, blends(digits16.test.images, 20, 2), method="blend", null_match_prob=0.8,
                         null_source="weak on purpose")
    verdict = verify(key, TorchSuspect(mlp16))
    assert verdict.matches == 20 and verdict.decision == "inconclusive" and "cannot reach alpha" in verdict.note
    r = run("protect", "fgsm-fingerprint", "--model", model_file, "--size", "16", "--out", tmp_path / "f",
            "--no-calibration", "--quiet")
    one_line_error(r, "does not prove its own protected model")
    assert "--points" in r.stderr and not (tmp_path / "f").exists()
    assert "the method's null" in r.stderr  # where an uncalibrated (or exact) null comes from
    r = run("protect", "fgsm-fingerprint", "--model", model_file, "--size", "16", "--out", tmp_path / "f",
            "--no-calibration", "--allow-weak", "--quiet")
    assert r.exit_code == 0 and "WARNING" in r.output, r.output
    assert "does not prove" in load_key(tmp_path / "f" / "key.mpkey").params["warning"]


# 5. Frontier stitching chooses eps itself, from the paper's grid, when none is given.
def test_frontier_chooses_eps(mlp16, digits16):
    protection = FrontierStitching(key_size=20, secret="s")
    eps = protection.choose_eps(mlp16, digits16.owner)
    assert eps in EPS_GRID
    smaller = [e for e in EPS_GRID if e < eps]
    for e in smaller:  # every smaller step of the grid could not give the key
        with pytest.raises(ConfigError, match="adversaries"):
            build_key(mlp16, digits16.owner, key_size=20, eps=e)
    assert FrontierStitching(eps=0.1).choose_eps(mlp16, digits16.owner) == 0.1


# 6. Fingerprints nobody can rebuild from the key file.
@pytest.mark.parametrize("name, params", [("ipguard", dict(points=12, k=1.0, max_iter=30)),
                                          ("random-fingerprint", dict(points=12))])
def test_key_cannot_be_rebuilt_from_what_it_records(name, params, mlp16, digits16):
    key = make_protection(name, secret="owner's secret", **params).protect(mlp16, digits16.owner).key
    recorded = {k: v for k, v in key.params.items() if k not in ("dataset", "lr", "null_match_prob")}
    assert "seed" not in key.params and "secret" not in json.dumps(key.params)
    rebuilt = make_protection(name, **recorded).protect(mlp16, digits16.owner).key
    assert not torch.equal(rebuilt.inputs, key.inputs)
    same = make_protection(name, secret="owner's secret", **params).protect(mlp16, digits16.owner).key
    assert torch.equal(same.inputs, key.inputs)


# 7. Duplicate key inputs.
def test_duplicate_key_inputs_are_refused(mlp16, digits16):
    x = digits16.test.images[:5]
    with pytest.raises(KeyFileError, match="1 key input"):
        key_from_model(mlp16, torch.cat([x, x[:1]]), method="m", null_match_prob=0.1, null_source="s")
    few = digits16.owner.subset(torch.arange(50), "fifty")
    with pytest.raises(ConfigError, match="50"):
        IPGuard(points=100, init="TL", max_iter=5).protect(mlp16, few)


# 8 and 13. check-report says what a signature proves; the sequential p-value is flagged.
def test_check_report_wording(mlp16, digits16, tmp_path):
    key = key_from_model(mlp16, blends(digits16.test.images, 50, 3), method="blend", null_match_prob=0.3,
                         null_source="test")
    key_path = save_key(key, tmp_path / "k.mpkey")
    model = save_model(mlp16, tmp_path / "m.safetensors")
    assert run("keys", "gen-signing", "--out", tmp_path / "owner").exit_code == 0
    run("verify", "--key", key_path, "--suspect", model, "--report", tmp_path / "plain.json")
    r = run("check-report", tmp_path / "plain.json")
    assert r.exit_code == 0 and "unsigned: its integrity cannot be checked" in r.stdout, r.output
    run("verify", "--key", key_path, "--suspect", model, "--report", tmp_path / "s.json", "--sign",
        tmp_path / "owner.key", "--sequential")
    r = run("check-report", tmp_path / "s.json")
    assert "proves only that the report was not changed" in r.stdout and "ed25519:" in r.stdout
    assert "not valid at a sequential run's data-dependent stopping time" in r.stdout
    verdict = verify(key, TorchSuspect(mlp16), mode="sequential")
    assert "NOT valid at the data-dependent stopping time" in summary(verdict)


# 9 and 11. Plain keys are not tamper-proof (and protect says so); passphrases from a file; scrypt 2^17.
def test_plain_and_encrypted_keys(mlp16, digits16, model_file, tmp_path):
    key = key_from_model(mlp16, blends(digits16.test.images, 20, 4), method="m", null_match_prob=0.3,
                         null_source="s")
    enc = save_key(key, tmp_path / "k.enc", passphrase="pw")
    assert struct.unpack_from("<8sBB", enc.read_bytes())[2] == 17
    (tmp_path / "pass").write_text("pw\n")
    r = run("keys", "info", enc, *passphrase("pw"))
    assert r.exit_code == 0
    r = run("verify", "--key", enc, "--suspect", model_file, "--passphrase-file", tmp_path / "pass")
    assert r.exit_code == 0 and "OWNED" in r.stdout, r.output
    old = dataclasses.replace(key)
    saved = keys_module.SCRYPT_LOG2_N
    keys_module.SCRYPT_LOG2_N = 15
    try:
        legacy = save_key(old, tmp_path / "old.enc", passphrase="pw")
    finally:
        keys_module.SCRYPT_LOG2_N = saved
    assert load_key(legacy, "pw").digest() == key.digest()
    r = run("protect", "adi", "--model", model_file, "--size", "16", "--out", tmp_path / "a", *secret("s"),
            "--quiet")
    assert r.exit_code == 0 and "NOT encrypted" in r.stdout, r.output


# 10. The Zhang target label is in no text a report prints.
def test_target_label_not_in_null_source(mlp16, digits16):
    for target in range(10):
        result = make_protection("zhang-noise", secret="s", target=target, key_size=10, epochs=1).protect(
            mlp16, digits16.owner)
        assert f"target {target}" not in result.key.null_source and "target" not in result.key.params


# 12. Fine-tuning chooses its epoch on held-out owner data, never on the test split.
def test_embedding_choices_ignore_the_test_split(mlp16, digits16):
    noise = Dataset(torch.rand(100, 1, 16, 16), torch.randint(0, 10, (100,)), digits16.test.class_names, "noise")
    states = []
    for test in (None, noise):
        result = make_protection("zhang-noise", secret="s", key_size=10, epochs=3).protect(
            mlp16, digits16.owner, test=test)
        states.append(result.model.state_dict())
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])


# 14. A failed ONNX export leaves no temporary file behind.
def test_failed_onnx_export_leaves_nothing(mlp16, tmp_path, monkeypatch):
    from modelproof.models import modelfile

    def broken(*args, **kwargs):
        raise RuntimeError("parity check failed")

    monkeypatch.setattr(modelfile, "check_onnx_parity", broken)
    with pytest.raises(RuntimeError):
        export_onnx(mlp16, tmp_path / "m.onnx")
    assert list(tmp_path.iterdir()) == []
