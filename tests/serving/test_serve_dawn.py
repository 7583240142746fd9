"""`modelproof serve` with DAWN on a real server: altered answers, logged for the asking client only, privately."""

from __future__ import annotations

import os
import stat

import httpx
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from modelproof.cli.app import app as cli
from modelproof.models.modelfile import save_model, weights_digest
from modelproof.models.training import logits as model_logits
from modelproof.protections.watermarks.dawn import DawnRule
from modelproof.protections.watermarks.dawn_log import client_file, clients, read_pairs
from modelproof.serving.dawn import DawnServing, model_digest
from modelproof.serving.server import create_app
from servers import running

SECRET = "serve-dawn-test-secret-0123456789"
runner = CliRunner()


@pytest.fixture(scope="module")
def model_file(trained_cnn, tmp_path_factory):
    return save_model(trained_cnn, tmp_path_factory.mktemp("dawn") / "cnn.safetensors")


def body(x: torch.Tensor, **extra) -> dict:
    return {"inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32", "data": x.flatten().tolist()}],
            **extra}


def test_altered_answers_are_logged_for_their_client_only(model_file, trained_cnn, digits, tmp_path):
    log = tmp_path / "log"
    dawn = DawnServing(SECRET, log, model=model_digest(model_file), rate=0.3, client_header="X-Client")
    assert dawn.model == weights_digest(trained_cnn)
    x, y = digits.test.images[:60], digits.test.images[60:100]
    expected, labels, mask, _ = DawnRule(SECRET, 0.3).alter(x, model_logits(trained_cnn, x).numpy())
    with running(create_app(model_file, dawn=dawn)) as url, httpx.Client(base_url=url, timeout=10) as http:
        r = http.post("/v2/models/cnn/infer", json=body(x, outputs=[{"name": "logits"}, {"name": "label"}]),
                      headers={"X-Client": "alice"})
        assert r.status_code == 200, r.text
        scores, answered = (np.asarray(o["data"]) for o in r.json()["outputs"])
        assert np.array_equal(answered, labels) and np.allclose(scores.reshape(60, 10), expected, atol=1e-5)
        again = http.post("/v1/models/cnn:predict", json={"instances": x.tolist(), "parameters": {"labels_only": True}},
                          headers={"X-Client": "alice"}).json()["predictions"]
        assert again == labels.tolist()  # deterministic: a re-asked input gets the same answer
        assert http.post("/v2/models/cnn/infer", json=body(y), headers={"X-Client": "bob"}).status_code == 200
        missing = http.post("/v2/models/cnn/infer", json=body(y))
        assert missing.status_code == 400 and "'x-client' header" in missing.json()["error"]
    alice, skipped = read_pairs(log, "alice")
    assert skipped == 0 and len(alice) == 2 * int(mask.sum()) > 0  # both requests: the same pairs twice
    assert [p.label for p in alice[:int(mask.sum())]] == labels[mask].tolist()
    assert all(p.label != p.answer and p.model == dawn.model for p in alice)
    bob_mask = DawnRule(SECRET, 0.3).alter(y, model_logits(trained_cnn, y).numpy())[2]
    assert clients(log) == ({"alice": len(alice), "bob": int(bob_mask.sum())} if bob_mask.any() else {"alice": len(alice)})
    assert stat.S_IMODE(os.stat(log).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(client_file(log, "alice")).st_mode) == 0o600
    assert dawn.answered == 60 + 60 + 40 and dawn.altered == len(alice) + int(bob_mask.sum())


def test_the_client_is_the_remote_address_by_default(model_file, digits, tmp_path):
    dawn = DawnServing(SECRET, tmp_path / "log", model=model_digest(model_file), rate=1.0)
    with running(create_app(model_file, dawn=dawn)) as url, httpx.Client(base_url=url, timeout=10) as http:
        r = http.post("/v2/models/cnn/infer", json=body(digits.test.images[:5], parameters={"labels_only": True}))
        assert r.status_code == 200, r.text
    assert clients(tmp_path / "log") == {"127.0.0.1": 5}


def test_serve_refuses_a_dawn_secret_on_argv_and_misfit_options(model_file, tmp_path):
    r = runner.invoke(cli, ["serve", str(model_file), "--dawn-secret", SECRET, "--dawn-log", str(tmp_path)])
    assert r.exit_code == 2 and "visible to every user of this machine" in r.output and SECRET not in r.output
    secret_file = tmp_path / "dawn.secret"
    secret_file.write_text(SECRET + "\n")
    r = runner.invoke(cli, ["serve", str(model_file), "--dawn-secret-file", str(secret_file)])
    assert r.exit_code == 2 and "needs --dawn-log" in r.output and SECRET not in r.output
    r = runner.invoke(cli, ["serve", str(model_file), "--dawn-log", str(tmp_path / "log")])
    assert r.exit_code == 2 and "need a DAWN secret" in r.output
    secret_file.write_text("too-short\n")
    r = runner.invoke(cli, ["serve", str(model_file), "--dawn-secret-file", str(secret_file), "--dawn-log",
                            str(tmp_path / "log")])
    assert r.exit_code == 2 and "at least 16 characters" in r.output and "too-short" not in r.output


def test_keys_dawn_lists_clients_and_refuses_a_log_too_short(model_file, trained_cnn, digits, tmp_path):
    from modelproof.models.training import TrainConfig, train_new
    from modelproof.protections.watermarks.dawn_log import append_pairs, log_pairs

    x = digits.test.images[:8]
    rule = DawnRule(SECRET, 1.0)
    _, labels, _, q = rule.alter(x, model_logits(trained_cnn, x).numpy())
    answers = model_logits(trained_cnn, x).argmax(1).tolist()
    append_pairs(tmp_path / "log", log_pairs(list(zip(q, answers, labels.tolist())), client="10.1.2.3", classes=10,
                                             model=weights_digest(trained_cnn), rate=1.0))
    r = runner.invoke(cli, ["keys", "dawn", "--log", str(tmp_path / "log")])
    assert r.exit_code == 0 and "10.1.2.3: 8 altered answer(s)" in r.output, r.output
    refs = []
    for seed in range(4):
        net = train_new("mlp", digits.owner, TrainConfig(epochs=2), seed=seed)[0]
        refs += ["--reference", str(save_model(net, tmp_path / f"ref{seed}.safetensors"))]
    out = tmp_path / "k.mpkey"
    r = runner.invoke(cli, ["keys", "dawn", "--log", str(tmp_path / "log"), "--client", "10.1.2.3", "--out", str(out),
                            "--model", str(model_file), *refs])
    assert r.exit_code == 2 and "10.1.2.3" in r.output and "reference" in r.output and not out.exists(), r.output
