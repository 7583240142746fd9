"""Issue 23.7: the bodies a server holds at once share one cap's worth of bytes, first come first served; a body
over the cap is refused at once and its connection closed (the server does not read the rest); the JSON
parser processes are started before serving."""

from __future__ import annotations

import asyncio
import socket

import pytest

from modelproof.models.modelfile import save_model
from modelproof.serving.bodies import BodyBudget
from modelproof.serving.parsers import ParserPool
from modelproof.serving.server import create_app
from servers import running

pytestmark = pytest.mark.timeout(60)


def test_the_budget_is_first_come_first_served_and_never_overdrawn():
    async def scenario() -> list[str]:
        budget, order = BodyBudget(10), []

        async def request(name: str, size: int, seconds: float) -> None:
            async with budget.hold(size):
                assert 0 <= budget.free <= budget.total
                order.append(name)
                await asyncio.sleep(seconds)

        first = asyncio.create_task(request("a6", 6, 0.05))
        await asyncio.sleep(0)
        rest = [asyncio.create_task(request(n, s, 0.01)) for n, s in (("b6", 6), ("c2", 2), ("d50", 50))]
        await asyncio.gather(first, *rest)
        assert budget.free == 10
        return order

    # c2 would fit beside a6 but waits behind b6 (no overtaking: a big body is never starved); d50 is clamped
    # to the whole budget and runs alone.
    assert asyncio.run(scenario()) == ["a6", "b6", "c2", "d50"]


def test_a_client_that_leaves_while_waiting_gives_up_its_place():
    async def scenario() -> None:
        budget = BodyBudget(10)
        async with budget.hold(8):
            held = [budget.hold(8), budget.hold(2)]  # kept: a collected context would give its bytes back
            waiting = asyncio.create_task(held[0].__aenter__())
            behind = asyncio.create_task(held[1].__aenter__())
            await asyncio.sleep(0.01)
            assert not behind.done()  # queued behind the 8
            waiting.cancel()  # the head of the queue leaves: the 2 fits now
            await asyncio.sleep(0.01)
            assert behind.done() and budget.free == 0
        assert budget.free == 8  # the 2 is still held (its context was never exited)
        await held[1].__aexit__(None, None, None)
        assert budget.free == 10

    asyncio.run(scenario())


def test_a_body_over_the_cap_is_refused_without_being_read(trained_cnn, tmp_path):
    model = save_model(trained_cnn, tmp_path / "cnn.safetensors")
    with running(create_app(model, max_body=2 ** 20)) as url:
        host, port = url.rsplit("/", 1)[1].split(":")
        with socket.create_connection((host, int(port)), timeout=10) as s:
            s.sendall(b"POST /v2/models/cnn/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      b"Content-Length: 104857600\r\n\r\n" + b" " * 65536)
            answer = s.recv(4096)
            assert answer.startswith(b"HTTP/1.1 413") and b"connection: close" in answer.lower()
            with pytest.raises(OSError):  # the server closed: the other 100 MB are never read
                for _ in range(1600):
                    s.sendall(b" " * 65536)


def test_warm_starts_every_worker_before_the_first_body():
    pool = ParserPool(workers=2)
    pool.warm()
    assert pool._running == 2 and pool._free.qsize() == 2
    assert pool.parse([b'{"inputs": [{"data": [1.5, 2]}]}'])["inputs"][0]["data"].tolist() == [1.5, 2.0]


def test_small_and_large_bodies_take_different_paths_to_the_same_answers(trained_cnn, tmp_path):
    """A body of at most INLINE_BYTES is parsed and checked on the event loop, a bigger one in a thread, one over
    PROCESS_BYTES in a parser process: the answers are the same, and a small body that claims a big shape (or
    a big body that claims a small one) is refused with the same 400 either way."""
    import httpx
    import numpy as np
    import torch

    from modelproof.serving.bodies import INLINE_BYTES, PROCESS_BYTES

    model = save_model(trained_cnn, tmp_path / "cnn.safetensors")
    x = np.random.default_rng(0).random((1024, 1, 8, 8)).astype(np.float32)
    with torch.no_grad():
        want = trained_cnn(torch.from_numpy(x)).numpy()

    def infer(client: httpx.Client, data: list, shape: list[int]) -> httpx.Response:
        body = {"inputs": [{"name": "input", "datatype": "FP32", "shape": shape, "data": data}]}
        return client.post("/v2/models/cnn/infer", json=body)

    with running(create_app(model)) as url, httpx.Client(base_url=url, timeout=60) as client:
        for n in (1, 200, 1024):  # ~1.3 KB (inline), ~260 KB (thread), ~1.3 MB (process)
            got = infer(client, x[:n].ravel().tolist(), [n, 1, 8, 8])
            assert got.status_code == 200, got.text
            logits = np.asarray(got.json()["outputs"][0]["data"], dtype=np.float32).reshape(n, -1)
            np.testing.assert_allclose(logits, want[:n], rtol=1e-4, atol=1e-5)
        assert len(json_bytes := str(x[:1].ravel().tolist())) < INLINE_BYTES
        assert len(str(x.ravel().tolist())) > PROCESS_BYTES > len(json_bytes)
        small_claims_big = infer(client, x[:1].ravel().tolist(), [2, 1, 8, 8])
        big_claims_small = infer(client, x.ravel().tolist(), [1, 1, 8, 8])
        for bad in (small_claims_big, big_claims_small):
            assert bad.status_code == 400 and "holds" in bad.json()["error"]


def test_the_heap_is_tuned_where_glibc_is_the_allocator():
    """serve and its parser workers fix glibc's mmap threshold and arena count (the server's growth under 32
    clients with maximal batches in flight went from 5.6x to 2.2x the largest body in benchmarks/serve_load.py)."""
    import platform
    import sys

    from modelproof.serving.heap import tune_heap

    expected = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"
    assert tune_heap() is expected
