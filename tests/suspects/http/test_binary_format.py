"""The binary tensor data extension on the client side: the body format itself (round trips, strict size
checks), and HttpSuspect against a fake Triton-style server on 127.0.0.1 that parses requests and writes
binary answers by hand, exactly as the extension's spec lays them out (not with our own encoder)."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
import torch
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from modelproof.suspects.http import binary
from modelproof.suspects.http.client import HttpSuspect
from modelproof.util.errors import ConfigError, SuspectError
from servers import running

SHAPE = {"num_classes": 10, "input_shape": (1, 8, 8)}


def test_encode_decode_round_trip_every_kind():
    x = np.arange(24, dtype=np.float32).reshape(2, 3, 4) / 7
    labels = np.array([3, -1, 2**40], dtype=np.int64)
    flags = np.array([True, False, True])
    words = np.array([b"ab", b"", "\u00e9".encode()], dtype=object)
    obj = {"id": "r1", "outputs": [
        {"name": "x", "datatype": "FP32", "shape": [2, 3, 4], "data": x},
        {"name": "labels", "datatype": "INT64", "shape": [3], "data": labels},
        {"name": "flags", "datatype": "BOOL", "shape": [3], "data": flags},
        {"name": "words", "datatype": "BYTES", "shape": [3], "data": words},
        {"name": "json", "datatype": "FP64", "shape": [2], "data": np.array([0.5, 1.5])}]}
    body, length = binary.encode(obj, "outputs", lambda t: t["name"] != "json")
    head = json.loads(body[:length])
    sizes = [t.get("parameters", {}).get("binary_data_size") for t in head["outputs"]]
    assert sizes == [96, 24, 3, 3 * 4 + 2 + 0 + 2, None] and head["outputs"][4]["data"] == [0.5, 1.5]
    assert body[length:length + 96] == x.astype("<f4").tobytes()  # raw little-endian, row-major, right after the JSON
    back = binary.decode(body, str(length), "outputs", "test")
    out = {t["name"]: np.asarray(t["data"]) for t in back["outputs"]}
    assert np.array_equal(out["x"].reshape(2, 3, 4), x) and np.array_equal(out["labels"], labels)
    assert np.array_equal(out["flags"], flags) and list(out["words"]) == list(words) and back["id"] == "r1"
    plain, none = binary.encode(obj, "outputs", False)  # nothing binary: plain JSON, no header length
    assert none is None and json.loads(plain)["outputs"][1]["data"] == labels.tolist()
    assert json.loads(plain)["outputs"][3]["data"] == ["ab", "", "\u00e9"]
    assert binary.headers(None) == {"content-type": "application/json"}
    assert binary.headers(7) == {"content-type": "application/octet-stream", "Inference-Header-Content-Length": "7"}


def _body(tensor: dict, raw: bytes, extra: bytes = b"") -> tuple[bytes, str]:
    head = json.dumps({"outputs": [tensor]}).encode()
    return head + raw + extra, str(len(head))


FP32_2x2 = {"name": "o", "datatype": "FP32", "shape": [2, 2]}


@pytest.mark.parametrize("body, header, message", [
    (*_body({**FP32_2x2, "parameters": {"binary_data_size": 12}}, bytes(12)), "binary_data_size is 12 bytes but FP32 [2, 2] needs 16"),
    (*_body({**FP32_2x2, "parameters": {"binary_data_size": 20}}, bytes(16)), "binary_data_size is 20 bytes but only 16"),
    (*_body({**FP32_2x2, "parameters": {"binary_data_size": 16}}, bytes(16), b"xyz"), "3 bytes follow"),
    (*_body({**FP32_2x2, "parameters": {"binary_data_size": -4}}, b""), "got -4"),
    (*_body({**FP32_2x2, "parameters": {"binary_data_size": "16"}}, bytes(16)), "got '16'"),
    (*_body({**FP32_2x2, "data": [1, 2, 3, 4], "parameters": {"binary_data_size": 16}}, bytes(16)), "both 'data'"),
    (*_body({**FP32_2x2, "datatype": "BF17", "parameters": {"binary_data_size": 16}}, bytes(16)), "got 'BF17'"),
    (*_body({**FP32_2x2, "shape": [2, -2], "parameters": {"binary_data_size": 16}}, bytes(16)), "got [2, -2]"),
    (*_body({"name": "b", "datatype": "BOOL", "shape": [2], "parameters": {"binary_data_size": 2}}, b"\x01\x07"), "got 7"),
    (*_body({"name": "s", "datatype": "BYTES", "shape": [2], "parameters": {"binary_data_size": 9}},
            struct.pack("<I", 1) + b"a" + struct.pack("<I", 9)), "says 9 bytes but only 0 remain"),
    (*_body({"name": "s", "datatype": "BYTES", "shape": [3], "parameters": {"binary_data_size": 5}},
            struct.pack("<I", 1) + b"a"), "cannot hold the 3"),
    (b'{"outputs": []}', "abc", "must be a non-negative integer, got 'abc'"),
    (b'{"outputs": []}', "-3", "got '-3'"),
    (b'{"outputs": []}', "0", "is 0"),
    (b'{"outputs": []}', "99", "is 99 but the body has only 15 bytes"),
    (b'{"outputs": []}xx', "16", "JSON header (16 bytes) is not valid JSON"),
    (json.dumps({"outputs": [{**FP32_2x2, "parameters": {"binary_data_size": 16}}]}).encode(), None,
     "came without an Inference-Header-Content-Length"),
])
def test_malformed_bodies_name_the_bad_value(body, header, message):
    with pytest.raises(binary.BinaryFormatError, match="^test") as err:
        binary.decode(body, header, "outputs", "test")
    assert message in str(err.value)


def test_huge_claimed_shape_is_refused_without_allocating():
    body, header = _body({"name": "o", "datatype": "FP32", "shape": [10**12, 10**6],
                          "parameters": {"binary_data_size": 16}}, bytes(16))
    with pytest.raises(binary.BinaryFormatError, match="needs 4000000000000000000 bytes"):
        binary.decode(body, header, "outputs", "test")


def test_which_outputs_are_asked_binary():
    assert binary.wants_binary({}, None) is False
    assert binary.wants_binary({"parameters": {"binary_data_output": True}}, None) is True
    assert binary.wants_binary({"parameters": {"binary_data_output": True}},
                               {"name": "o", "parameters": {"binary_data": False}}) is False
    assert binary.wants_binary({}, {"name": "o", "parameters": {"binary_data": True}}) is True
    with pytest.raises(binary.BinaryFormatError, match="got 'yes'"):
        binary.wants_binary({"parameters": {"binary_data_output": "yes"}}, None)
    assert binary.advertised({"extensions": ["binary_tensor_data"]}) and not binary.advertised({"extensions": []})


def triton_like(weights: np.ndarray, *, advertise: bool = True, corrupt: bool = False) -> tuple[FastAPI, list]:
    """A Triton-style server for a linear model ``probs = x.flat @ weights``: it reads JSON or binary inputs
    and answers ``probs`` FP32 [N, K] as binary data when asked, parsing and writing bodies by hand."""
    app, seen = FastAPI(), []

    @app.get("/v2")
    async def server_metadata() -> dict:
        return {"name": "triton", "version": "2.50.0",
                "extensions": ["classification", "sequence", "model_repository"] + (["binary_tensor_data"] if advertise else [])}

    @app.get("/v2/models/lin")
    async def model_metadata() -> dict:
        return {"name": "lin", "versions": ["1"], "platform": "onnxruntime_onnx",
                "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 1, 8, 8]}],
                "outputs": [{"name": "probs", "datatype": "FP32", "shape": [-1, weights.shape[1]]}]}

    @app.post("/v2/models/lin/infer")
    async def infer(request: Request) -> Response:
        raw = await request.body()
        hlen = request.headers.get("inference-header-content-length")
        head = json.loads(raw[:int(hlen)] if hlen else raw)
        seen.append({"header_length": hlen, "content_type": request.headers.get("content-type"), "head": head})
        inp = head["inputs"][0]
        if "parameters" in inp and "binary_data_size" in inp["parameters"]:
            x = np.frombuffer(raw[int(hlen):int(hlen) + inp["parameters"]["binary_data_size"]], dtype="<f4")
        else:
            x = np.asarray(inp["data"], dtype=np.float32)
        probs = (x.reshape(inp["shape"][0], -1) @ weights).astype("<f4")
        asked = head.get("parameters", {}).get("binary_data_output", False)
        for out in head.get("outputs", []):
            asked = out.get("parameters", {}).get("binary_data", asked)
        if not asked:
            return JSONResponse({"outputs": [{"name": "probs", "datatype": "FP32", "shape": list(probs.shape),
                                              "data": probs.reshape(-1).tolist()}]})
        data = probs.tobytes()[:-4] if corrupt else probs.tobytes()
        out_head = json.dumps({"model_name": "lin", "model_version": "1", "outputs": [
            {"name": "probs", "datatype": "FP32", "shape": list(probs.shape),
             "parameters": {"binary_data_size": probs.nbytes}}]}).encode()
        return Response(out_head + data, media_type="application/octet-stream",
                        headers={"Inference-Header-Content-Length": str(len(out_head))})

    return app, seen


@pytest.fixture(scope="module")
def weights() -> np.ndarray:
    return np.random.default_rng(0).normal(size=(64, 10)).astype(np.float32)


def test_client_reads_binary_outputs_of_a_triton_style_server(weights):
    x = torch.rand((70, 1, 8, 8), generator=torch.Generator().manual_seed(1))
    want = torch.from_numpy((x.reshape(70, -1).numpy() @ weights).argmax(1))
    app, seen = triton_like(weights)
    with running(app) as url, HttpSuspect(f"{url}/v2/models/lin", batch_size=64) as suspect:
        assert suspect.binary is True and suspect.num_classes == 10  # advertised: chosen automatically
        assert torch.equal(suspect.predict(x), want)
    # two requests in flight at once (the default concurrency): they may arrive in either order
    full, rest = sorted(seen[:2], key=lambda r: -r["head"]["inputs"][0]["shape"][0])
    assert full["content_type"] == "application/octet-stream" and int(full["header_length"]) > 0
    assert full["head"]["inputs"][0]["parameters"] == {"binary_data_size": 64 * 64 * 4}
    assert "data" not in full["head"]["inputs"][0] and full["head"]["parameters"] == {"binary_data_output": True}
    assert rest["head"]["inputs"][0]["shape"] == [6, 1, 8, 8]
    with running(app) as url, HttpSuspect(f"{url}/v2/models/lin", output_name="probs", binary=True) as suspect:
        assert torch.equal(suspect.predict(x), want)
    assert seen[-1]["head"]["outputs"] == [{"name": "probs", "parameters": {"binary_data": True}}]


def test_client_falls_back_to_json_unless_advertised_or_forced(weights):
    x = torch.rand((5, 1, 8, 8), generator=torch.Generator().manual_seed(2))
    want = torch.from_numpy((x.reshape(5, -1).numpy() @ weights).argmax(1))
    app, seen = triton_like(weights, advertise=False)
    with running(app) as url:
        with HttpSuspect(f"{url}/v2/models/lin") as suspect:
            assert suspect.binary is False and torch.equal(suspect.predict(x), want)
        assert seen[-1]["header_length"] is None and seen[-1]["content_type"] == "application/json"
        assert "binary_data_output" not in json.dumps(seen[-1]["head"])
        with HttpSuspect(f"{url}/v2/models/lin", binary=True) as suspect:
            assert torch.equal(suspect.predict(x), want)
        assert seen[-1]["header_length"] is not None
    app, seen = triton_like(weights)
    with running(app) as url, HttpSuspect(f"{url}/v2/models/lin", binary=False) as suspect:
        assert torch.equal(suspect.predict(x), want) and seen[-1]["header_length"] is None


def test_malformed_binary_answer_is_a_suspect_error(weights):
    app, _ = triton_like(weights, corrupt=True)
    with running(app) as url, HttpSuspect(f"{url}/v2/models/lin", retries=0) as suspect:
        with pytest.raises(SuspectError, match=r"answered: output 'probs': binary_data_size is 200 bytes but only "
                                               r"196 bytes remain"):
            suspect.predict(torch.rand(5, 1, 8, 8))


def test_binary_needs_the_v2_protocol():
    with pytest.raises(ConfigError, match="v2 protocol extension; the protocol is 'tfserving'"):
        HttpSuspect("http://127.0.0.1:9/v1/models/m:predict", binary=True, **SHAPE)
