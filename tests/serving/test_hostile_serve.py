"""Issue 23.7: the server caps a body while reading it (chunked uploads too), parses it off the event loop,
answers 400 for JSON nested too deeply and 415 for a body that is not JSON, and its default cap follows the
largest batch the model accepts."""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from modelproof.models.modelfile import save_model
from modelproof.serving.bodies import BYTES_PER_VALUE, body_cap
from modelproof.serving.server import create_app
from servers import running

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def model_file(trained_cnn, tmp_path_factory):
    return save_model(trained_cnn, tmp_path_factory.mktemp("hostile-serve") / "cnn.safetensors")


def test_the_default_cap_follows_the_largest_batch(model_file):
    app = create_app(model_file, max_batch=1024)
    assert app.state.max_body == body_cap([1, 8, 8], 1024) == 1024 * 64 * BYTES_PER_VALUE + 2 ** 20
    assert body_cap([3, 32, 32], 1024) < 80 * 2 ** 20  # a batch of 1,024 CIFAR images is about 40 MB of JSON


def test_chunked_bodies_are_capped_while_reading(model_file):
    def chunks():
        for _ in range(64):  # 64 MB, no Content-Length: only a cap counted while reading can refuse it
            yield b" " * 2 ** 20

    with running(create_app(model_file, max_body=4 * 2 ** 20)) as url:
        r = httpx.post(f"{url}/v2/models/cnn/infer", content=chunks(), timeout=30,
                       headers={"content-type": "application/json"})
        assert "content-length" not in r.request.headers
        assert r.status_code == 413 and "is over this server's maximum of 4194304 bytes" in r.json()["error"]
        r = httpx.post(f"{url}/v2/models/cnn/infer", content=b"{" + b" " * (5 * 2 ** 20) + b"}", timeout=30)
        assert r.status_code == 413


def test_nesting_too_deep_is_400_and_non_json_is_415(model_file):
    with running(create_app(model_file, max_body=16 * 2 ** 20)) as url:
        r = httpx.post(f"{url}/v2/models/cnn/infer", content=b'{"inputs": ' + b"[" * 100000 + b"]" * 100000 + b"}",
                       headers={"content-type": "application/json"})
        assert r.status_code == 400 and "nested too deeply" in r.json()["error"]
        padded = b'{"pad": "' + b"x" * (5 * 2 ** 20) + b'", "inputs": ' + b"[" * 100000 + b"]" * 100000 + b"}"
        r = httpx.post(f"{url}/v2/models/cnn/infer", content=padded, timeout=30)  # parsed in the worker process
        assert r.status_code == 400 and "nested too deeply" in r.json()["error"]
        r = httpx.post(f"{url}/v2/models/cnn/infer", content=b"inputs=1", headers={"content-type": "text/plain"})
        assert r.status_code == 415 and "text/plain" in r.json()["error"]
        r = httpx.post(f"{url}/v1/models/cnn:predict", content=b"x", headers={"content-type": "application/xml"})
        assert r.status_code == 415


def test_a_large_body_does_not_stall_the_health_check(model_file):
    big = b'{"inputs": [{"name": "input", "shape": [1, 1, 8, 8], "datatype": "FP32", "data": [' + \
        b", ".join([b"0.6274510025978088"] * 1_500_000) + b"]}]}"  # about 30 MB: parsed, then refused (400)
    with running(create_app(model_file, max_body=64 * 2 ** 20)) as url:
        result = {}

        def upload():
            result["status"] = httpx.post(f"{url}/v2/models/cnn/infer", content=big, timeout=60).status_code

        worker = threading.Thread(target=upload)
        worker.start()
        worst = 0.0
        with httpx.Client(timeout=10) as client:
            while worker.is_alive():
                start = time.monotonic()
                assert client.get(f"{url}/v2/health/live").status_code == 200
                worst = max(worst, time.monotonic() - start)
                time.sleep(0.02)
        worker.join()
    assert result["status"] == 400 and worst < 1.0, worst
