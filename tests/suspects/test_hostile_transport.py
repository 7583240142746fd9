"""Issue 23.8: the client's --timeout is a deadline per request (a server dripping bytes cannot hold it), an
answer larger than the request can need is refused while reading, and Retry-After as an HTTP date is honoured."""

from __future__ import annotations

import asyncio
import email.utils
import time

import pytest
import torch
from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response, StreamingResponse

from modelproof.suspects.http.client import HttpSuspect, answer_cap
from modelproof.util.errors import SuspectError
from servers import running

pytestmark = pytest.mark.timeout(60)
SHAPE = {"num_classes": 10, "input_shape": (1, 8, 8)}
ANSWER = b'{"outputs": [{"name": "label", "shape": [1], "datatype": "INT64", "data": [3]}]}'


def test_a_dripping_server_cannot_stretch_the_timeout():
    app = FastAPI()

    @app.post("/v2/models/m/infer")
    async def drip() -> StreamingResponse:
        async def body():
            for byte in ANSWER:
                yield bytes([byte])
                await asyncio.sleep(0.25)

        return StreamingResponse(body(), media_type="application/json")

    with running(app) as url:
        s = HttpSuspect(f"{url}/v2/models/m", timeout=1.0, retries=0, **SHAPE)
        start = time.monotonic()
        with pytest.raises(SuspectError, match="no whole answer within the --timeout of 1 s"):
            s.predict(torch.zeros(1, 1, 8, 8))
        assert time.monotonic() - start < 2.5  # the whole answer would take 20 s
        s.close()


def test_an_answer_larger_than_needed_is_refused_while_reading():
    app = FastAPI()
    sent = []

    @app.post("/v2/models/m/infer")
    async def huge() -> StreamingResponse:
        async def body():
            yield b'{"outputs": [{"name": "label", "shape": [1], "data": [' + b"1," * 10
            for _ in range(200):  # 200 MB if read whole
                sent.append(1)
                yield b"0," * 500_000
            yield b"1]}]}"

        return StreamingResponse(body(), media_type="application/json")

    with running(app) as url:
        with HttpSuspect(f"{url}/v2/models/m", timeout=20.0, retries=0, **SHAPE) as s:
            with pytest.raises(SuspectError, match=rf"answered more than {answer_cap(1, 10)} bytes"):
                s.predict(torch.zeros(1, 1, 8, 8))
    assert answer_cap(1, 10) < 2 * 2 ** 20  # refused after about 1 MB of the 100 MB


def test_retry_after_as_an_http_date_is_honoured():
    app = FastAPI()
    times = []

    @app.post("/v2/models/m/infer")
    async def limited() -> Response:
        times.append(time.monotonic())
        if len(times) == 1:
            when = email.utils.formatdate(time.time() + 2, usegmt=True)
            return JSONResponse({"error": "slow down"}, status_code=429, headers={"Retry-After": when})
        return Response(ANSWER, media_type="application/json")

    with running(app) as url:
        with HttpSuspect(f"{url}/v2/models/m", timeout=5.0, retries=1, backoff=0.01, **SHAPE) as s:
            assert s.predict(torch.zeros(1, 1, 8, 8)).tolist() == [3]
    assert len(times) == 2 and times[1] - times[0] >= 0.9  # whole seconds: the date has 1 s resolution
