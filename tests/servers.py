"""Test helpers: run an ASGI app with a real uvicorn server on 127.0.0.1, and scriptable misbehaving servers."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import Response


@contextmanager
def running(app: Any, *, startup_timeout: float = 10.0) -> Iterator[str]:
    """Serve ``app`` on a free port of 127.0.0.1 in a background thread; yields the base URL."""
    # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY only on sockets whose proto says TCP, and without
    # it every response pays Nagle + delayed ACK (about 40 ms).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off", timeout_graceful_shutdown=1)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + startup_timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


@contextmanager
def free_port_url() -> Iterator[str]:
    """A URL on 127.0.0.1 where nothing listens (the port is bound, never listened on, for the duration)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        sock.close()


@dataclass
class Reply:
    """What a scripted server answers: status, body (bytes, or JSON-able), and a delay before answering."""

    status: int = 200
    body: Any = None
    delay: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Script:
    """A scripted server's log: each request's arrival time, path and parsed JSON body."""

    handler: Callable[[int, dict], Reply]
    times: list[float] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    bodies: list[Any] = field(default_factory=list)

    @property
    def attempts(self) -> int:
        return len(self.times)


def scripted_app(handler: Callable[[int, dict], Reply]) -> tuple[FastAPI, Script]:
    """An app answering every POST with ``handler(request_index, json_body)``; returns it and its log."""
    script = Script(handler)
    app = FastAPI()

    @app.post("/{path:path}")
    async def any_post(path: str, request: Request) -> Response:
        script.times.append(time.monotonic())
        script.paths.append("/" + path)
        raw = await request.body()
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        script.bodies.append(body)
        reply = handler(len(script.times) - 1, body)
        if reply.delay:
            await asyncio.sleep(reply.delay)
        content = reply.body if isinstance(reply.body, bytes) else json.dumps(reply.body).encode()
        return Response(content, status_code=reply.status, media_type="application/json", headers=reply.headers)

    return app, script


def v2_labels(labels: list[int], *, name: str = "label") -> Reply:
    """A well-formed v2 answer carrying ``labels``."""
    return Reply(200, {"outputs": [{"name": name, "datatype": "INT64", "shape": [len(labels)], "data": labels}]})


def v2_batch(body: dict) -> int:
    """The batch size of a v2 request body."""
    return int(body["inputs"][0]["shape"][0])


def guarded(app: Any, *, token: str | None = None, metadata: bool = True) -> Callable:
    """``app`` behind a bearer-token check (401 without it) and, with ``metadata=False``, no GET endpoints (404)."""
    from fastapi.responses import JSONResponse

    async def asgi(scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] == "http":
            headers = dict(scope["headers"])
            refusal = None
            if token is not None and headers.get(b"authorization") != f"Bearer {token}".encode():
                refusal = JSONResponse({"error": "missing or bad bearer token"}, status_code=401)
            elif not metadata and scope["method"] == "GET":
                refusal = JSONResponse({"error": "not found"}, status_code=404)
            if refusal is not None:
                await refusal(scope, receive, send)
                return
        await app(scope, receive, send)

    return asgi


def flat_label_app(estimator: Any, *, features: int, name: str = "forest", top: float = 16.0) -> FastAPI:
    """A scikit-learn model behind the v2 protocol as such servers are deployed: input ``features`` FP64
    [N, features] in [0, top], output ``label`` INT64 [N, 1] only, metadata without a class count."""
    import numpy as np
    from fastapi.responses import JSONResponse

    app = FastAPI()
    meta = {"name": name, "versions": ["3"], "platform": "sklearn",
            "inputs": [{"name": "features", "datatype": "FP64", "shape": [-1, features]}],
            "outputs": [{"name": "label", "datatype": "INT64", "shape": [-1, 1]}]}

    @app.get(f"/v2/models/{name}")
    async def metadata() -> dict:
        return meta

    @app.post(f"/v2/models/{name}/infer")
    async def infer(request: Request) -> Any:
        inp = (await request.json())["inputs"][0]
        shape = inp.get("shape")
        if inp.get("name") != "features" or inp.get("datatype") != "FP64" or len(shape) != 2 or shape[1] != features:
            return JSONResponse({"error": f"expected input 'features' FP64 of shape [-1, {features}], got "
                                          f"{inp.get('name')!r} {inp.get('datatype')} {shape}"}, status_code=500)
        x = np.asarray(inp["data"], dtype=np.float64).reshape(shape)
        if x.min() < 0 or x.max() > top:
            return JSONResponse({"error": f"feature values must lie in [0, {top:g}]"}, status_code=400)
        labels = estimator.predict(x).astype(int).tolist()
        return {"model_name": name, "model_version": "3",
                "outputs": [{"name": "label", "datatype": "INT64", "shape": [len(labels), 1], "data": labels}]}

    return app
