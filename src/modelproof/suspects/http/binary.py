"""The binary tensor data extension of the Open Inference Protocol (Triton's, also KServe's and MLServer's).

A body is a JSON object followed by raw tensors: the ``Inference-Header-Content-Length`` header gives the
JSON's length in bytes, each tensor sent in binary has ``parameters.binary_data_size`` (its bytes) instead
of ``data``, and the tensors follow the JSON in the order they are listed, little-endian, row-major, without
padding (BOOL one byte 0 or 1; BYTES a 4-byte little-endian length before each element). A request asks for
binary outputs with ``binary_data: true`` on an output or ``binary_data_output: true`` in its parameters;
servers that support the extension list ``binary_tensor_data`` in their server metadata ``extensions``.

:func:`encode` writes such a body from a JSON object whose tensors hold numpy arrays in ``data``;
:func:`decode` reads one back, checking every size strictly (the header length against the body, each
``binary_data_size`` against datatype x shape, nothing left over) and putting each binary tensor's flat
array in its ``data``, so that the code after it reads JSON and binary bodies alike. Used by the HTTP
suspect for its requests and by ``modelproof serve`` for its answers. Malformed bodies raise
:class:`BinaryFormatError` naming the bad value.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Callable
from typing import Any

import numpy as np

from ...util.errors import SuspectError
from ...util.jsonsafe import loads as json_loads

HEADER = "Inference-Header-Content-Length"
EXTENSION = "binary_tensor_data"
OCTET_STREAM = "application/octet-stream"
DTYPES = {"BOOL": np.dtype("?"), "UINT8": np.dtype("u1"), "UINT16": np.dtype("<u2"), "UINT32": np.dtype("<u4"),
          "UINT64": np.dtype("<u8"), "INT8": np.dtype("i1"), "INT16": np.dtype("<i2"), "INT32": np.dtype("<i4"),
          "INT64": np.dtype("<i8"), "FP16": np.dtype("<f2"), "FP32": np.dtype("<f4"), "FP64": np.dtype("<f8")}
DATATYPES = (*DTYPES, "BYTES")
_LENGTH = struct.Struct("<I")


class BinaryFormatError(SuspectError):
    """A body that breaks the binary tensor data extension; the message names the bad value."""


def tensor_bytes(arr: np.ndarray, datatype: str) -> bytes:
    """``arr`` as the extension's raw bytes for ``datatype`` (row-major, little-endian; BYTES length-prefixed)."""
    if datatype == "BYTES":
        items = [v if isinstance(v, bytes) else str(v).encode() for v in np.asarray(arr, dtype=object).reshape(-1)]
        return b"".join(_LENGTH.pack(len(v)) + v for v in items)
    if datatype not in DTYPES:
        raise BinaryFormatError(f"datatype {datatype!r} has no binary form; one of {', '.join(DATATYPES)}")
    return np.ascontiguousarray(arr, dtype=DTYPES[datatype]).tobytes()


def tensor_from_bytes(raw: bytes | memoryview, datatype: str, shape: list[int], what: str) -> np.ndarray:
    """The flat array of ``shape``'s elements in ``raw``; BinaryFormatError unless ``raw`` holds exactly that."""
    count = math.prod(shape)
    if datatype == "BYTES":
        return _bytes_elements(raw, count, shape, what)
    dtype = DTYPES[datatype]
    if len(raw) != count * dtype.itemsize:
        raise BinaryFormatError(f"{what}: binary_data_size is {len(raw)} bytes but {datatype} {shape} needs "
                                f"{count * dtype.itemsize} bytes")
    arr = np.frombuffer(raw, dtype=dtype)
    if datatype == "BOOL" and arr.size and np.frombuffer(raw, dtype=np.uint8).max() > 1:
        raise BinaryFormatError(f"{what}: BOOL elements must be bytes 0 or 1, got "
                                f"{int(np.frombuffer(raw, dtype=np.uint8).max())}")
    return arr


def _bytes_elements(raw: bytes | memoryview, count: int, shape: list[int], what: str) -> np.ndarray:
    if count * _LENGTH.size > len(raw):
        raise BinaryFormatError(f"{what}: {len(raw)} bytes cannot hold the {count} length-prefixed BYTES elements "
                                f"of shape {shape}")
    items, offset = [], 0
    for i in range(count):
        if offset + _LENGTH.size > len(raw):
            raise BinaryFormatError(f"{what}: BYTES element {i} of {count} has no 4-byte length")
        (length,) = _LENGTH.unpack_from(raw, offset)
        offset += _LENGTH.size
        if offset + length > len(raw):
            raise BinaryFormatError(f"{what}: BYTES element {i} says {length} bytes but only "
                                    f"{len(raw) - offset} remain")
        items.append(bytes(raw[offset:offset + length]))
        offset += length
    if offset != len(raw):
        raise BinaryFormatError(f"{what}: {len(raw) - offset} bytes follow the {count} BYTES elements of shape {shape}")
    out = np.empty(count, dtype=object)
    out[:] = items
    return out


def _shape(tensor: dict, what: str) -> list[int]:
    shape = tensor.get("shape")
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise BinaryFormatError(f"{what}: shape must be a list of non-negative integers, got {shape!r}")
    return shape


def _binary_size(tensor: dict, what: str) -> int | None:
    params = tensor.get("parameters")
    if params is None:
        return None
    if not isinstance(params, dict):
        raise BinaryFormatError(f"{what}: 'parameters' must be an object, got {type(params).__name__}")
    size = params.get("binary_data_size")
    if size is None:
        return None
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise BinaryFormatError(f"{what}: binary_data_size must be a non-negative integer, got {size!r}")
    return size


def json_length(value: str | None, body_length: int, what: str) -> int | None:
    """The ``Inference-Header-Content-Length`` value as an int (None when absent), checked against the body."""
    if value is None:
        return None
    text = value.strip()
    if not text.isascii() or not text.isdigit():
        raise BinaryFormatError(f"{what}: {HEADER} must be a non-negative integer, got {value[:40]!r}")
    length = int(text)
    if length == 0:
        raise BinaryFormatError(f"{what}: {HEADER} is 0: a body without a JSON header is not supported; send the JSON "
                                "object first and give its length")
    if length > body_length:
        raise BinaryFormatError(f"{what}: {HEADER} is {length} but the body has only {body_length} bytes")
    return length


def decode(body: bytes, header: str | None, key: str, what: str) -> dict:
    """The JSON object of ``body`` with each binary tensor under ``key`` decoded into its ``data`` (flat array).

    ``header`` is the ``Inference-Header-Content-Length`` value (None: the body is plain JSON); ``key`` is
    ``inputs`` for a request and ``outputs`` for a response; ``what`` begins every error message.
    """
    length = json_length(header, len(body), what)
    end = len(body) if length is None else length
    try:
        obj = json_loads(body[:end])
    except (ValueError, UnicodeDecodeError) as exc:
        where = "body" if length is None else f"JSON header ({end} bytes)"
        raise BinaryFormatError(f"{what}: the {where} is not valid JSON ({exc})") from None
    if not isinstance(obj, dict):
        raise BinaryFormatError(f"{what}: the body must be a JSON object, got {type(obj).__name__}")
    tensors = obj.get(key)
    offset = end
    for i, tensor in enumerate(tensors if isinstance(tensors, list) else []):
        if not isinstance(tensor, dict):
            continue
        name = f"{what}: {key[:-1]} {tensor.get('name', i)!r}"
        size = _binary_size(tensor, name)
        if size is None:
            continue
        if length is None:
            raise BinaryFormatError(f"{name} has binary_data_size {size} but the body came without an {HEADER} header")
        if "data" in tensor:
            raise BinaryFormatError(f"{name} has both 'data' and binary_data_size {size}")
        datatype = tensor.get("datatype")
        if datatype not in DATATYPES:
            raise BinaryFormatError(f"{name}: datatype must be one of {', '.join(DATATYPES)}, got {datatype!r}")
        shape = _shape(tensor, name)
        if offset + size > len(body):
            raise BinaryFormatError(f"{name}: binary_data_size is {size} bytes but only {len(body) - offset} bytes "
                                    "remain after the JSON header and the tensors before it")
        tensor["data"] = tensor_from_bytes(memoryview(body)[offset:offset + size], datatype, shape, name)
        offset += size
    if offset != len(body):
        raise BinaryFormatError(f"{what}: {len(body) - offset} bytes follow the JSON header and the binary tensors "
                                f"(whose binary_data_size total {offset - end})")
    return obj


def encode(obj: dict, key: str, binary: bool | Callable[[dict], bool]) -> tuple[bytes, int | None]:
    """The body for ``obj``, whose tensors under ``key`` may hold numpy arrays in ``data``, and its JSON length.

    Tensors for which ``binary`` is true (a bool, or a function of the tensor) are sent as raw bytes after
    the JSON; the others as JSON lists. The JSON length is None when no tensor is binary (plain JSON).
    """
    chunks: list[bytes] = []
    tensors = []
    for tensor in obj.get(key, []):
        data = tensor.get("data")
        if not isinstance(data, np.ndarray):
            tensors.append(tensor)
        elif binary(tensor) if callable(binary) else binary:
            raw = tensor_bytes(data, tensor["datatype"])
            chunks.append(raw)
            tensors.append({**{k: v for k, v in tensor.items() if k != "data"},
                            "parameters": {**tensor.get("parameters", {}), "binary_data_size": len(raw)}})
        else:
            tensors.append({**tensor, "data": _json_list(data, tensor.get("datatype"))})
    text = json.dumps({**obj, key: tensors} if key in obj else obj, separators=(",", ":")).encode()
    if not chunks:
        return text, None
    return b"".join([text, *chunks]), len(text)


def _json_list(data: np.ndarray, datatype: Any) -> list:
    """A flat JSON list of ``data``; BYTES elements as UTF-8 text (JSON has no bytes)."""
    if datatype != "BYTES":
        return data.reshape(-1).tolist()
    try:
        return [v.decode() if isinstance(v, bytes) else str(v) for v in data.reshape(-1)]
    except UnicodeDecodeError:
        raise BinaryFormatError("a BYTES tensor that is not UTF-8 text can only be sent as binary data") from None


def wants_binary(request: dict, output: dict | None) -> bool:
    """Whether ``request`` asks for ``output`` (None: any output it does not list) as binary data."""
    params = request.get("parameters", {})
    if not isinstance(params, dict):
        raise BinaryFormatError(f"'parameters' must be an object, got {type(params).__name__}")
    default = params.get("binary_data_output", False)
    if not isinstance(default, bool):
        raise BinaryFormatError(f"parameters.binary_data_output must be true or false, got {default!r}")
    if output is None:
        return default
    params = output.get("parameters", {})
    if not isinstance(params, dict):
        raise BinaryFormatError(f"output {output.get('name')!r}: 'parameters' must be an object, got {params!r}")
    flag = params.get("binary_data", default)
    if not isinstance(flag, bool):
        raise BinaryFormatError(f"output {output.get('name')!r}: binary_data must be true or false, got {flag!r}")
    return flag


def headers(length: int | None) -> dict[str, str]:
    """The headers of a body from :func:`encode`: JSON, or octet-stream with the JSON header's length."""
    if length is None:
        return {"content-type": "application/json"}
    return {"content-type": OCTET_STREAM, HEADER: str(length)}


def advertised(server_metadata: Any) -> bool:
    """Whether a v2 server metadata document lists the binary tensor data extension."""
    extensions = server_metadata.get("extensions") if isinstance(server_metadata, dict) else None
    return isinstance(extensions, list) and EXTENSION in extensions


__all__ = ["HEADER", "EXTENSION", "OCTET_STREAM", "DTYPES", "DATATYPES", "BinaryFormatError", "tensor_bytes",
           "tensor_from_bytes", "json_length", "decode", "encode", "wants_binary", "headers", "advertised"]
