"""Issue 23 from the command line: a crash is never read as a decision (exit 2 for a hostile suspect or file,
4 for an internal error), outputs are not overwritten without --force, secrets never travel on argv."""

from __future__ import annotations

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import Response
from typer.testing import CliRunner

from modelproof.cli.app import app
from modelproof.keys.container import save_key
from modelproof.keys.key import key_from_model
from servers import Reply, running, scripted_app

pytestmark = pytest.mark.timeout(120)
runner = CliRunner()
DEEP = b"[" * 100000 + b"]" * 100000


@pytest.fixture(scope="module")
def key_file(trained_cnn, digits, tmp_path_factory):
    key = key_from_model(trained_cnn, digits.test.images[:30], method="blend-fingerprint", params={},
                         null_match_prob=0.1, null_source="0.1 (test)")
    return save_key(key, tmp_path_factory.mktemp("hostile") / "key.mpkey")


def test_deeply_nested_answers_exit_2_not_1(key_file):
    answer, _ = scripted_app(lambda i, body: Reply(200, DEEP))
    with running(answer) as url:
        r = runner.invoke(app, ["verify", "-k", str(key_file), "-s", f"{url}/v2/models/m", "--retries", "0"])
    assert r.exit_code == 2, r.output
    assert "not JSON" in r.stderr and "Traceback" not in r.output
    meta = FastAPI()

    @meta.get("/v2/models/m")
    async def metadata() -> Response:
        return Response(b'{"inputs": ' + DEEP + b"}", media_type="application/json")

    with running(meta) as url:
        r = runner.invoke(app, ["verify", "-k", str(key_file), "-s", f"{url}/v2/models/m", "--retries", "0"])
    assert r.exit_code == 2 and "Traceback" not in r.output, r.output


def test_an_internal_error_is_exit_4_with_one_line(key_file, monkeypatch, tmp_path):
    import modelproof.verification.verifier as verifier

    def boom(*args, **kwargs):
        raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setattr(verifier, "verify", boom)
    model = tmp_path / "m.safetensors"
    from modelproof.models.modelfile import save_model
    from modelproof.models.training import TrainConfig, train_new
    from modelproof.data.splits import load_splits

    save_model(train_new("mlp", load_splits("digits", seed=0).owner, TrainConfig(epochs=1), seed=0)[0], model)
    r = runner.invoke(app, ["verify", "-k", str(key_file), "-s", str(model)])
    assert r.exit_code == 4 and r.stderr.startswith("error: internal error, not a decision (RecursionError"), r.output
    assert len(r.stderr.strip().splitlines()) == 1


def test_keys_commit_and_verify_report_refuse_to_overwrite_without_force(key_file, trained_cnn, tmp_path):
    from modelproof.keys.commitments import commitment_path
    from modelproof.models.modelfile import save_model

    r = runner.invoke(app, ["keys", "commit", str(key_file)])
    assert r.exit_code == 0, r.output
    committed = commitment_path(key_file)
    before = committed.read_bytes()
    r = runner.invoke(app, ["keys", "commit", str(key_file)])
    assert r.exit_code == 2 and f"{committed} already exists; pass --force" in r.stderr
    assert committed.read_bytes() == before
    assert runner.invoke(app, ["keys", "commit", str(key_file), "--force"]).exit_code == 0
    model = save_model(trained_cnn, tmp_path / "m.safetensors")
    report = tmp_path / "r.json"
    report.write_text("handed over")
    r = runner.invoke(app, ["verify", "-k", str(key_file), "-s", str(model), "--report", str(report)])
    assert r.exit_code == 2 and "already exists" in r.stderr and report.read_text() == "handed over"
    r = runner.invoke(app, ["verify", "-k", str(key_file), "-s", str(model), "--report", str(report), "--force"])
    assert r.exit_code == 0 and report.read_text() != "handed over", r.output


def test_protect_into_a_folder_in_use_is_refused_at_once(tmp_path):
    from modelproof.util.locks import FileLock

    out = tmp_path / "out"
    with FileLock(out, "output folder"):  # a protect run holding the folder
        r = runner.invoke(app, ["protect", "zhang-noise", "--arch", "mlp", "--out", str(out), "--no-calibration"])
    assert r.exit_code == 2 and f"output folder {out} is in use by process" in r.stderr, r.output
    assert not out.exists()


@pytest.mark.parametrize("argv", [
    ["keys", "info", "KEY", "--passphrase", "hunter2-pw"],
    ["verify", "-k", "KEY", "-s", "x.onnx", "--passphrase", "hunter2-pw"],
    ["verify", "-k", "KEY", "-s", "x.onnx", "--report", "r.json", "--sign", "s.key", "--sign-passphrase", "hunter2-pw"],
    ["keys", "gen-signing", "--out", "owner", "--passphrase", "hunter2-pw"],
    ["protect", "zhang-noise", "--arch", "mlp", "--secret", "hunter2-pw"],
    ["protect", "blind", "--arch", "cnn", "--secret", "hunter2-pw"],
])
def test_secrets_on_the_command_line_are_refused_naming_the_safe_ways(argv, key_file, tmp_path):
    argv = [str(key_file) if a == "KEY" else a for a in argv]
    r = runner.invoke(app, argv)
    assert r.exit_code == 2, r.output
    assert "visible to every user of this machine" in r.output and "hunter2-pw" not in r.output
    assert any(way in r.output for way in ("--passphrase-file", "MODELPROOF_SIGN_PASSPHRASE", "--secret-file"))
    assert not (tmp_path / "owner.key").exists()


def test_the_environment_and_files_still_work(key_file, tmp_path):
    from modelproof.keys.container import load_key, save_key

    enc = tmp_path / "enc.mpkey"
    save_key(load_key(key_file), enc, "pw-1234")
    r = runner.invoke(app, ["keys", "info", str(enc)], env={"MODELPROOF_PASSPHRASE": "pw-1234"})
    assert r.exit_code == 0, r.output
    (tmp_path / "pw.txt").write_text("pw-1234\n")
    assert runner.invoke(app, ["keys", "info", str(enc), "--passphrase-file", str(tmp_path / "pw.txt")]).exit_code == 0


def lying_forest_app(forest) -> FastAPI:
    """A scikit-learn forest that takes flat [N, 64] inputs behind metadata claiming [-1, 1, 8, 8]."""
    import numpy as np
    import torch
    from fastapi.responses import JSONResponse

    lying = FastAPI()

    @lying.get("/v2/models/forest")
    async def metadata() -> dict:
        return {"name": "forest", "versions": ["1"], "inputs": [{"name": "input", "datatype": "FP32",
                                                                 "shape": [-1, 1, 8, 8]}],
                "outputs": [{"name": "label", "datatype": "INT64", "shape": [-1, 1]}]}

    @lying.post("/v2/models/forest/infer")
    async def infer(request: Request):
        inp = (await request.json())["inputs"][0]
        if len(inp["shape"]) != 2:
            return JSONResponse({"error": f"Expected 2D array, got {len(inp['shape'])}D array of shape "
                                          f"{inp['shape']}"}, status_code=500)
        x = torch.tensor(np.asarray(inp["data"], dtype=np.float32).reshape(-1, 1, 8, 8))
        labels = forest.predict(x).tolist()
        return {"outputs": [{"name": "label", "datatype": "INT64", "shape": [len(labels), 1], "data": labels}]}

    return lying


def test_the_users_flags_win_over_lying_metadata(key_file, digits):
    from modelproof.suspects.local import train_random_forest

    with running(lying_forest_app(train_random_forest(digits.owner, seed=0))) as url:
        spec = f"{url}/v2/models/forest"
        r = runner.invoke(app, ["verify", "-k", str(key_file), "-s", spec, "--retries", "0"])
        assert r.exit_code == 2 and "try --layout" in r.stderr and "flat" in r.stderr.split("try --layout")[1], r.output
        r = runner.invoke(app, ["verify", "-k", str(key_file), "-s", spec, "--layout", "flat", "--json"])
    assert r.exit_code in (0, 1, 3), r.output
    notes = [line for line in r.stderr.splitlines() if "disagree with the metadata" in line]
    assert len(notes) == 1 and "[-1, 1, 8, 8]" in notes[0] and "['N', 64]" in notes[0]
