"""The verify / calibrate / check-report / keys commands, end to end, and their one-line user errors."""

import json

import pytest
import torch
from typer.testing import CliRunner

from modelproof.cli.app import app
from modelproof.keys.key import key_from_model
from modelproof.keys.container import save_key
from modelproof.models.modelfile import export_onnx, save_model
from modelproof.models.training import TrainConfig, train_new
from cli_secrets import passphrase, secret

runner = CliRunner()


def run(*args, env=None):
    return runner.invoke(app, [str(a) for a in args], env=env)


def one_line_error(r, fragment):
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output
    # progress names a command still running after a second ("modelproof ...": on a busy machine, e.g. a
    # passphrase's key derivation); the error itself must be one line
    lines = [ln for ln in r.stderr.splitlines() if ln.strip() and not ln.startswith("modelproof")]
    assert len(lines) == 1 and lines[0].startswith("error:") and fragment in lines[0], r.stderr


@pytest.fixture(scope="module")
def files(tmp_path_factory, trained_cnn, digits):
    """Our model, one reference and one independent model (files), and a key of blended digits."""
    d = tmp_path_factory.mktemp("cli")
    save_model(trained_cnn, d / "ours.safetensors")
    export_onnx(trained_cnn, d / "ours.onnx")
    config = TrainConfig(epochs=10, batch_size=32, lr=0.002)
    for name, arch, seed in (("ref", "cnn", 11), ("other", "cnn", 12), ("ref2", "cnn", 13), ("ref3", "mlp", 14),
                             ("ref4", "mlp", 15)):
        save_model(train_new(arch, digits.owner, config, seed=seed)[0], d / f"{name}.safetensors")
    gen = torch.Generator().manual_seed(3)
    i, j = torch.randint(0, len(digits.test), (2, 150), generator=gen)
    key = key_from_model(trained_cnn, 0.5 * digits.test.images[i] + 0.5 * digits.test.images[j],
                         method="blend-fingerprint", null_match_prob=0.5, null_source="1/2: the paper's null model")
    save_key(key, d / "key.safetensors")
    save_key(key, d / "key.enc", passphrase="pw")
    return d


def test_verify_signed_report_and_check(files, tmp_path):
    r = run("keys", "gen-signing", "--out", tmp_path / "owner", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["encrypted"] is False and (tmp_path / "owner.key").is_file()
    report = tmp_path / "evidence.json"
    r = run("verify", "--key", files / "key.safetensors", "--suspect", files / "ours.safetensors", "--json",
            "--report", report, "--sign", tmp_path / "owner.key")
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["decision"] == "owned" and out["queries"] == 150 and out["suspect"].startswith("sha256:")
    assert report.is_file() and report.with_suffix(".txt").is_file()
    r = run("check-report", report, "--public-key", tmp_path / "owner.pub")
    assert r.exit_code == 0 and "signature valid" in r.stdout, r.output
    text = report.read_text()
    report.write_text(text.replace('"matches": 150', '"matches": 151', 1))
    one_line_error(run("check-report", report), "digest")
    report.write_text(text)
    run("keys", "gen-signing", "--out", tmp_path / "mallory")
    one_line_error(run("check-report", report, "--public-key", tmp_path / "mallory.pub"), "expected key")


def test_sequential_against_onnx_and_human_output(files):
    r = run("verify", "--key", files / "key.enc", "--suspect", files / "ours.onnx", "--sequential",
            *passphrase("pw"))
    assert r.exit_code == 0, r.output
    assert r.stdout.startswith("decision: OWNED") and "sequential" in r.stdout
    r = run("verify", "--key", files / "key.enc", "--suspect", files / "ours.onnx", "--sequential", "--json",
            env={"MODELPROOF_PASSPHRASE": "pw"})
    out = json.loads(r.stdout)
    assert r.exit_code == 0 and out["decision"] == "owned" and out["queries"] < 150


def test_calibrate_then_independent_model_is_not_owned(files, tmp_path):
    r = run("verify", "--key", files / "key.safetensors", "--suspect", files / "other.safetensors", "--json")
    assert json.loads(r.stdout)["decision"] == "owned"  # the paper's 1/2 is the wrong null for blended digits
    out_key = tmp_path / "calibrated.safetensors"
    refs = [a for name in ("ref", "ref2", "ref3", "ref4") for a in ("--reference", files / f"{name}.safetensors")]
    r = run("calibrate", "--key", files / "key.safetensors", *refs, "--out", out_key, "--json")
    assert r.exit_code == 0, r.output
    cal = json.loads(r.stdout)
    # four references at tail 1e-4 leave a wide bound (0.998 here); within half a count of 150/150 it is 1
    assert 0.5 < cal["null_match_prob"] <= 1 and "prediction bound" in cal["null_source"]
    assert [(ref["name"], ref["kind"]) for ref in cal["references"]] == \
           [("ref.safetensors", "cnn"), ("ref2.safetensors", "cnn"), ("ref3.safetensors", "mlp"),
            ("ref4.safetensors", "mlp")]
    # independent models match blended digits 62-78% of the time: calibrated, the key no longer claims them
    r = run("verify", "--key", out_key, "--suspect", files / "other.safetensors")
    assert (r.exit_code, r.stdout.split(" at ")[0]) in ((1, "decision: NOT OWNED"), (3, "decision: INCONCLUSIVE")), \
        r.output
    # the protected model: owned if the calibrated null (0.96-1, as alike as the references train on this
    # CPU) still lets 150 matches reach alpha; otherwise the key proves nothing, and says so
    from modelproof.keys.container import load_key
    from modelproof.verification.verifier import can_prove

    r = run("verify", "--key", out_key, "--suspect", files / "ours.safetensors", "--json")
    ours = json.loads(r.stdout)
    if can_prove(load_key(out_key), 0.01):
        assert r.exit_code == 0 and ours["decision"] == "owned" and ours["matches"] == 150
    else:
        assert ours["decision"] == "inconclusive" and "cannot reach alpha" in ours["note"]


def test_budget_and_query_log(files, tmp_path):
    r = run("verify", "--key", files / "key.safetensors", "--suspect", files / "ours.safetensors", "--sequential",
            "--budget", "3", "--batch-size", "3", "--json")
    assert r.exit_code == 3 and json.loads(r.stdout)["decision"] == "inconclusive", r.output
    log = tmp_path / "q.jsonl"
    args = ("verify", "--key", files / "key.safetensors", "--suspect", files / "ours.safetensors", "--json",
            "--log", log)
    first, second = json.loads(run(*args).stdout), json.loads(run(*args).stdout)
    assert first["queries_sent"] == 150 and second["queries_sent"] == 0 and second["replayed"] == 150
    assert first["decision"] == second["decision"] == "owned"


def test_keys_info_shows_metadata_only(files):
    r = run("keys", "info", files / "key.enc", *passphrase("pw"), "--json")
    assert r.exit_code == 0, r.output
    info = json.loads(r.stdout)
    assert info["encrypted"] and info["key_size"] == 150 and info["method"] == "blend-fingerprint"
    assert len(info["digest"]) == 64 and info["null_match_prob"] == 0.5
    assert "inputs" not in info and "labels" not in info and len(r.stdout) < 2000
    r = run("keys", "info", files / "key.safetensors")
    assert r.exit_code == 0 and "150 inputs of shape (1, 8, 8), 10 classes" in r.stdout


def test_user_errors_are_one_line(files, tmp_path):
    key, ours = files / "key.safetensors", files / "ours.safetensors"
    one_line_error(run("verify", "--key", tmp_path / "missing.key", "--suspect", ours), "missing.key")
    one_line_error(run("verify", "--key", files / "key.enc", "--suspect", ours, *passphrase("bad")),
                   "wrong passphrase")
    one_line_error(run("verify", "--key", files / "key.enc", "--suspect", ours), "passphrase")
    one_line_error(run("verify", "--key", key, "--suspect", ours, "--alpha", "1.5"), "alpha")
    one_line_error(run("verify", "--key", key, "--suspect", ours, "--batch-size", "0"), "--batch-size")
    one_line_error(run("verify", "--key", key, "--suspect", tmp_path / "model.pt"), "model.pt")
    one_line_error(run("verify", "--key", key, "--suspect", ours, "--sign", tmp_path / "x.key"), "--report")
    one_line_error(run("keys", "info", files / "key.enc"), "passphrase")
    one_line_error(run("check-report", tmp_path / "none.json"), "none.json")
    refs = [a for name in ("ref", "ref2", "ref3") for a in ("--reference", files / f"{name}.safetensors")]
    one_line_error(run("calibrate", "--key", key, *refs, "--reference", ours, "--out", tmp_path / "k"),
                   "ours.safetensors is the protected model")
    one_line_error(run("calibrate", "--key", key, *refs, "--out", tmp_path / "k"), "at least 4")
    run("keys", "gen-signing", "--out", tmp_path / "s")
    one_line_error(run("keys", "gen-signing", "--out", tmp_path / "s"), "already exists")
