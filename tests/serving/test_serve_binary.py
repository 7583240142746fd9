"""`modelproof serve` and the binary tensor data extension: it advertises it, answers requests built
byte for byte as Triton's Python client (tritonclient.http) builds them, round-trips with our HTTP
suspect, and refuses malformed binary bodies with 400 and a message naming the bad value."""

from __future__ import annotations

import json

import httpx
import numpy as np
import pytest
import torch

from modelproof.models.modelfile import save_model
from modelproof.models.training import logits, predict
from modelproof.serving.server import create_app
from modelproof.suspects.http.client import HttpSuspect
from servers import running

INFER = "/v2/models/cnn/infer"


@pytest.fixture(scope="module")
def model_file(trained_cnn, tmp_path_factory):
    return save_model(trained_cnn, tmp_path_factory.mktemp("serve-binary") / "cnn.safetensors")


@pytest.fixture(scope="module")
def server(model_file):
    with running(create_app(model_file, max_batch=100)) as url, httpx.Client(base_url=url, timeout=10) as client:
        yield client


def tritonclient_request(x: np.ndarray, outputs: list[dict] | None) -> tuple[bytes, dict[str, str]]:
    """The body and headers tritonclient.http's InferenceServerClient.infer sends for one FP32 input set with
    ``InferInput.set_data_from_numpy(x)`` (binary_data=True, its default): the input's parameters hold
    binary_data_size and no data; without requested outputs it sets binary_data_output; the JSON is compact
    (rapidjson), followed by the raw tensor; Inference-Header-Content-Length gives the JSON's length and no
    Content-Type is set (geventhttpclient adds none)."""
    raw = x.astype("<f4").tobytes()
    request: dict = {"inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32",
                                 "parameters": {"binary_data_size": len(raw)}}]}
    if outputs:
        request["outputs"] = outputs
    else:
        request["parameters"] = {"binary_data_output": True}
    text = json.dumps(request, separators=(",", ":"))
    return text.encode() + raw, {"Inference-Header-Content-Length": str(len(text))}


def read_binary_answer(r: httpx.Response) -> dict[str, np.ndarray]:
    """The answer's outputs, parsed by hand as the spec says: JSON of the header's length, then raw tensors."""
    hlen = int(r.headers["inference-header-content-length"])
    head, offset, out = json.loads(r.content[:hlen]), hlen, {}
    for o in head["outputs"]:
        if "parameters" in o and "binary_data_size" in o["parameters"]:
            size = o["parameters"]["binary_data_size"]
            dtype = {"FP32": "<f4", "INT64": "<i8"}[o["datatype"]]
            out[o["name"]] = np.frombuffer(r.content[offset:offset + size], dtype=dtype).reshape(o["shape"])
            offset += size
        else:
            out[o["name"]] = np.asarray(o["data"]).reshape(o["shape"])
    assert offset == len(r.content)
    return out


def test_server_metadata_advertises_the_extension(server):
    assert "binary_tensor_data" in server.get("/v2").json()["extensions"]


def test_a_tritonclient_request_is_answered_in_binary(server, trained_cnn, digits):
    x = digits.test.images[:20]
    body, headers = tritonclient_request(x.numpy(), None)
    r = server.post(INFER, content=body, headers=headers)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/octet-stream"
    out = read_binary_answer(r)
    assert np.allclose(out["logits"], logits(trained_cnn, x).numpy(), atol=1e-5)
    body, headers = tritonclient_request(x.numpy(), [{"name": "label", "parameters": {"binary_data": True}},
                                                     {"name": "logits", "parameters": {"binary_data": False}}])
    r = server.post(INFER, content=body, headers={**headers, "content-type": "application/octet-stream"})
    out = read_binary_answer(r)
    assert out["label"].dtype == np.int64 and out["label"].tolist() == predict(trained_cnn, x).tolist()
    assert np.allclose(out["logits"], logits(trained_cnn, x).numpy(), atol=1e-5)  # this one as JSON


def test_json_request_may_ask_for_binary_outputs_and_json_stays_json(server, trained_cnn, digits):
    x = digits.test.images[:3]
    data = {"inputs": [{"name": "input", "shape": [3, 1, 8, 8], "datatype": "FP32", "data": x.flatten().tolist()}]}
    r = server.post(INFER, json={**data, "parameters": {"binary_data_output": True}})
    assert np.allclose(read_binary_answer(r)["logits"], logits(trained_cnn, x).numpy(), atol=1e-5)
    r = server.post(INFER, json=data)
    assert "inference-header-content-length" not in r.headers and r.headers["content-type"] == "application/json"
    assert len(r.json()["outputs"][0]["data"]) == 30


def test_http_suspect_round_trip_in_binary(model_file, trained_cnn, digits):
    x = digits.test.images[:150]
    with running(create_app(model_file)) as url:
        with HttpSuspect(f"{url}/v2/models/cnn", batch_size=64) as suspect:
            assert suspect.binary is True  # chosen from the server metadata
            assert torch.equal(suspect.predict(x), predict(trained_cnn, x))
        with HttpSuspect(f"{url}/v2/models/cnn", binary=False, parameters={"labels_only": True}) as suspect:
            assert torch.equal(suspect.predict(x), predict(trained_cnn, x))
    with running(create_app(model_file, layout="NHWC", dtype="UINT8", labels_only=True)) as url:
        with HttpSuspect(f"{url}/v2/models/cnn", layout="NHWC", dtype="UINT8", scale=255, num_classes=10) as suspect:
            assert suspect.binary is True
            want = predict(trained_cnn, torch.round(x * 255) / 255)
            assert torch.equal(suspect.predict(x), want)


def _binary_request(shape, raw: bytes, *, size=None, datatype="FP32", extra: bytes = b"", **fields):
    head = json.dumps({"inputs": [{"name": "input", "shape": shape, "datatype": datatype,
                                   "parameters": {"binary_data_size": len(raw) if size is None else size}, **fields}]})
    return head.encode() + raw + extra, str(len(head))


ONE = np.zeros((1, 1, 8, 8), np.float32).tobytes()


@pytest.mark.parametrize("body, header, message", [
    (*_binary_request([1, 1, 8, 8], ONE[:-4], size=256), "binary_data_size is 256 bytes but only 252"),
    (*_binary_request([2, 1, 8, 8], ONE), "binary_data_size is 256 bytes but FP32 [2, 1, 8, 8] needs 512"),
    (*_binary_request([1, 1, 8, 8], ONE, extra=b"\0\0"), "2 bytes follow"),
    (*_binary_request([1, 1, 8, 8], ONE, size=-1), "binary_data_size must be a non-negative integer, got -1"),
    (*_binary_request([1, 1, 8, 8], ONE, size=2.5), "got 2.5"),
    (*_binary_request([1, 1, 8, 8], ONE, data=[0] * 64), "both 'data' and binary_data_size"),
    (*_binary_request([10**15, 1, 8, 8], ONE), "needs 256000000000000000 bytes"),
    (*_binary_request([1, 1, 8, 8], ONE[:64], datatype="UINT8"), "input datatype must be FP32, got 'UINT8'"),
    (*_binary_request([1, 1, 8, 8], np.full(64, np.nan, np.float32).tobytes()), "must be finite"),
    (*_binary_request([1, 8, 8], ONE), "input shape must be [N, 1, 8, 8]"),
    (_binary_request([1, 1, 8, 8], ONE)[0], "x12", "Inference-Header-Content-Length must be a non-negative integer, got 'x12'"),
    (_binary_request([1, 1, 8, 8], ONE)[0], "99999", "Inference-Header-Content-Length is 99999 but the body has only"),
    (_binary_request([1, 1, 8, 8], ONE)[0], "0", "Inference-Header-Content-Length is 0"),
    (_binary_request([1, 1, 8, 8], ONE)[0], "20", "JSON header (20 bytes) is not valid JSON"),
])
def test_malformed_binary_bodies_are_refused_with_400(server, body, header, message):
    r = server.post(INFER, content=body, headers={"Inference-Header-Content-Length": header,
                                                   "content-type": "application/octet-stream"})
    assert r.status_code == 400, r.text
    assert message in r.json()["error"], r.json()["error"]


@pytest.mark.parametrize("parameters, outputs, message", [
    ({"binary_data_output": "yes"}, None, "binary_data_output must be true or false, got 'yes'"),
    (None, [{"name": "logits", "parameters": {"binary_data": 1}}], "binary_data must be true or false, got 1"),
    (None, [{"name": "logits", "parameters": [1]}], "'parameters' must be an object"),
])
def test_bad_binary_output_requests_are_refused_with_400(server, parameters, outputs, message):
    body: dict = {"inputs": [{"name": "input", "shape": [1, 1, 8, 8], "datatype": "FP32", "data": [0.0] * 64}]}
    if parameters:
        body["parameters"] = parameters
    if outputs:
        body["outputs"] = outputs
    r = server.post(INFER, json=body)
    assert r.status_code == 400 and message in r.json()["error"], r.text


def test_binary_bodies_obey_the_body_cap_and_any_content_type(model_file):
    x = np.zeros((20, 1, 8, 8), np.float32)
    body, headers = tritonclient_request(x, None)
    with running(create_app(model_file, max_body=len(body) - 1)) as url, httpx.Client(base_url=url) as client:
        r = client.post(INFER, content=body, headers=headers)
        assert r.status_code == 413 and f"maximum of {len(body) - 1}" in r.json()["error"], r.text
    with running(create_app(model_file, max_body=len(body))) as url, httpx.Client(base_url=url) as client:
        for kind in ("application/octet-stream", "application/json", "text/plain"):
            r = client.post(INFER, content=body, headers={**headers, "content-type": kind})
            assert r.status_code == 200 and read_binary_answer(r)["logits"].shape == (20, 10), r.text
        r = client.post(INFER, content=body, headers={"content-type": "application/octet-stream"})
        assert r.status_code == 415  # without the header, a body that is not JSON is refused as before
