"""HttpSuspect against real uvicorn servers on 127.0.0.1: the `modelproof serve` app, an input-mapping
checker, and servers that misbehave (500s, garbage, wrong counts, NaN, bad labels, sleeping, rate limits)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from modelproof.util.errors import ConfigError, SuspectError
from modelproof.models.modelfile import save_model
from modelproof.serving.server import create_app
from modelproof.suspects.base import BudgetExhausted
from modelproof.suspects.http.client import HttpSuspect
from modelproof.suspects.queried import QueriedSuspect
from modelproof.suspects.local import open_suspect
from modelproof.models.training import predict
from servers import Reply, free_port_url, running, scripted_app, v2_batch, v2_labels

FAST = {"retries": 2, "backoff": 0.01, "timeout": 5.0}
SHAPE = {"num_classes": 10, "input_shape": (1, 8, 8)}


@pytest.fixture(scope="module")
def served(trained_cnn, tmp_path_factory):
    """The real `modelproof serve` app for the trained CNN, on a free port: (base URL, model)."""
    path = save_model(trained_cnn, tmp_path_factory.mktemp("serve") / "cnn.safetensors")
    with running(create_app(path)) as url:
        yield url, trained_cnn


@pytest.fixture()
def script_server():
    """Start a scripted server for a handler; all are shut down after the test."""
    stack = []

    def start(handler):
        app, script = scripted_app(handler)
        ctx = running(app)
        url = ctx.__enter__()
        stack.append(ctx)
        return url, script

    yield start
    for ctx in reversed(stack):
        ctx.__exit__(None, None, None)


def test_v2_logits_and_labels_match_in_process(served, digits):
    url, model = served
    x = digits.test.images
    want = predict(model, x)
    with HttpSuspect(url, model_name="cnn", batch_size=50, **SHAPE) as s:
        assert s.identity == f"{url}/v2/models/cnn/infer"
        assert torch.equal(s.predict(x), want)
    with HttpSuspect(url, model_name="cnn", parameters={"labels_only": True}, batch_size=64, **SHAPE) as s:
        assert torch.equal(s.predict(x), want)


def test_tfserving_style_matches_in_process(served, digits):
    url, model = served
    x = digits.test.images[:100]
    for s in (HttpSuspect(url, protocol="tfserving", model_name="cnn", **SHAPE),
              HttpSuspect(f"{url}/v1/models/cnn:predict", **SHAPE)):
        assert s.protocol == "tfserving" and s.identity == f"{url}/v1/models/cnn:predict"
        assert torch.equal(s.predict(x), predict(model, x))
        s.close()


def test_shapes_from_metadata_and_full_urls(served, digits):
    url, model = served
    x = digits.test.images[:30]
    for spec in (f"{url}/v2/models/cnn", f"{url}/v2/models/cnn/infer"):
        s = open_suspect(spec, batch_size=7)
        assert (s.num_classes, s.input_shape, s.model_name) == (10, (1, 8, 8), "cnn")
        q = QueriedSuspect(s)
        assert torch.equal(q.predict(x), predict(model, x)) and q.queries == 30
    with pytest.raises(ConfigError, match="disagrees"):
        HttpSuspect(f"{url}/v2/models/cnn", model_name="other", **SHAPE)
    with pytest.raises(ConfigError, match="model_name"):
        HttpSuspect(url, **SHAPE)
    with pytest.raises(SuspectError, match="HTTP 404"):  # unknown model: a 4xx, not retried
        HttpSuspect(url, model_name="nope")


def test_input_mapping_nhwc_uint8_0_255(script_server):
    url, script = script_server(lambda i, body: v2_labels([0] * v2_batch(body)))
    x = torch.rand((5, 3, 4, 2), generator=torch.Generator().manual_seed(0))
    s = HttpSuspect(url, model_name="m", layout="NHWC", scale=255, dtype="UINT8", input_name="image",
                    num_classes=3, input_shape=(3, 4, 2))
    assert s.predict(x).tolist() == [0] * 5
    inp = script.bodies[0]["inputs"][0]
    assert script.paths == ["/v2/models/m/infer"]
    assert inp["name"] == "image" and inp["datatype"] == "UINT8" and inp["shape"] == [5, 4, 2, 3]
    got = np.asarray(inp["data"]).reshape(5, 4, 2, 3)
    want = np.rint(x.permute(0, 2, 3, 1).numpy() * 255)
    assert got.dtype.kind == "i" and np.array_equal(got, want)


def test_input_mapping_mean_std_and_tfserving(script_server):
    url, script = script_server(lambda i, body: Reply(200, {"predictions": [[0.1, 0.9]] * len(body["instances"])}))
    x = torch.rand((4, 3, 2, 2), generator=torch.Generator().manual_seed(1))
    mean, std = [120.0, 110.0, 100.0], [60.0, 50.0, 40.0]
    s = HttpSuspect(f"{url}/v1/models/m:predict", layout="NHWC", scale=255, mean=mean, std=std,
                    num_classes=2, input_shape=(3, 2, 2))
    assert s.predict(x).tolist() == [1] * 4
    got = np.asarray(script.bodies[0]["instances"])
    want = ((x.numpy() * 255 - np.array(mean)[:, None, None]) / np.array(std)[:, None, None]).transpose(0, 2, 3, 1)
    assert got.shape == (4, 2, 2, 3) and np.allclose(got, want, atol=1e-4)
    with pytest.raises(ConfigError, match="one value per channel"):
        HttpSuspect(url, model_name="m", mean=[0.5], std=[0.5], num_classes=2, input_shape=(3, 2, 2))
    with pytest.raises(ConfigError, match="UINT8"):
        HttpSuspect(url, model_name="m", dtype="UINT8", mean=mean, std=std, num_classes=2, input_shape=(3, 2, 2))


def test_always_503_retries_then_fails(script_server):
    url, script = script_server(lambda i, body: Reply(503, {"error": "warming up"}))
    s = HttpSuspect(url, model_name="m", retries=2, backoff=0.05, **SHAPE)
    with pytest.raises(SuspectError, match=r"/v2/models/m/infer failed after 3 attempt.*HTTP 503 'warming up'"):
        s.predict(torch.zeros(2, 1, 8, 8))
    assert script.attempts == 3
    gaps = np.diff(script.times)
    assert gaps[0] >= 0.04 and gaps[1] >= 0.08, gaps  # exponential backoff: 0.05 s, then 0.1 s (less arrival jitter)


def test_deterministic_500_fails_at_once_with_the_body_and_the_shape_sent(script_server):
    """A 500 whose body says the shape is wrong cannot succeed on retry: one attempt, the server's words."""
    url, script = script_server(lambda i, body: Reply(500, {"error": "expected input of shape [-1, 64], got [2, 1, 8, 8]"}))
    s = HttpSuspect(url, model_name="m", retries=3, backoff=0.05, **SHAPE)
    with pytest.raises(SuspectError, match=r"HTTP 500, the server said 'expected input of shape \[-1, 64\].*"
                                           r"sent FP32 inputs of shape \[2, 1, 8, 8\], layout NCHW") as err:
        s.predict(torch.zeros(2, 1, 8, 8))
    assert script.attempts == 1 and "failed after" not in str(err.value)


def test_error_bodies_are_trimmed_and_credentials_redacted(script_server):
    token = "s3cr3t-t0ken-value"
    echo = f"unauthorized: header Authorization: Bearer {token} api_key=abcd1234 password: hunter22 " + "x" * 500
    url, script = script_server(lambda i, body: Reply(401, {"error": echo}))
    s = HttpSuspect(f"{url}/v2/models/m?api_key=zzzz9999", headers={"Authorization": f"Bearer {token}"},
                    **FAST, **SHAPE)
    with pytest.raises(SuspectError, match="HTTP 401.*--header") as err:
        s.predict(torch.zeros(1, 1, 8, 8))
    text = str(err.value)
    for secret in (token, "abcd1234", "hunter22", "zzzz9999"):  # userinfo + header: refused (test_hostile_secrets)
        assert secret not in text, text
    assert "[redacted]" in text and len(text) < 500 and script.attempts == 1


def test_429_with_retry_after_is_retried(script_server):
    url, script = script_server(lambda i, body: Reply(429, {"error": "slow down"}, headers={"Retry-After": "0.2"})
                                if i == 0 else v2_labels([1] * v2_batch(body)))
    assert HttpSuspect(url, model_name="m", **FAST, **SHAPE).predict(torch.zeros(2, 1, 8, 8)).tolist() == [1, 1]
    assert script.attempts == 2 and script.times[1] - script.times[0] >= 0.18


def test_500_twice_then_ok_succeeds(script_server):
    url, script = script_server(lambda i, body: Reply(503) if i < 2 else v2_labels([3] * v2_batch(body)))
    q = QueriedSuspect(HttpSuspect(url, model_name="m", retries=3, backoff=0.01, **SHAPE))
    assert q.predict(torch.zeros(4, 1, 8, 8)).tolist() == [3] * 4
    assert script.attempts == 3 and q.queries == 4


def test_4xx_is_not_retried(script_server):
    url, script = script_server(lambda i, body: Reply(400, {"error": "bad input"}))
    with pytest.raises(SuspectError, match="HTTP 400, the server said 'bad input'"):
        HttpSuspect(url, model_name="m", **FAST, **SHAPE).predict(torch.zeros(1, 1, 8, 8))
    assert script.attempts == 1


@pytest.mark.parametrize("reply, msg", [
    (Reply(200, b"<html>oops</html>"), "not JSON"),
    (Reply(200, {"outputs": []}), "outputs"),
    (Reply(200, {"outputs": [{"name": "label", "shape": [3]}]}), "without 'data'"),
    (Reply(200, [1, 2, 3]), "expected an object"),
    (Reply(200, {"outputs": [{"name": "label", "datatype": "INT64", "shape": [2], "data": [1, 2]}]}), "2 results for 3"),
    (Reply(200, {"outputs": [{"name": "l", "datatype": "FP32", "shape": [3, 10], "data": [float("nan")] * 30}]}), "NaN"),
    (Reply(200, {"outputs": [{"name": "label", "datatype": "INT64", "shape": [3], "data": [1, 10, 2]}]}), "label 10 outside"),
    (Reply(200, {"outputs": [{"name": "label", "datatype": "INT64", "shape": [3], "data": [1, -1, 2]}]}), "label -1 outside"),
    (Reply(200, {"outputs": [{"name": "label", "datatype": "FP32", "shape": [3], "data": [1, 2.5, 2]}]}), "non-integer"),
    (Reply(200, {"outputs": [{"name": "s", "datatype": "FP32", "shape": [3, 4], "data": [0.0] * 12}]}), r"expected \[3\] labels or \[3, 10\]"),
    (Reply(200, {"outputs": [{"name": "label", "datatype": "BYTES", "shape": [3], "data": ["a", "b", "c"]}]}), "non-numeric"),
    (Reply(200, {"outputs": [{"name": "label", "datatype": "INT64", "shape": [4], "data": [1, 2, 3]}]}), "do not fit shape"),
])
def test_malformed_answers_are_errors(script_server, reply, msg):
    url, script = script_server(lambda i, body: reply)
    q = QueriedSuspect(HttpSuspect(url, model_name="m", **FAST, **SHAPE))
    with pytest.raises(SuspectError, match=msg):
        q.predict(torch.zeros(3, 1, 8, 8))
    assert q.queries == 0 and script.attempts == 1


def test_sleeping_past_the_timeout(script_server):
    url, script = script_server(lambda i, body: Reply(200, {"outputs": []}, delay=1.0))
    s = HttpSuspect(url, model_name="m", timeout=0.2, retries=1, backoff=0.01, **SHAPE)
    with pytest.raises(SuspectError, match=r"failed after 2 attempt.*within the --timeout of 0.2 s"):
        s.predict(torch.zeros(1, 1, 8, 8))
    assert script.attempts == 2


def test_connection_refused_names_the_url():
    with free_port_url() as url:
        with pytest.raises(SuspectError, match=rf"{url}/v2/models/m/infer failed after 2 attempt.*connection error"):
            HttpSuspect(url, model_name="m", retries=1, backoff=0.01, **SHAPE).predict(torch.zeros(1, 1, 8, 8))


def test_rate_limit_is_respected(script_server):
    url, script = script_server(lambda i, body: v2_labels([1] * v2_batch(body)))
    s = HttpSuspect(url, model_name="m", batch_size=1, rate_limit=20, **SHAPE)
    assert s.predict(torch.zeros(6, 1, 8, 8)).tolist() == [1] * 6
    gaps = np.diff(script.times)  # arrival times jitter by a few ms around the 50 ms the client keeps
    assert script.attempts == 6 and gaps.min() >= 0.025 and script.times[-1] - script.times[0] >= 0.225, gaps


def test_budget_stops_before_sending(script_server):
    url, script = script_server(lambda i, body: v2_labels([1] * v2_batch(body)))
    q = QueriedSuspect(HttpSuspect(url, model_name="m", batch_size=4, **SHAPE), budget=10)
    q.predict(torch.rand(8, 1, 8, 8))
    assert script.attempts == 2
    with pytest.raises(BudgetExhausted):
        q.predict(torch.rand(3, 1, 8, 8))
    assert script.attempts == 2 and q.queries == 8


def test_bad_configuration():
    for kwargs, msg in (({"protocol": "grpc"}, "protocol"), ({"layout": "CHWN"}, "layout"), ({"dtype": "FP16"}, "dtype"),
                        ({"batch_size": 0}, "batch_size"), ({"rate_limit": 0}, "rate_limit"), ({"mean": [0.5]}, "together")):
        with pytest.raises(ConfigError, match=msg):
            HttpSuspect("http://127.0.0.1:9", model_name="m", **{**SHAPE, **kwargs})
    with pytest.raises(ConfigError, match="http"):
        HttpSuspect("ftp://example.com/m", model_name="m", **SHAPE)
    s = HttpSuspect("http://user:secret@127.0.0.1:9/v2/models/m?api_key=k", **SHAPE)
    assert "secret" not in s.identity and "api_key" not in s.identity


def test_named_outputs_and_429(script_server):
    two = {"outputs": [{"name": "label", "datatype": "INT64", "shape": [2], "data": [1, 1]},
                       {"name": "probabilities", "datatype": "FP32", "shape": [2, 3], "data": [0, 0, 1, 0, 0, 1]}]}
    url, _ = script_server(lambda i, body: Reply(200, two))
    assert HttpSuspect(url, model_name="m", num_classes=3, input_shape=(1, 2, 2)).predict(torch.zeros(2, 1, 2, 2)).tolist() == [1, 1]
    s = HttpSuspect(url, model_name="m", output_name="probabilities", num_classes=3, input_shape=(1, 2, 2))
    assert s.predict(torch.zeros(2, 1, 2, 2)).tolist() == [2, 2]
    url, _ = script_server(lambda i, body: Reply(200, {"predictions": [{"classes": 2, "scores": [0.1, 0.2, 0.7]}] * 2}))
    s = HttpSuspect(f"{url}/v1/models/m:predict", num_classes=3, input_shape=(1, 2, 2))
    assert s.predict(torch.zeros(2, 1, 2, 2)).tolist() == [2, 2]
    url, script = script_server(lambda i, body: Reply(429, {"error": "slow down"}))
    with pytest.raises(SuspectError, match="rate_limit"):
        HttpSuspect(url, model_name="m", **FAST, **SHAPE).predict(torch.zeros(1, 1, 8, 8))
    assert script.attempts == 1
