"""The wire formats of the HTTP suspects: the Open Inference Protocol (KServe v2 REST) and TF-Serving REST.

A codec knows its protocol's URLs (infer / predict endpoint and metadata), writes a request body for an
array of inputs, reads the answer array out of a response body, and reads what the model metadata says
(input dims, number of classes, model name and version). It never touches the network: the transport
(:mod:`modelproof.suspects.http.transport`) does. Malformed answers are :class:`~modelproof.util.errors.SuspectError`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np

from ...util.errors import ConfigError, SuspectError
from ...util.jsonsafe import loads as json_loads
from ...util.redact import public_url
from . import binary as binary_format
from .transport import snippet

PROTOCOLS = ("v2", "tfserving")
_V2 = re.compile(r"^(?P<base>.*?)(?P<model>/v2/models/(?P<name>[^/]+)(?:/versions/(?P<version>[^/]+))?)(?:/infer)?/?$")
_TF = re.compile(r"^(?P<base>.*?)(?P<model>/v1/models/(?P<name>[^/:]+)(?:/versions/(?P<version>\d+))?)(?::predict)?/?$")
_PREFERRED_KEYS = ("labels", "label", "classes", "class", "probabilities", "scores", "logits", "outputs")


@dataclass(frozen=True)
class ModelInfo:
    """What a model's metadata says: input dims (batch included, -1 where free), classes, name, version."""

    input_dims: tuple[int, ...] | None
    num_classes: int | None
    name: str | None
    version: str | None


def guess_protocol(url: httpx.URL) -> str:
    """``tfserving`` for a /v1/models/... URL, else ``v2``."""
    return "tfserving" if _TF.match(url.path) and not _V2.match(url.path) else "v2"


def _classes(shapes: list[list[int]]) -> int | None:
    """The class count of the first score output [N, K] (K > 1); None for label-only outputs."""
    return next((int(s[-1]) for s in shapes if len(s) == 2 and int(s[-1]) > 1), None)


class _Codec:
    """Shared URL handling: the model root from a full URL, or from a base URL and ``model_name``."""

    protocol = ""
    prefix = ""
    pattern: re.Pattern[str]

    def __init__(self, url: httpx.URL, model_name: str | None, input_name: str, output_name: str | None,
                 parameters: dict[str, Any] | None = None) -> None:
        match = self.pattern.match(url.path)
        if match:
            if model_name is not None and model_name != match["name"]:
                raise ConfigError(f"model_name {model_name!r} disagrees with the URL's model {match['name']!r}")
            base, model_path, model_name, self.version = match["base"], match["model"], match["name"], match["version"]
        else:
            if not model_name:
                raise ConfigError(f"{public_url(str(url))}: pass model_name (--model-name), or the full URL of the "
                                  "model's endpoint")
            base, model_path, self.version = url.path.rstrip("/"), f"{self.prefix}/{model_name}", None
        self.root = url.copy_with(path=base + model_path)
        self.server_metadata_url = str(url.copy_with(path=base + "/v2", query=None))
        self.model_name, self.input_name, self.output_name = model_name, input_name, output_name
        self.parameters = dict(parameters or {})


class V2Codec(_Codec):
    """Open Inference Protocol: POST .../infer with ``inputs: [{name, shape, datatype, data}]``."""

    protocol, prefix, pattern = "v2", "/v2/models", _V2

    @property
    def endpoint(self) -> str:
        return str(self.root.copy_with(path=self.root.path + "/infer"))

    @property
    def metadata_url(self) -> str:
        return str(self.root)

    def body(self, arr: np.ndarray, datatype: str, binary: bool = False) -> tuple[bytes, dict[str, str]]:
        """The infer request for ``arr`` (flat, row-major, with its shape) and its headers.

        ``binary``: the input as raw bytes after the JSON, and the outputs asked for as binary data (the
        binary tensor data extension, :mod:`modelproof.suspects.http.binary`); else all JSON.
        """
        body: dict[str, Any] = {"inputs": [{"name": self.input_name, "shape": list(arr.shape), "datatype": datatype,
                                            "data": arr}]}
        parameters = dict(self.parameters)
        if binary and self.output_name:
            body["outputs"] = [{"name": self.output_name, "parameters": {"binary_data": True}}]
        elif binary:
            parameters["binary_data_output"] = True
        if parameters:
            body["parameters"] = parameters
        content, length = binary_format.encode(body, "inputs", binary)
        return content, binary_format.headers(length)

    def read(self, content: bytes, headers: httpx.Headers, where: str) -> Any:
        """The infer response as a JSON object, binary outputs decoded into their ``data`` arrays."""
        header = headers.get(binary_format.HEADER)
        if header is None:
            return json_loads(content)
        return binary_format.decode(content, header, "outputs", f"{where} answered")

    def answer(self, payload: Any, where: str) -> np.ndarray:
        """The chosen output of an infer response, reshaped to its declared shape."""
        if not isinstance(payload, dict):
            raise SuspectError(f"{where} answered JSON {type(payload).__name__}, expected an object")
        outputs = payload.get("outputs")
        if not isinstance(outputs, list) or not outputs or not all(isinstance(o, dict) for o in outputs):
            raise SuspectError(f"{where} answered without a non-empty 'outputs' list: {snippet(payload)}")
        chosen = next((o for o in outputs if o.get("name") == self.output_name), None) if self.output_name else outputs[0]
        if chosen is None:
            raise SuspectError(f"{where} answered no output named {self.output_name!r}; it has "
                               f"{[o.get('name') for o in outputs]}")
        if "data" not in chosen or "shape" not in chosen:
            raise SuspectError(f"{where} answered output {chosen.get('name')!r} without 'data' or 'shape'")
        arr = numbers(chosen["data"], where)
        try:
            return arr.reshape([int(d) for d in chosen["shape"]])
        except (TypeError, ValueError):
            raise SuspectError(f"{where} answered {arr.size} values that do not fit shape {chosen['shape']}") from None

    def describe(self, meta: Any) -> ModelInfo:
        """Input dims, classes, name and version from a v2 model metadata document (missing parts None)."""
        meta = meta if isinstance(meta, dict) else {}
        dims = None
        try:
            inputs = meta["inputs"]
            chosen = next((i for i in inputs if i.get("name") == self.input_name), inputs[0])
            dims = tuple(int(d) for d in chosen["shape"])
        except (KeyError, IndexError, TypeError, ValueError, AttributeError):
            pass
        try:
            outs = [o for o in meta["outputs"] if self.output_name is None or o.get("name") == self.output_name]
            classes = _classes([[int(d) for d in o["shape"]] for o in outs])
        except (KeyError, TypeError, ValueError, AttributeError):
            classes = None
        versions = meta.get("versions")
        version = self.version or (",".join(map(str, versions)) if isinstance(versions, list) and versions else None)
        return ModelInfo(dims, classes, str(meta.get("name") or self.model_name), version)


class TFServingCodec(_Codec):
    """TF-Serving REST: POST .../:predict with ``instances``; metadata from .../metadata (signature_def)."""

    protocol, prefix, pattern = "tfserving", "/v1/models", _TF

    @property
    def endpoint(self) -> str:
        return str(self.root.copy_with(path=self.root.path + ":predict"))

    @property
    def metadata_url(self) -> str:
        return str(self.root.copy_with(path=self.root.path + "/metadata"))

    def body(self, arr: np.ndarray, datatype: str, binary: bool = False) -> tuple[bytes, dict[str, str]]:
        """The predict request: one instance per input (row format); TF-Serving has no binary form."""
        if binary:
            raise ConfigError("the binary tensor data extension is the v2 protocol's; TF-Serving has none")
        return json.dumps({"instances": arr.tolist()}).encode(), {"content-type": "application/json"}

    def read(self, content: bytes, headers: httpx.Headers, where: str) -> Any:
        """The predict response as JSON."""
        return json_loads(content)

    def answer(self, payload: Any, where: str) -> np.ndarray:
        """``predictions`` (or columnar ``outputs``), a named output chosen when there are several."""
        if not isinstance(payload, dict):
            raise SuspectError(f"{where} answered JSON {type(payload).__name__}, expected an object")
        preds = payload.get("predictions", payload.get("outputs"))
        if preds is None:
            raise SuspectError(f"{where} answered without 'predictions': {snippet(payload)}")
        if isinstance(preds, dict) or (isinstance(preds, list) and preds and isinstance(preds[0], dict)):
            preds = _pick_named(preds, self.output_name, where)
        return numbers(preds, where)

    def describe(self, meta: Any) -> ModelInfo:
        """Dims and classes from the ``serving_default`` signature; version from ``model_spec``."""
        meta = meta if isinstance(meta, dict) else {}
        dims = classes = None
        try:
            sig = meta["metadata"]["signature_def"]["signature_def"]["serving_default"]

            def shape(tensor: dict) -> list[int]:
                return [int(d["size"]) for d in tensor["tensor_shape"]["dim"]]

            inputs = sig.get("inputs", {})
            if inputs:
                dims = tuple(shape(inputs.get(self.input_name) or next(iter(inputs.values()))))
            outs = sig.get("outputs", {})
            classes = _classes([shape(t) for n, t in outs.items() if self.output_name is None or n == self.output_name])
        except (KeyError, TypeError, ValueError, AttributeError, StopIteration):
            pass
        spec = meta.get("model_spec") if isinstance(meta.get("model_spec"), dict) else {}
        return ModelInfo(dims, classes, str(spec.get("name") or self.model_name), self.version or spec.get("version"))


def make_codec(protocol: str, url: httpx.URL, model_name: str | None, input_name: str, output_name: str | None,
               parameters: dict[str, Any] | None = None) -> V2Codec | TFServingCodec:
    """The codec of ``protocol`` for ``url``."""
    if protocol not in PROTOCOLS:
        raise ConfigError(f"protocol must be one of {', '.join(PROTOCOLS)}, got {protocol!r}")
    cls = V2Codec if protocol == "v2" else TFServingCodec
    return cls(url, model_name, input_name, output_name, parameters)


def numbers(data: Any, where: str) -> np.ndarray:
    """A JSON array of numbers (nested or flat) as a float64 array; SuspectError otherwise."""
    try:
        arr = np.asarray(data)
    except ValueError:
        raise SuspectError(f"{where} answered a ragged array") from None
    if arr.dtype.kind not in "iuf":
        raise SuspectError(f"{where} answered non-numeric data: {snippet(data)}")
    return arr.astype(np.float64)


def _pick_named(preds: Any, name: str | None, where: str) -> Any:
    """TF-Serving named outputs ({"scores": ...} per instance or columnar) -> the chosen output."""
    rows = preds if isinstance(preds, list) else [preds]
    keys = list(rows[0])
    key = name if name is not None else (keys[0] if len(keys) == 1 else next((k for k in _PREFERRED_KEYS if k in keys), None))
    if key is None or not all(isinstance(r, dict) and key in r for r in rows):
        raise SuspectError(f"{where} answered named outputs {keys}; pass output_name (--output-name) to choose one")
    return [r[key] for r in rows] if isinstance(preds, list) else preds[key]


__all__ = ["PROTOCOLS", "ModelInfo", "V2Codec", "TFServingCodec", "make_codec", "guess_protocol", "numbers"]
