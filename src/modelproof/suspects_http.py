"""HTTP suspects: a classifier behind the Open Inference Protocol (KServe v2 REST) or TF-Serving REST.

:class:`HttpSuspect` maps our float32 NCHW [0,1] inputs to what the endpoint expects (layout, scale,
per-channel mean/std, FP32 or UINT8), sends them in batches through one ``httpx.Client`` with a
timeout, retries with exponential backoff on 5xx and connection errors (never on 4xx) and an optional
rate limit, and turns the answer (labels, or scores/logits/probabilities -> argmax) into int64 labels.
Anything malformed is a :class:`~modelproof.errors.SuspectError` naming what was wrong.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

import httpx
import numpy as np
import torch

from .errors import ConfigError, SuspectError

PROTOCOLS = ("v2", "tfserving")
LAYOUTS = ("NCHW", "NHWC")
DTYPES = ("FP32", "UINT8")
_V2 = re.compile(r"^(?P<base>.*?)(?P<model>/v2/models/(?P<name>[^/]+)(?:/versions/[^/]+)?)(?:/infer)?/?$")
_TF = re.compile(r"^(?P<base>.*?)(?P<model>/v1/models/(?P<name>[^/:]+)(?:/versions/\d+)?)(?::predict)?/?$")
_PREFERRED_KEYS = ("labels", "label", "classes", "class", "probabilities", "scores", "logits", "outputs")


class HttpSuspect:
    """A model behind an HTTP inference endpoint; ``identity`` is its endpoint URL (without credentials).

    ``url`` is the server's base URL or the full model / infer / :predict URL (which then fixes the
    protocol and model name). ``protocol`` None means v2 unless the URL is a TF-Serving one. With v2,
    ``num_classes`` and ``input_shape`` may be left out: they are read from the model metadata.
    ``parameters`` is sent as the v2 request's ``parameters`` (e.g. ``{"labels_only": True}``).
    """

    def __init__(self, url: str, *, protocol: str | None = None, model_name: str | None = None,
                 input_name: str = "input", output_name: str | None = None, layout: str = "NCHW",
                 scale: float = 1.0, mean: list[float] | None = None, std: list[float] | None = None,
                 dtype: str = "FP32", batch_size: int = 64, timeout: float = 10.0, retries: int = 3,
                 backoff: float = 0.5, rate_limit: float | None = None, num_classes: int | None = None,
                 input_shape: tuple[int, int, int] | None = None, headers: dict[str, str] | None = None,
                 parameters: dict[str, Any] | None = None) -> None:
        try:
            parsed = httpx.URL(url)
        except Exception as exc:
            raise ConfigError(f"bad suspect URL {url!r}: {exc}") from None
        if parsed.scheme not in ("http", "https") or not parsed.host:
            raise ConfigError(f"suspect URL must be http(s)://host[:port]/..., got {url!r}")
        if protocol is None:
            protocol = "tfserving" if _TF.match(parsed.path) and not _V2.match(parsed.path) else "v2"
        for value, allowed, what in ((protocol, PROTOCOLS, "protocol"), (layout, LAYOUTS, "layout"), (dtype, DTYPES, "dtype")):
            if value not in allowed:
                raise ConfigError(f"{what} must be one of {', '.join(allowed)}, got {value!r}")
        if batch_size < 1 or timeout <= 0 or retries < 0 or backoff < 0 or not scale > 0:
            raise ConfigError(f"need batch_size >= 1, timeout > 0, retries >= 0, backoff >= 0 and scale > 0; got "
                              f"{batch_size}, {timeout}, {retries}, {backoff}, {scale}")
        if rate_limit is not None and not rate_limit > 0:
            raise ConfigError(f"rate_limit must be a positive number of requests per second, got {rate_limit}")
        if (mean is None) != (std is None) or (std is not None and any(s <= 0 for s in std)):
            raise ConfigError(f"mean and std must be given together, std positive; got mean={mean}, std={std}")
        if dtype == "UINT8" and (mean is not None or scale * 1.0 > 255):
            raise ConfigError("UINT8 inputs cannot carry mean/std normalisation or a scale above 255")
        self.protocol, self.layout, self.dtype, self.input_name, self.output_name = protocol, layout, dtype, input_name, output_name
        self.scale, self.batch_size, self.timeout, self.retries, self.backoff = float(scale), int(batch_size), float(timeout), int(retries), float(backoff)
        self.rate_limit, self.parameters = rate_limit, dict(parameters or {})
        self.endpoint, self.metadata_url, self.model_name = self._endpoints(parsed, model_name)
        self.identity = str(httpx.URL(self.endpoint).copy_with(username=None, password=None, query=None))
        self._client = httpx.Client(timeout=self.timeout, headers=dict(headers or {}))
        self._next_request = 0.0
        if num_classes is None or input_shape is None:
            num_classes, input_shape = self._from_metadata(num_classes, input_shape)
        self.num_classes = int(num_classes)
        self.input_shape: tuple[int, int, int] = tuple(int(s) for s in input_shape)  # type: ignore[assignment]
        if self.num_classes < 1 or len(self.input_shape) != 3:
            raise ConfigError(f"need num_classes >= 1 and input_shape (C, H, W), got {num_classes}, {input_shape}")
        channels = self.input_shape[0]
        self._mean = None if mean is None else np.asarray(mean, np.float32).reshape(-1, 1, 1)
        self._std = None if std is None else np.asarray(std, np.float32).reshape(-1, 1, 1)
        if self._mean is not None and (len(self._mean) != channels or len(self._std) != channels):
            raise ConfigError(f"mean and std need one value per channel ({channels}), got {mean} and {std}")

    def _endpoints(self, parsed: httpx.URL, model_name: str | None) -> tuple[str, str | None, str]:
        pattern = _V2 if self.protocol == "v2" else _TF
        match = pattern.match(parsed.path)
        if match:
            if model_name is not None and model_name != match["name"]:
                raise ConfigError(f"model_name {model_name!r} disagrees with the URL's model {match['name']!r}")
            base, model_path, model_name = match["base"], match["model"], match["name"]
        else:
            if not model_name:
                raise ConfigError(f"{parsed}: pass model_name, or the full URL of the model's endpoint")
            base = parsed.path.rstrip("/")
            model_path = f"/v2/models/{model_name}" if self.protocol == "v2" else f"/v1/models/{model_name}"
        root = parsed.copy_with(path=base + model_path)
        if self.protocol == "v2":
            return str(root.copy_with(path=root.path + "/infer")), str(root), model_name
        return str(root.copy_with(path=root.path + ":predict")), None, model_name

    def _from_metadata(self, num_classes: int | None, input_shape: Any) -> tuple[int, tuple[int, ...]]:
        if self.metadata_url is None:
            raise ConfigError(f"{self.identity}: pass num_classes and input_shape (TF-Serving has no metadata we read)")
        meta = self._json(self._request("GET", self.metadata_url, None))
        try:
            dims = [int(d) for d in meta["inputs"][0]["shape"]]
            if input_shape is None:
                input_shape = tuple(dims[1:]) if self.layout == "NCHW" else (dims[3], dims[1], dims[2])
            if num_classes is None:
                num_classes = next(int(o["shape"][-1]) for o in meta["outputs"] if len(o["shape"]) == 2 and int(o["shape"][-1]) > 1)
        except (KeyError, IndexError, TypeError, ValueError, StopIteration):
            raise ConfigError(f"{self.metadata_url}: model metadata does not give the input shape and the number of "
                              "classes; pass num_classes and input_shape") from None
        if len(input_shape) != 3 or min(input_shape) < 1:
            raise ConfigError(f"{self.metadata_url}: metadata input shape {dims} is not [N, C, H, W]; pass input_shape")
        return num_classes, input_shape

    def close(self) -> None:
        """Close the HTTP connection pool."""
        self._client.close()

    def __enter__(self) -> HttpSuspect:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """Labels for ``images`` (float32 NCHW in [0,1]), asked ``batch_size`` inputs per request."""
        if not isinstance(images, torch.Tensor) or images.dim() != 4 or tuple(images.shape[1:]) != self.input_shape:
            raise ConfigError(f"{self.identity} expects queries of shape (N, {', '.join(map(str, self.input_shape))}), "
                              f"got {tuple(getattr(images, 'shape', ()))}")
        parts = []
        for start in range(0, len(images), self.batch_size):
            arr = self.encode(images[start:start + self.batch_size])
            resp = self._request("POST", self.endpoint, self._body(arr))
            parts.append(self._labels(self._outputs(self._json(resp)), len(arr)))
        return torch.cat(parts) if parts else torch.empty(0, dtype=torch.int64)

    def encode(self, images: torch.Tensor) -> np.ndarray:
        """Our [0,1] NCHW inputs as the endpoint expects them: scaled, normalised, laid out, typed."""
        arr = images.detach().cpu().numpy().astype(np.float32, copy=False)
        if self.scale != 1.0:
            arr = arr * np.float32(self.scale)
        if self._mean is not None:
            arr = (arr - self._mean) / self._std
        if self.layout == "NHWC":
            arr = arr.transpose(0, 2, 3, 1)
        if self.dtype == "UINT8":
            arr = np.clip(np.rint(arr), 0, 255).astype(np.uint8)
        return np.ascontiguousarray(arr)

    def _body(self, arr: np.ndarray) -> bytes:
        if self.protocol == "tfserving":
            return json.dumps({"instances": arr.tolist()}).encode()
        body: dict[str, Any] = {"inputs": [{"name": self.input_name, "shape": list(arr.shape),
                                            "datatype": self.dtype, "data": arr.reshape(-1).tolist()}]}
        if self.parameters:
            body["parameters"] = self.parameters
        return json.dumps(body).encode()

    def _throttle(self) -> None:
        if self.rate_limit is None:
            return
        now = time.monotonic()
        if self._next_request > now:
            time.sleep(self._next_request - now)
        self._next_request = max(now, self._next_request) + 1.0 / self.rate_limit

    def _request(self, method: str, url: str, body: bytes | None) -> httpx.Response:
        """One request with retries on 5xx and connection errors; SuspectError when they run out or on 4xx."""
        last = "no attempt"
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1))
            self._throttle()
            try:
                resp = self._client.request(method, url, content=body,
                                            headers={"content-type": "application/json"} if body is not None else None)
            except httpx.TimeoutException:
                last = f"timed out after {self.timeout:g} s"
                continue
            except httpx.TransportError as exc:
                last = f"connection error ({type(exc).__name__}: {exc})"
                continue
            if resp.status_code >= 500:
                last = f"HTTP {resp.status_code} {_snippet(resp.content)}"
                continue
            if not resp.is_success:
                hint = " (the server is rate limiting: pass rate_limit=...)" if resp.status_code == 429 else ""
                raise SuspectError(f"{url} refused the request: HTTP {resp.status_code} {_snippet(resp.content)}{hint}")
            return resp
        raise SuspectError(f"{url} failed after {self.retries + 1} attempt(s); last: {last}")

    def _json(self, resp: httpx.Response) -> Any:
        try:
            return json.loads(resp.content)
        except (ValueError, UnicodeDecodeError):
            raise SuspectError(f"{resp.request.url} answered a body that is not JSON: {_snippet(resp.content)}") from None

    def _outputs(self, payload: Any) -> np.ndarray:
        """The answer array of a v2 or TF-Serving response body."""
        where = self.identity
        if not isinstance(payload, dict):
            raise SuspectError(f"{where} answered JSON {type(payload).__name__}, expected an object")
        if self.protocol == "v2":
            outputs = payload.get("outputs")
            if not isinstance(outputs, list) or not outputs or not all(isinstance(o, dict) for o in outputs):
                raise SuspectError(f"{where} answered without a non-empty 'outputs' list: {_snippet(payload)}")
            chosen = next((o for o in outputs if o.get("name") == self.output_name), None) if self.output_name else outputs[0]
            if chosen is None:
                raise SuspectError(f"{where} answered no output named {self.output_name!r}")
            if "data" not in chosen or "shape" not in chosen:
                raise SuspectError(f"{where} answered output {chosen.get('name')!r} without 'data' or 'shape'")
            arr = _numbers(chosen["data"], where)
            try:
                shape = [int(d) for d in chosen["shape"]]
                return arr.reshape(shape)
            except (TypeError, ValueError):
                raise SuspectError(f"{where} answered {arr.size} values that do not fit shape {chosen['shape']}") from None
        preds = payload.get("predictions", payload.get("outputs"))
        if preds is None:
            raise SuspectError(f"{where} answered without 'predictions': {_snippet(payload)}")
        if isinstance(preds, dict) or (isinstance(preds, list) and preds and isinstance(preds[0], dict)):
            preds = _pick_named(preds, self.output_name, where)
        return _numbers(preds, where)

    def _labels(self, arr: np.ndarray, n: int) -> torch.Tensor:
        """Labels from an answer of labels (N or N x 1) or scores (N x K, argmax)."""
        where, k = self.identity, self.num_classes
        if arr.ndim == 0 or arr.shape[0] != n:
            raise SuspectError(f"{where} answered {arr.shape[0] if arr.ndim else 'a scalar'} results for {n} queries")
        if not np.isfinite(arr).all():
            raise SuspectError(f"{where} answered NaN or infinite values")
        if arr.ndim == 1 or (arr.ndim == 2 and arr.shape[1] == 1):
            flat = arr.reshape(-1)
            if not np.array_equal(flat, np.round(flat)):
                raise SuspectError(f"{where} answered non-integer labels, e.g. {flat[flat != np.round(flat)][0]}")
            bad = flat[(flat < 0) | (flat >= k)]
            if bad.size:
                raise SuspectError(f"{where} answered label {int(bad[0])} outside [0, {k})")
            return torch.from_numpy(flat.astype(np.int64))
        if arr.ndim != 2 or arr.shape[1] != k:
            raise SuspectError(f"{where} answered results of shape {list(arr.shape)}, expected [{n}] labels or [{n}, {k}] scores")
        return torch.from_numpy(arr.argmax(axis=1).astype(np.int64))


def _numbers(data: Any, where: str) -> np.ndarray:
    """A JSON array of numbers (nested or flat) as a float64 array; SuspectError otherwise."""
    try:
        arr = np.asarray(data)
    except ValueError:
        raise SuspectError(f"{where} answered a ragged array") from None
    if arr.dtype.kind not in "iuf":
        raise SuspectError(f"{where} answered non-numeric data: {_snippet(data)}")
    return arr.astype(np.float64)


def _pick_named(preds: Any, name: str | None, where: str) -> Any:
    """TF-Serving named outputs ({"scores": ...} per instance or columnar) -> the chosen output."""
    rows = preds if isinstance(preds, list) else [preds]
    keys = list(rows[0])
    key = name if name is not None else (keys[0] if len(keys) == 1 else next((k for k in _PREFERRED_KEYS if k in keys), None))
    if key is None or not all(isinstance(r, dict) and key in r for r in rows):
        raise SuspectError(f"{where} answered named outputs {keys}; pass output_name to choose one")
    return [r[key] for r in rows] if isinstance(preds, list) else preds[key]


def _snippet(content: Any, limit: int = 160) -> str:
    """A short printable excerpt of a body, for error messages."""
    if isinstance(content, bytes):
        text = content.decode("utf-8", "replace")
    elif isinstance(content, str):
        text = content
    else:
        text = json.dumps(content, default=str, allow_nan=True)
    text = " ".join(text.split())
    return repr(text[:limit] + ("..." if len(text) > limit else ""))


__all__ = ["HttpSuspect", "PROTOCOLS", "LAYOUTS", "DTYPES"]
