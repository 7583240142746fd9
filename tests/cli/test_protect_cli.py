"""``modelproof protect zhang-content|zhang-noise|zhang-unrelated|adi|new-label`` through typer's CliRunner."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from modelproof.cli.app import app
from modelproof.keys.container import load_key
from modelproof.models.modelfile import load_model, save_model
from cli_secrets import passphrase, secret

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def model_file(tmp_path_factory, mlp16):
    return save_model(mlp16, tmp_path_factory.mktemp("m") / "mlp16.safetensors", dataset="digits")


def test_protect_writes_model_and_encrypted_key(model_file, tmp_path):
    out = tmp_path / "zc"
    r = run("protect", "zhang-content", "--model", model_file, "--dataset", "digits", "--out", out,
            *passphrase("pw"), *secret("s3cret"), "--key-size", "100", "--epochs", "15", "--quiet")
    assert r.exit_code == 0, r.output
    assert "test accuracy before" in r.stdout and "test accuracy after" in r.stdout and "key accuracy" in r.stdout
    assert (out / "model.safetensors").is_file() and (out / "key.mpkey").is_file()
    key = load_key(out / "key.mpkey", passphrase="pw")
    assert key.method == "zhang-content" and len(key) == 100 and "secret" not in key.params
    assert load_model(out / "model.safetensors").num_classes == 10
    r = run("verify", "--key", out / "key.mpkey", *passphrase("pw"), "--suspect", out / "model.safetensors",
            "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["decision"] == "owned"


def test_same_secret_same_key_from_the_command_line(model_file, tmp_path):
    keys = []
    for name in ("a", "b"):
        r = run("protect", "zhang-noise", "--model", model_file, "--out", tmp_path / name, *secret("42"),
                "--epochs", "1", "--json")
        assert r.exit_code == 0, r.output
        keys.append(load_key(tmp_path / name / "key.mpkey"))
    assert (keys[0].inputs == keys[1].inputs).all() and (keys[0].labels == keys[1].labels).all()


def test_new_label_json_output(model_file, tmp_path):
    r = run("protect", "new-label", "--model", model_file, "--out", tmp_path / "nl", *secret("s"),
            "--alpha", "0.05", "--beta", "0.3", "--key-size", "30", "--json", "--no-selection")
    # --no-selection: under key selection these parameters' null (bounded on other owners' new-label
    # models) came out at 0.999 on this model and the key was refused; this test is about the JSON output
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["method"] == "new-label" and out["key_size"] == 30 and out["key_accuracy"] >= 0.9
    assert out["accuracy_after"] >= out["accuracy_before"] - 0.02
    assert load_model(tmp_path / "nl" / "model.safetensors").num_classes == 11


def test_arch_trains_from_scratch(tmp_path):
    r = run("protect", "adi", "--arch", "mlp", "--size", "16", "--out", tmp_path / "adi", *secret("s"),
            "--epochs", "20", "--lr", "0.003", "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["mode"] == "scratch" and out["accuracy_before"] is None and out["accuracy_after"] >= 0.85
    key = load_key(tmp_path / "adi" / "key.mpkey")  # under key selection: exact null 1 / (fewest free classes)
    assert key.null_match_prob == pytest.approx(1 / key.params["selection"]["free_classes_min"])
    assert key.null_match_prob <= 0.2


def test_help_lists_the_methods():
    r = run("protect", "--help")
    assert r.exit_code == 0
    for name in ("zhang-content", "zhang-noise", "zhang-unrelated", "adi", "new-label"):
        assert name in r.stdout


@pytest.mark.parametrize("args,fragment", [
    (("zhang-content", "--key-size", "0"), "--key-size"),
    (("zhang-noise", "--mode", "bogus"), "mode"),
    (("new-label", "--beta", "-1"), "beta"),
    (("zhang-noise", "--target", "12"), "target"),
    (("adi", "--lr", "0"), "lr"),
    (("zhang-unrelated", "--source", "nope:/nowhere"), "nope"),
])
def test_bad_params_are_one_line_errors(model_file, tmp_path, args, fragment):
    r = run("protect", *args, "--model", model_file, "--out", tmp_path / "x")
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and fragment in lines[0], r.stderr
