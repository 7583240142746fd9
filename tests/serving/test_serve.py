"""`modelproof serve`: the Open Inference Protocol app on a real uvicorn server, its 4xx answers, and the CLI."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time

import httpx
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from modelproof.cli.app import app as cli
from modelproof.util.errors import ConfigError, ModelFileError
from modelproof.models.modelfile import export_onnx, save_model
from modelproof.serving.server import create_app
from modelproof.models.training import logits, predict
from servers import free_port_url, running


@pytest.fixture(scope="module")
def model_file(trained_cnn, tmp_path_factory):
    return save_model(trained_cnn, tmp_path_factory.mktemp("serve") / "cnn.safetensors")


@pytest.fixture(scope="module")
def server(model_file):
    with running(create_app(model_file, max_batch=100)) as url, httpx.Client(base_url=url, timeout=10) as client:
        yield client


def infer_body(x: torch.Tensor, **extra) -> dict:
    return {"inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32", "data": x.flatten().tolist()}], **extra}


def test_health_and_metadata(server):
    assert server.get("/v2/health/live").json() == {"live": True}
    assert server.get("/v2/health/ready").json() == {"ready": True}
    assert server.get("/v2/models/cnn/ready").json() == {"name": "cnn", "ready": True}
    meta = server.get("/v2/models/cnn").json()
    assert meta["name"] == "cnn" and meta["platform"] == "pytorch_safetensors"
    assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 1, 8, 8]}]
    assert {"name": "logits", "datatype": "FP32", "shape": [-1, 10]} in meta["outputs"]
    assert server.get("/v1/models/cnn").json()["model_version_status"][0]["state"] == "AVAILABLE"


def test_infer_returns_logits_and_labels(server, trained_cnn, digits):
    x = digits.test.images[:20]
    r = server.post("/v2/models/cnn/infer", json=infer_body(x, id="req-1"))
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["id"] == "req-1" and out["model_name"] == "cnn"
    (o,) = out["outputs"]
    assert o["name"] == "logits" and o["datatype"] == "FP32" and o["shape"] == [20, 10]
    assert np.allclose(np.asarray(o["data"]).reshape(20, 10), logits(trained_cnn, x).numpy(), atol=1e-5)
    r = server.post("/v2/models/cnn/infer", json=infer_body(x, parameters={"labels_only": True}))
    (o,) = r.json()["outputs"]
    assert o["name"] == "label" and o["datatype"] == "INT64" and o["data"] == predict(trained_cnn, x).tolist()
    r = server.post("/v2/models/cnn/infer", json=infer_body(x, outputs=[{"name": "label"}, {"name": "logits"}]))
    assert [o["name"] for o in r.json()["outputs"]] == ["label", "logits"]


def test_tfserving_predict(server, trained_cnn, digits):
    x = digits.test.images[:7]
    r = server.post("/v1/models/cnn:predict", json={"instances": x.tolist()})
    assert r.status_code == 200, r.text
    assert np.allclose(np.asarray(r.json()["predictions"]), logits(trained_cnn, x).numpy(), atol=1e-5)
    r = server.post("/v1/models/cnn:predict", json={"instances": [{"input": v} for v in x.tolist()],
                                                     "parameters": {"labels_only": True}})
    assert r.json()["predictions"] == predict(trained_cnn, x).tolist()


def test_onnx_model_is_served(trained_cnn, digits, tmp_path):
    path = export_onnx(trained_cnn, tmp_path / "net.onnx")
    x = digits.test.images[:10]
    with running(create_app(path, name="exported")) as url:
        meta = httpx.get(f"{url}/v2/models/exported").json()
        assert meta["platform"] == "onnxruntime_onnx" and meta["inputs"][0]["shape"] == [-1, 1, 8, 8]
        r = httpx.post(f"{url}/v2/models/exported/infer", json=infer_body(x, parameters={"labels_only": True}))
        assert r.json()["outputs"][0]["data"] == predict(trained_cnn, x).tolist()


def good(**change) -> dict:
    inp = {"name": "input", "shape": [2, 1, 8, 8], "datatype": "FP32", "data": [0.5] * 128}
    inp.update(change)
    return {"inputs": [inp]}


@pytest.mark.parametrize("path, body, status, msg", [
    ("/v2/models/cnn/infer", b"{not json", 400, "not valid JSON"),
    ("/v2/models/cnn/infer", b"[1, 2]", 400, "JSON object"),
    ("/v2/models/cnn/infer", {"inputs": []}, 400, "exactly one input"),
    ("/v2/models/cnn/infer", {"inputs": [{"name": "input"}]}, 400, "no 'shape'"),
    ("/v2/models/cnn/infer", good(name="pixels"), 400, "unknown input"),
    ("/v2/models/cnn/infer", good(datatype="UINT8"), 400, "datatype must be FP32"),
    ("/v2/models/cnn/infer", good(shape=[2, 1, 8, 7]), 400, "shape must be"),
    ("/v2/models/cnn/infer", good(shape="2x1x8x8"), 400, "list of integers"),
    ("/v2/models/cnn/infer", good(data=[0.5] * 127), 400, "holds 127 values"),
    ("/v2/models/cnn/infer", good(data=[2.0] * 128), 400, r"\[0, 1\]"),
    ("/v2/models/cnn/infer", good(data=["0.5"] * 128), 400, "must be numbers"),
    ("/v2/models/cnn/infer", good(shape=[0, 1, 8, 8], data=[]), 400, "at least 1"),
    ("/v2/models/cnn/infer", good(shape=[101, 1, 8, 8], data=[0.5] * 6464), 413, "maximum of 100"),
    ("/v2/models/cnn/infer", {**good(), "parameters": {"labels_only": "yes"}}, 400, "labels_only"),
    ("/v2/models/cnn/infer", {**good(), "outputs": [{"name": "probs"}]}, 400, "'outputs'"),
    ("/v2/models/other/infer", good(), 404, "'other' not found"),
    ("/v1/models/cnn:predict", {"instances": [[[[0.5] * 8] * 8]] * 2 + [[[0.5]]]}, 400, "ragged"),
    ("/v1/models/cnn:predict", {"instances": []}, 400, "non-empty"),
    ("/v1/models/cnn:predict", {"instances": [[[[0.5] * 7] * 8]]}, 400, "shape must be"),
    ("/v2/nowhere", good(), 404, "Not Found"),
])
def test_malformed_requests_get_4xx_and_a_message(server, path, body, status, msg):
    r = server.post(path, content=body) if isinstance(body, bytes) else server.post(path, json=body)
    assert r.status_code == status, r.text
    assert set(r.json()) == {"error"}
    assert re.search(msg, r.json()["error"]), r.json()


def test_nan_in_request_is_rejected(server):
    raw = json.dumps(good(data=[float("nan")] * 128)).encode()  # Python's json writes NaN
    r = server.post("/v2/models/cnn/infer", content=raw)
    assert r.status_code == 400 and "finite" in r.json()["error"]
    assert server.get("/v2/models/cnn/infer").status_code == 405


def test_create_app_refuses_bad_files(tmp_path):
    with pytest.raises(ModelFileError, match="not found"):
        create_app(tmp_path / "missing.safetensors")
    (tmp_path / "m.pkl").write_bytes(b"\x80\x04")
    with pytest.raises(ModelFileError, match="expected a .safetensors"):
        create_app(tmp_path / "m.pkl")
    with pytest.raises(ConfigError, match="max_batch"):
        create_app(tmp_path / "m.pkl", max_batch=0)


def test_cli_user_errors(tmp_path):
    r = CliRunner().invoke(cli, ["serve", str(tmp_path / "missing.safetensors")])
    assert r.exit_code == 2 and "error: model file not found" in r.output


def test_cli_serves_until_stopped(model_file, digits, trained_cnn):
    with free_port_url() as url:
        port = url.rsplit(":", 1)[1]
    code = "from modelproof.cli import main; main()"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-c", code, "serve", str(model_file), "--port", port, "--name", "net"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/v2/health/ready", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() >= deadline:
                proc.kill()  # read its output only once it has ended: reading a running server's blocks forever
                pytest.fail(f"the server did not become ready: {proc.communicate(timeout=10)[0]}")
            time.sleep(0.1)
        from modelproof.suspects.local import open_suspect

        x = digits.test.images[:16]
        assert torch.equal(open_suspect(f"{url}/v2/models/net").predict(x), predict(trained_cnn, x))
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=10)
    assert "serving" in out and "/v2/models/net/infer" in out
