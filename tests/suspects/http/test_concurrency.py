"""HttpSuspect keeps ``concurrency`` requests in flight when one call needs several: answers come back in order,
a failure stops what is not yet sent and is raised, the rate limit holds across threads."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest
import torch
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from modelproof.suspects.http.client import MAX_CONCURRENCY, HttpSuspect
from modelproof.util.errors import ConfigError, SuspectError
from servers import running

pytestmark = pytest.mark.timeout(60)


def labelling_server(*, fail_batch: float | None = None) -> tuple[FastAPI, dict]:
    """A v2 server whose label for an input is round(10 * its first pixel) % 10, answering after a delay that
    varies by batch (later batches often finish first); the batch whose first pixel is ``fail_batch`` gets 400."""
    app, state = FastAPI(), {"in_flight": 0, "most": 0, "asked": []}

    @app.get("/v2/models/m")
    async def metadata() -> dict:
        return {"name": "m", "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 1, 4, 4]}],
                "outputs": [{"name": "label", "datatype": "INT64", "shape": [-1]}]}

    @app.post("/v2/models/m/infer")
    async def infer(request: Request) -> JSONResponse:
        x = np.asarray((await request.json())["inputs"][0]["data"], dtype=np.float32).reshape(-1, 16)
        state["asked"].append(float(x[0, 0]))
        state["in_flight"] += 1
        state["most"] = max(state["most"], state["in_flight"])
        try:
            await asyncio.sleep(0.02 + 0.05 * ((int(x[0, 0] * 1000) * 7) % 5) / 4)
        finally:
            state["in_flight"] -= 1
        if fail_batch is not None and abs(float(x[0, 0]) - fail_batch) < 1e-6:
            return JSONResponse({"error": "this batch is refused"}, status_code=400)
        labels = np.round(x[:, 0] * 10).astype(int) % 10
        return JSONResponse({"outputs": [{"name": "label", "datatype": "INT64", "shape": [len(x)],
                                          "data": labels.tolist()}]})

    return app, state


def images(n: int) -> torch.Tensor:
    x = torch.rand((n, 1, 4, 4), generator=torch.Generator().manual_seed(0))
    x[:, 0, 0, 0] = torch.arange(n) / (n + 1)  # distinct first pixels: each batch is recognisable
    return x


def expected(x: torch.Tensor) -> torch.Tensor:
    return torch.from_numpy(np.round(x[:, 0, 0, 0].numpy() * 10).astype(np.int64) % 10)


@pytest.mark.parametrize("concurrency", [1, 2, 4])
def test_answers_come_back_in_order_with_at_most_concurrency_in_flight(concurrency):
    app, state = labelling_server()
    x = images(83)
    with running(app) as url, HttpSuspect(f"{url}/v2/models/m", batch_size=8, binary=False, num_classes=10,
                                          concurrency=concurrency) as suspect:
        assert torch.equal(suspect.predict(x), expected(x))
    assert len(state["asked"]) == 11 and state["most"] == concurrency


def test_a_failed_batch_is_raised_and_later_batches_are_not_sent():
    x = images(80)
    failing = float(x[3 * 8, 0, 0, 0])  # the fourth batch of ten
    app, state = labelling_server(fail_batch=failing)
    with running(app) as url, HttpSuspect(f"{url}/v2/models/m", batch_size=8, binary=False, num_classes=10, concurrency=2,
                                          retries=0) as suspect:
        with pytest.raises(SuspectError, match="HTTP 400"):
            suspect.predict(x)
        sent = len(state["asked"])
        assert 4 <= sent <= 4 + 2, sent  # at most the batches already in flight when it failed
        time.sleep(0.2)
        assert len(state["asked"]) == sent  # nothing more goes out after the call returned
        assert torch.equal(suspect.predict(x[:8]), expected(x[:8]))  # the suspect still works


def test_the_rate_limit_holds_across_the_threads():
    app, state = labelling_server()
    x = images(64)
    with running(app) as url, HttpSuspect(f"{url}/v2/models/m", batch_size=8, binary=False, num_classes=10, concurrency=4,
                                          rate_limit=40.0) as suspect:
        start = time.monotonic()
        assert torch.equal(suspect.predict(x), expected(x))
        took = time.monotonic() - start
    assert took >= 7 / 40 - 0.01  # 8 requests at 40 per second: the last starts at least 175 ms after the first


@pytest.mark.parametrize("bad", [0, MAX_CONCURRENCY + 1, True, 2.5])
def test_concurrency_out_of_range_is_refused_by_name(bad):
    with pytest.raises(ConfigError, match="--concurrency"):
        HttpSuspect("http://127.0.0.1:9/v2/models/m", concurrency=bad, num_classes=10, input_shape=(1, 4, 4))
