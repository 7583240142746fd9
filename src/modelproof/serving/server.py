"""Serving: a model file over the Open Inference Protocol (KServe v2 REST) and TF-Serving REST.

:func:`create_app` loads a modelproof ``.safetensors`` model (never a pickle) or an ``.onnx`` file and
returns a FastAPI app with the v2 health, metadata and infer endpoints plus TF-Serving's ``:predict``.
Inputs are float32 NCHW in [0,1] by default, as everywhere in modelproof; ``layout`` (NHWC, flat,
flat-NHWC) and ``dtype`` (UINT8: 0-255) make it expect what many real deployments expect, so the HTTP
adapter's options can be tested against our own server. Answers are logits (``logits`` FP32 [N, K]) or,
with ``parameters: {"labels_only": true}``, labels (``label`` INT64 [N]); ``labels_only=True`` serves
labels [N, 1] only and advertises no class count (a thin deployment). Malformed requests get a 4xx
status and ``{"error": message}``. This is how users and tests stand up a remote suspect. With DAWN
(:mod:`.dawn`) a keyed share of the answers is altered and logged per client.
"""

from __future__ import annotations

import errno
import logging
import socket
from pathlib import Path
from typing import Any

import numpy as np
import torch
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import __version__
from ..suspects.http import binary
from ..util.errors import ConfigError, ModelFileError
from .bodies import (BodyBudget, DropQueryStrings, Reject, body_bytes, body_cap, by_size, read_infer, read_json,
                     warm_parsers)
from .heap import tune_heap

MAX_BATCH = 1024
OUTPUTS = ("logits", "label")
LAYOUTS = ("NCHW", "NHWC", "flat", "flat-NHWC")
DTYPES = ("FP32", "UINT8")


class ServedModel:
    """A loaded model: name, platform, input shape, number of classes and ``logits(x)``."""

    def __init__(self, path: str | Path, name: str | None = None, *, layout: str = "NCHW", dtype: str = "FP32",
                 labels_only: bool = False) -> None:
        if layout not in LAYOUTS or dtype not in DTYPES:
            raise ConfigError(f"layout must be one of {', '.join(LAYOUTS)} and dtype one of {', '.join(DTYPES)}; "
                              f"got {layout!r}, {dtype!r}")
        self.layout, self.dtype, self.labels_only = layout, dtype, bool(labels_only)
        path = Path(path)
        suffix = path.suffix.lower()
        self.name = name or path.stem
        if not self.name or any(c in self.name for c in "/:?#% "):
            raise ConfigError(f"model name must be non-empty without '/', ':', '?', '#', '%' or spaces, got {self.name!r}")
        if suffix == ".safetensors":
            from ..suspects.local import TorchSuspect
            from ..models.modelfile import load_model

            self._torch = TorchSuspect(load_model(path))
            self.platform, self._onnx = "pytorch_safetensors", None
            self.input_shape, self.num_classes = self._torch.input_shape, self._torch.num_classes
        elif suffix == ".onnx":
            from ..suspects.local import OnnxSuspect

            self._onnx = OnnxSuspect(path)
            if not self._onnx.outputs_scores:
                raise ModelFileError(f"{path}: serving needs an ONNX graph whose first output is [N, K] scores")
            self.platform, self._torch = "onnxruntime_onnx", None
            self.input_shape, self.num_classes = self._onnx.input_shape, self._onnx.num_classes
        else:
            raise ModelFileError(f"cannot serve {path}: expected a .safetensors model file or an .onnx file")

    def logits(self, x: np.ndarray) -> np.ndarray:
        """Float32 logits [N, K] for float32 NCHW inputs."""
        images = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
        if self._torch is not None:
            return self._torch.logits(images).numpy()
        return np.asarray(self._onnx.outputs(images), dtype=np.float32)  # type: ignore[union-attr]

    @property
    def wire_shape(self) -> list[int]:
        """The shape of one input as sent over the wire (the layout's order)."""
        c, h, w = self.input_shape
        return {"NCHW": [c, h, w], "NHWC": [h, w, c]}.get(self.layout, [c * h * w])

    def to_nchw(self, arr: np.ndarray) -> np.ndarray:
        """Wire-layout inputs [N, *wire_shape] as NCHW."""
        c, h, w = self.input_shape
        if self.layout in ("NHWC", "flat-NHWC"):
            return arr.reshape(len(arr), h, w, c).transpose(0, 3, 1, 2)
        return arr.reshape(len(arr), c, h, w)

    def metadata(self) -> dict[str, Any]:
        """The v2 model metadata document."""
        outputs = [{"name": "label", "datatype": "INT64", "shape": [-1, 1]}] if self.labels_only else [
            {"name": "logits", "datatype": "FP32", "shape": [-1, self.num_classes]},
            {"name": "label", "datatype": "INT64", "shape": [-1]}]
        return {"name": self.name, "versions": ["1"], "platform": self.platform,
                "inputs": [{"name": "input", "datatype": self.dtype, "shape": [-1, *self.wire_shape]}],
                "outputs": outputs}


def _as_images(data: Any, shape: list[int], served: ServedModel, max_batch: int) -> np.ndarray:
    """Validated float32 NCHW images in [0,1] from JSON numbers and a claimed shape [N, *wire_shape]."""
    if len(shape) != 1 + len(served.wire_shape) or list(shape[1:]) != served.wire_shape:
        raise Reject(400, f"input shape must be [N, {', '.join(map(str, served.wire_shape))}] (layout "
                     f"{served.layout}), got {shape}")
    if shape[0] < 1:
        raise Reject(400, f"batch size must be at least 1, got {shape[0]}")
    if shape[0] > max_batch:
        raise Reject(413, f"batch of {shape[0]} inputs is over this server's maximum of {max_batch}")
    try:
        arr = np.asarray(data)
    except ValueError:
        raise Reject(400, "input data is a ragged array") from None
    if arr.dtype.kind not in "iuf":
        raise Reject(400, f"input data must be numbers, got JSON of numpy kind {arr.dtype.kind!r}")
    need = int(np.prod(shape))
    if arr.size != need:
        raise Reject(400, f"input data holds {arr.size} values but shape {shape} needs {need}")
    arr = arr.astype(np.float32, copy=False).reshape(shape)
    top = 255.0 if served.dtype == "UINT8" else 1.0
    if not np.isfinite(arr).all() or arr.min() < 0.0 or arr.max() > top:
        raise Reject(400, f"input values must be finite and lie in [0, {top:g}], got [{arr.min():.3g}, {arr.max():.3g}]")
    if served.dtype == "UINT8":
        if not np.array_equal(arr, np.round(arr)):
            raise Reject(400, "UINT8 input values must be integers")
        arr = arr / np.float32(255.0)
    return np.ascontiguousarray(served.to_nchw(arr))


def _labels_only(body: dict) -> bool:
    params = body.get("parameters", {})
    if not isinstance(params, dict):
        raise Reject(400, f"'parameters' must be an object, got {type(params).__name__}")
    flag = params.get("labels_only", False)
    if not isinstance(flag, bool):
        raise Reject(400, f"parameters.labels_only must be true or false, got {flag!r}")
    return flag


def _reply(reply: dict, binary_outputs: set[str]) -> Response:
    """The infer answer: JSON, or with the outputs named in ``binary_outputs`` as raw bytes after the JSON."""
    content, length = binary.encode(reply, "outputs", lambda o: o["name"] in binary_outputs)
    return Response(content, headers=binary.headers(length))


async def _run(served: ServedModel, images: np.ndarray, request: Request, dawn: Any) -> tuple[np.ndarray, np.ndarray]:
    """(scores, labels) to answer: the model's, or with ``dawn`` (a :class:`~.dawn.DawnServing`) its altered ones."""
    logits = await run_in_threadpool(served.logits, images)
    if not np.isfinite(logits).all():
        raise Reject(500, "the model produced NaN or infinite logits")
    if dawn is None:
        return logits, logits.argmax(axis=1).astype(np.int64)
    return await run_in_threadpool(dawn.answer, dawn.client(request), images, logits)


def create_app(model_path: str | Path, *, name: str | None = None, max_batch: int = MAX_BATCH,
               layout: str = "NCHW", dtype: str = "FP32", labels_only: bool = False,
               max_body: int | None = None, dawn: Any = None) -> FastAPI:
    """A FastAPI app serving one model file (name defaults to the file stem); see the module for the options.

    ``dawn``: a :class:`~modelproof.serving.dawn.DawnServing` that alters and logs a keyed share of the answers.

    ``max_body`` caps a request body in bytes (default :func:`body_cap`: the largest batch as JSON), enforced
    while reading; bodies are parsed and decoded in a worker thread, not on the event loop.
    """
    if max_batch < 1:
        raise ConfigError(f"max_batch must be at least 1, got {max_batch}")
    served = ServedModel(model_path, name, layout=layout, dtype=dtype, labels_only=labels_only)
    cap = body_cap(served.wire_shape, max_batch) if max_body is None else int(max_body)
    if cap < 1024:
        raise ConfigError(f"max_body must be at least 1024 bytes, got {cap}")
    app = FastAPI(title="modelproof serve", version=__version__, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.served, app.state.max_body, app.state.dawn = served, cap, dawn
    budget = BodyBudget(cap)  # raw request bytes held at once: one maximal body's worth

    @app.exception_handler(Reject)
    async def _reject(_: Request, exc: Reject) -> JSONResponse:
        # Over the cap: close the connection (RFC 9110 allows it after a 413) rather than read and discard the
        # rest of the body, which a client sending huge bodies in a loop would make the server do at 1 GB/s.
        headers = {"connection": "close"} if exc.status == 413 else None
        return JSONResponse({"error": exc.message}, status_code=exc.status, headers=headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code)

    @app.exception_handler(Exception)
    async def _crash(_: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"error": f"internal error: {type(exc).__name__}: {str(exc)[:200]}"}, status_code=500)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"error": f"invalid request: {exc.errors()}"}, status_code=400)

    def model_named(model: str) -> ServedModel:
        if model != served.name:
            raise Reject(404, f"model {model!r} not found; this server serves {served.name!r}")
        return served

    @app.get("/v2/health/live")
    async def live() -> dict:
        return {"live": True}

    @app.get("/v2/health/ready")
    async def ready() -> dict:
        return {"ready": True}

    @app.get("/v2")
    async def server_metadata() -> dict:
        return {"name": "modelproof", "version": __version__, "extensions": [binary.EXTENSION]}

    @app.get("/v2/models/{model}")
    async def model_metadata(model: str) -> dict:
        return model_named(model).metadata()

    @app.get("/v2/models/{model}/ready")
    async def model_ready(model: str) -> dict:
        return {"name": model_named(model).name, "ready": True}

    @app.post("/v2/models/{model}/infer")
    async def infer(model: str, request: Request) -> Response:
        m = model_named(model)
        body = await read_infer(request, cap, budget)
        inputs = body.get("inputs")
        if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
            raise Reject(400, "'inputs' must be a list holding exactly one input object")
        inp = inputs[0]
        for key in ("name", "shape", "datatype", "data"):
            if key not in inp:
                raise Reject(400, f"the input object has no {key!r}")
        if inp["name"] != "input":
            raise Reject(400, f"unknown input {inp['name']!r}; this model's input is 'input'")
        if inp["datatype"] != m.dtype:
            raise Reject(400, f"input datatype must be {m.dtype}, got {inp['datatype']!r}")
        shape = inp["shape"]
        if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) for d in shape):
            raise Reject(400, f"input shape must be a list of integers, got {shape!r}")
        wanted = ["label"] if _labels_only(body) or m.labels_only else ["logits"]
        if "outputs" in body:
            req = body["outputs"]
            if not isinstance(req, list) or not all(isinstance(o, dict) and o.get("name") in OUTPUTS for o in req):
                raise Reject(400, f"'outputs' must be a list of {{'name': one of {', '.join(OUTPUTS)}}}")
            wanted = [o["name"] for o in req] or wanted
            if m.labels_only and "logits" in wanted:
                raise Reject(400, "this server answers labels only")
        listed = {o["name"]: o for o in body.get("outputs") or []}
        try:
            as_binary = {out for out in wanted if binary.wants_binary(body, listed.get(out))}
        except binary.BinaryFormatError as exc:
            raise Reject(400, str(exc)) from None
        images = await by_size(body_bytes(request), _as_images, inp["data"], shape, m, max_batch)
        logits, labels = await _run(m, images, request, dawn)
        outs = []
        for out in wanted:
            if out == "logits":
                outs.append({"name": "logits", "datatype": "FP32", "shape": list(logits.shape), "data": logits})
            else:
                outs.append({"name": "label", "datatype": "INT64", "shape": [len(logits), 1] if m.labels_only
                             else [len(logits)], "data": labels})
        reply: dict[str, Any] = {"model_name": m.name, "model_version": "1", "outputs": outs}
        if "id" in body:
            reply["id"] = body["id"]
        return _reply(reply, as_binary)

    @app.get("/v1/models/{model}")
    async def tf_status(model: str) -> dict:
        model_named(model)
        return {"model_version_status": [{"version": "1", "state": "AVAILABLE",
                                          "status": {"error_code": "OK", "error_message": ""}}]}

    @app.post("/v1/models/{model}:predict")
    async def predict(model: str, request: Request) -> dict:
        m = model_named(model)
        body = await read_json(request, cap, budget)
        instances = body.get("instances", body.get("inputs"))
        if not isinstance(instances, list) or not instances:
            raise Reject(400, f"'instances' must be a non-empty list of {m.wire_shape} arrays")
        if isinstance(instances[0], dict):
            if not all(isinstance(i, dict) and "input" in i for i in instances):
                raise Reject(400, "named instances must all be objects with the key 'input'")
            instances = [i["input"] for i in instances]
        try:
            shape = list(np.shape(instances))
        except ValueError:
            raise Reject(400, "'instances' is a ragged array") from None
        labels_only = _labels_only(body) or m.labels_only
        images = await by_size(body_bytes(request), _as_images, instances, shape, m, max_batch)
        logits, labels = await _run(m, images, request, dawn)
        if labels_only:
            return {"predictions": labels.tolist()}
        return {"predictions": logits.tolist()}

    return app


def listening_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port``; ConfigError naming the port when it is in use or not ours to bind."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                             proto=socket.IPPROTO_TCP)[0]
    except socket.gaierror as exc:
        raise ConfigError(f"cannot listen on host {host!r}: {exc.strerror}") from None
    sock = socket.socket(family, kind, proto)  # IPPROTO_TCP: asyncio then sets TCP_NODELAY (no 40 ms Nagle stalls)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        reason = "is already in use" if exc.errno == errno.EADDRINUSE else f"cannot be bound ({exc.strerror})"
        raise ConfigError(f"port {port} on {host} {reason}; pick another with --port") from None
    return sock


def serve(app: FastAPI, sock: socket.socket, *, log_level: str = "info") -> None:
    """Serve ``app`` with uvicorn on a socket from :func:`listening_socket` until interrupted (the access log
    never records query strings)."""
    import uvicorn

    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, DropQueryStrings) for f in access.filters):
        access.addFilter(DropQueryStrings())

    tune_heap()
    warm_parsers()
    try:
        uvicorn.Server(uvicorn.Config(app, log_level=log_level)).run(sockets=[sock])
    finally:
        sock.close()
