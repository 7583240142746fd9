"""Every command family on ``--device cuda``: train/evaluate, protect (every method, with calibration and
the self-check), attack (every attack, the pirate and the forgeries), verify, calibrate, experiment run
and serve. Tiny models on the bundled digits; skipped without CUDA (they run on a GPU machine through
``benchmarks/device/run.sh``, never in CI). A command must end with its result or a one-line refusal
(exit status 2, ``error: ...``), never a traceback.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from modelproof.cli.app import app
from modelproof.models import devices

from fast_attacks import FAST

# MODELPROOF_TEST_DEVICE=cpu runs the same tests on the CPU (to check the tests themselves without a GPU).
DEVICE = os.environ.get("MODELPROOF_TEST_DEVICE", "cuda")
pytestmark = pytest.mark.skipif(DEVICE == "cuda" and not torch.cuda.is_available(),
                                reason="needs a CUDA GPU (benchmarks/device/run.sh)")
runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def finished(r) -> bool:
    """A result, or a one-line refusal (``error: ...`` on stderr, or ``{"error": ...}`` under --json): never a traceback."""
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error: ")]
    if r.exit_code == 2 and not errors:
        try:
            errors = [json.loads(r.stdout)["error"]]
        except (ValueError, KeyError, TypeError):
            pass
    refused = r.exit_code == 2 and len(errors) == 1
    crashed = "Traceback" in r.output or not (r.exception is None or isinstance(r.exception, SystemExit))
    return (r.exit_code == 0 or refused) and not crashed


@pytest.fixture(autouse=True)
def back_to_the_cpu():
    """Commands set the default device; the rest of the suite runs on the CPU."""
    threads = torch.get_num_threads()
    yield
    devices.configure("cpu", threads)


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    """A CNN trained on the digits by ``train --device cuda`` (16x16, the demo's size), on the CPU."""
    path = tmp_path_factory.mktemp("cuda") / "cnn.safetensors"
    r = run("train", "--arch", "cnn", "--size", "16", "--epochs", "5", "--out", path, "--device", DEVICE, "--quiet")
    devices.configure("cpu", 1)
    assert r.exit_code == 0, r.output
    return path


def test_train_and_evaluate(model_file):
    r = run("evaluate", "--model", model_file, "--device", DEVICE, "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["test_accuracy"] > 0.5
    if DEVICE == "cuda":  # float32 throughout: no TF32 near a key's decision boundary
        assert not torch.backends.cudnn.allow_tf32 and not torch.backends.cuda.matmul.allow_tf32


@pytest.mark.parametrize("method", ["ipguard", "blind", "frontier-stitching", "zhang-content", "zhang-noise",
                                    "zhang-unrelated", "adi", "new-label"])
def test_every_protection_with_calibration_and_self_check(model_file, tmp_path, method):
    from modelproof.keys.container import load_key
    from modelproof.protections.base import make_protection
    from modelproof.references.protect import ReferenceOptions, protect_to_folder
    from modelproof.util.errors import ConfigError

    devices.configure(DEVICE, 1)
    params = make_protection(method).demo_params | ({"eps": 0.05} if method == "frontier-stitching" else {})
    protection = make_protection(method, **params)
    try:
        outcome = protect_to_folder(protection, tmp_path, model=model_file, dataset="digits", size=16,
                                    options=ReferenceOptions(count=4))
    except ConfigError as exc:  # a refusal (weak key, too few candidates survive selection) is an answer;
        assert "device" not in str(exc), exc  # a device error (a RuntimeError, or worse) is not
        return
    key = load_key(tmp_path / "key.mpkey")
    assert key.inputs.device.type == "cpu" and key.labels.device.type == "cpu"
    assert outcome.key_accuracy >= 0.5, outcome.summary
    r = run("verify", "--key", tmp_path / "key.mpkey", "--suspect", tmp_path / "model.safetensors",
            "--device", DEVICE, "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["decision"] in ("owned", "not owned", "inconclusive")


@pytest.mark.parametrize("method", ["random-fingerprint", "fgsm-fingerprint", "igsm-fingerprint", "cw-l2-fingerprint"])
def test_ipguard_baselines(model_file, method):
    from modelproof.data.splits import load_splits
    from modelproof.models.modelfile import load_model
    from modelproof.protections.base import make_protection

    devices.configure(DEVICE, 1)
    model, splits = load_model(model_file), load_splits("digits", size=16, seed=0)
    params = {"points": 20} | ({"max_iter": 50} if method in ("igsm-fingerprint", "cw-l2-fingerprint") else {}) \
        | ({"binary_steps": 2} if method == "cw-l2-fingerprint" else {})
    key = make_protection(method, **params, secret="s").protect(model, splits.owner, seed=0).key
    assert key.inputs.device.type == "cpu" and len(key) == 20


def test_protect_ipguard_cli_with_references(model_file, tmp_path):
    """The issue's traceback: ``protect ipguard --device cuda``."""
    r = runner.invoke(app, [str(a) for a in ("protect", "ipguard", "--model", model_file, "--points", "30", "--k", "1",
                                             "--max-iter", "200", "--references", "4", "--out", tmp_path,
                                             "--device", DEVICE, "--json")], env={"MODELPROOF_SECRET": "s"})
    assert finished(r), r.output  # a key, or the self-check's one-line refusal of a weak one
    if r.exit_code == 0:
        r = run("calibrate", "--key", tmp_path / "key.mpkey", "--reference", tmp_path / "model.safetensors",
                "--device", DEVICE, "--json")
        assert finished(r), r.output


def test_every_attack(model_file):
    from modelproof.attacks import ATTACKS, make_attack
    from modelproof.data.splits import load_splits
    from modelproof.models.modelfile import load_model, weights_digest
    from modelproof.models.training import predict

    assert set(FAST) == set(ATTACKS)
    devices.configure(DEVICE, 1)
    model, splits = load_model(model_file), load_splits("digits", size=16, seed=0)
    digest = weights_digest(model)
    for name, params in FAST.items():
        out = make_attack(name, **params).attack(model, splits.attacker, seed=1)
        assert weights_digest(model) == digest, name
        assert predict(out, splits.test.images[:5]).device.type == "cpu", name


def test_attack_and_pirate_cli(model_file, tmp_path):
    r = run("attack", "ftal", "--model", model_file, "--out", tmp_path / "ftal.safetensors", "--param", "epochs=1",
            "--device", DEVICE, "--json")
    assert r.exit_code == 0, r.output
    r = run("attack", "pirate", "--model", model_file, "--out", tmp_path / "pirate.safetensors", "--epochs", "2",
            "--width", "0.25", "--surrogate-fraction", "0.2", "--device", DEVICE, "--json")
    assert r.exit_code == 0, r.output
    r = run("evaluate", "--model", tmp_path / "pirate.safetensors", "--device", DEVICE, "--json")
    assert r.exit_code == 0, r.output


def test_forgeries(model_file, tmp_path):
    from modelproof.attacks.forgery import FORGERIES, make_forgery
    from modelproof.data.splits import load_splits
    from modelproof.models.modelfile import load_model
    from modelproof.protections.base import make_protection
    from modelproof.util.errors import ConfigError

    devices.configure(DEVICE, 1)
    model, splits = load_model(model_file), load_splits("digits", size=16, seed=0)
    own = make_protection("zhang-noise", secret="s", key_size=20, epochs=3).protect(model, splits.owner, seed=0)
    small = {"forge-independent-encoder": {"epochs": 1}, "forge-boundary": {"key_size": 20, "max_iter": 50},
             "forge-adversarial": {"key_size": 20, "max_iter": 50}}
    for name in FORGERIES:
        params = small.get(name, {"key_size": 20} if any(p.name == "key_size" for p in FORGERIES[name].PARAMS) else {})
        try:
            key = make_forgery(name, **params).forge(own.model, splits.attacker, own.key.inputs, seed=0)
        except ConfigError as exc:  # e.g. an encoder undertrained in one epoch: a refusal, not a device error
            assert "device" not in str(exc), (name, exc)
            continue
        assert key.inputs.device.type == "cpu", name
    r = run("attack", "forge-boundary", "--model", model_file, "--out", tmp_path / "forged.mpkey",
            "--param", "key_size=20", "--param", "max_iter=50", "--size", "16", "--device", DEVICE, "--json")
    assert finished(r), r.output


def test_experiment_run(tmp_path):
    config = tmp_path / "tiny.toml"
    config.write_text("""
[experiment]
name = "cuda"
seeds = [0]
[[datasets]]
name = "digits"
size = 16
[[hosts]]
arch = "cnn"
epochs = 3
[[protections]]
name = "ipguard"
params = { points = 20, k = 1.0, max_iter = 100 }
[[attacks]]
name = "ftll"
params = { epochs = 1 }
[[negatives]]
arch = "same"
seed = 1
""")
    r = run("experiment", "run", config, "--out", tmp_path / "out", "--device", DEVICE, "--quiet", "--no-report",
            "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["counts"]["failed"] == 0


def test_serve_answers_from_a_gpu_model(model_file):
    pytest.importorskip("fastapi")
    from modelproof.serving.server import ServedModel

    devices.configure(DEVICE, 1)
    served = ServedModel(model_file)
    scores = served.logits(np.zeros((3, 1, 16, 16), dtype=np.float32))
    assert scores.shape == (3, 10) and np.isfinite(scores).all()
