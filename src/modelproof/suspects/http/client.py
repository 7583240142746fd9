"""HTTP suspects: a classifier behind the Open Inference Protocol (KServe v2 REST) or TF-Serving REST.

:class:`HttpSuspect` maps our float32 NCHW [0,1] inputs to what the endpoint expects (layout NCHW, NHWC or
flattened, scale, per-channel mean/std, FP32 / FP64 / UINT8), sends them in batches, and turns the answer
(labels, or scores/logits/probabilities -> argmax) into int64 labels. The wire formats live in
:mod:`modelproof.suspects.http.codecs`, retries and rate limits in :mod:`modelproof.suspects.http.transport`. Shapes come
from the arguments, else the model metadata, else the caller's defaults (the key's), with a note in
``notes``. Anything malformed is a :class:`~modelproof.util.errors.SuspectError` naming what was wrong.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Any

import httpx
import numpy as np
import torch

from ...util.errors import ConfigError, SuspectError
from ...util.jsonsafe import loads as json_loads
from .binary import advertised
from .codecs import PROTOCOLS, ModelInfo, guess_protocol, make_codec
from ...util.redact import public_url, redact, url_secrets
from .transport import HttpStatusError, Transport, snippet

LAYOUTS = ("NCHW", "NHWC", "flat", "flat-NHWC")
METADATA_CAP = 4 * 2 ** 20  # bytes of model metadata read at most
MAX_CONCURRENCY = 16  # requests in flight at most: a verifier, not a load test


class _NotSent(Exception):
    """A batch not sent because an earlier one failed."""


def answer_cap(n: int, num_classes: int) -> int:
    """The most bytes an answer for ``n`` inputs may take: 64 per score (JSON floats with room to spare) + 1 MiB."""
    return 64 * n * max(int(num_classes), 1) + 2 ** 20
DTYPES = {"FP32": np.float32, "FP64": np.float64, "UINT8": np.uint8}


class HttpSuspect:
    """A model behind an HTTP inference endpoint; ``identity`` is its endpoint URL (without credentials).

    ``url`` is the server's base URL or the full model / infer / :predict URL (which then fixes the
    protocol and model name). ``protocol`` None means v2 unless the URL is a TF-Serving one.
    ``layout``: ``NCHW``, ``NHWC``, ``flat`` ([N, C*H*W], channel-first order: the order scikit-learn
    models trained on our flattened images expect) or ``flat-NHWC`` ([N, H*W*C], channel-last order).
    ``num_classes`` and ``input_shape`` (C, H, W) may be left out: they are read from the model metadata,
    else ``default_num_classes`` / ``default_input_shape`` are used and ``notes`` says so.
    ``model_identity`` (protocol, model name and version; no host or port) is what a query log is bound to.
    ``parameters`` is sent as the v2 request's ``parameters`` (e.g. ``{"labels_only": True}``).
    ``binary``: send and ask for tensors as raw bytes (the v2 binary tensor data extension); None: when the
    server metadata (``GET /v2``) lists ``binary_tensor_data`` in its extensions, else JSON.
    ``concurrency``: requests in flight at once when one call needs several (answers are kept in order; the
    first failure, in order, is raised after the requests already sent have ended). Two by default: the
    client prepares the next batch while the server answers one, which is most of the gain on a local
    server; a distant one (tens of ms per round trip) gains from more.
    """

    def __init__(self, url: str, *, protocol: str | None = None, model_name: str | None = None,
                 input_name: str = "input", output_name: str | None = None, layout: str | None = None,
                 scale: float = 1.0, mean: list[float] | None = None, std: list[float] | None = None,
                 dtype: str = "FP32", batch_size: int = 64, timeout: float = 10.0, retries: int = 3,
                 backoff: float = 0.5, rate_limit: float | None = None, num_classes: int | None = None,
                 input_shape: tuple[int, int, int] | None = None, headers: dict[str, str] | None = None,
                 parameters: dict[str, Any] | None = None, default_num_classes: int | None = None,
                 default_input_shape: tuple[int, int, int] | None = None, binary: bool | None = None,
                 concurrency: int = 2) -> None:
        try:
            parsed = httpx.URL(url)
        except Exception as exc:
            raise ConfigError(f"bad suspect URL {public_url(url)!r}: {redact(str(exc), url_secrets(url))}") from None
        if parsed.scheme not in ("http", "https") or not parsed.host:
            raise ConfigError(f"suspect URL must be http(s)://host[:port]/..., got {public_url(url)!r}")
        if parsed.userinfo and any(name.lower() == "authorization" for name in (headers or {})):
            raise ConfigError(f"{public_url(url)}: the URL's user and password would silently replace the "
                              "Authorization header; give the credentials one way only")
        protocol = guess_protocol(parsed) if protocol is None else protocol
        self._chosen = {"layout": layout is not None, "input_shape": input_shape is not None}
        layout = "NCHW" if layout is None else layout
        for value, allowed, what in ((protocol, PROTOCOLS, "protocol"), (layout, LAYOUTS, "layout"), (dtype, DTYPES, "dtype")):
            if value not in allowed:
                raise ConfigError(f"{what} must be one of {', '.join(allowed)}, got {value!r}")
        if binary and protocol != "v2":
            raise ConfigError(f"binary tensors (--binary) are a v2 protocol extension; the protocol is {protocol!r}")
        if batch_size < 1 or not scale > 0:
            raise ConfigError(f"need batch_size >= 1 and scale > 0; got {batch_size}, {scale}")
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or not 1 <= concurrency <= MAX_CONCURRENCY:
            raise ConfigError(f"--concurrency must be an integer from 1 to {MAX_CONCURRENCY}, got {concurrency!r}")
        if (mean is None) != (std is None) or (std is not None and any(s <= 0 for s in std)):
            raise ConfigError(f"mean and std must be given together, std positive; got mean={mean}, std={std}")
        if dtype == "UINT8" and (mean is not None or scale * 1.0 > 255):
            raise ConfigError("UINT8 inputs cannot carry mean/std normalisation or a scale above 255")
        self.transport = Transport(timeout=timeout, retries=retries, backoff=backoff, rate_limit=rate_limit,
                                   headers=headers, secrets=url_secrets(url))
        self.codec = make_codec(protocol, parsed, model_name, input_name, output_name, parameters)
        self.protocol, self.layout, self.dtype, self.input_name, self.output_name = protocol, layout, dtype, input_name, output_name
        self.scale, self.batch_size, self.concurrency = float(scale), int(batch_size), concurrency
        self._pool: ThreadPoolExecutor | None = None
        self.endpoint, self.metadata_url, self.model_name = self.codec.endpoint, self.codec.metadata_url, self.codec.model_name
        self.identity = public_url(self.endpoint)
        self.notes: list[str] = []
        info = self._metadata(need=num_classes is None or input_shape is None,
                              has_defaults=default_num_classes is not None or default_input_shape is not None)
        self.model_identity = f"{protocol} model {info.name or self.model_name!r} version {info.version or 'unknown'}"
        self.input_shape = self._input_shape(input_shape, default_input_shape, info.input_dims)
        self.num_classes = self._num_classes(num_classes, default_num_classes, info.num_classes)
        self.binary = self._binary() if binary is None else bool(binary)
        channels = self.input_shape[0]
        self._mean = None if mean is None else np.asarray(mean, np.float32).reshape(-1, 1, 1)
        self._std = None if std is None else np.asarray(std, np.float32).reshape(-1, 1, 1)
        if self._mean is not None and (len(self._mean) != channels or len(self._std) != channels):
            raise ConfigError(f"mean and std need one value per channel ({channels}), got {mean} and {std}")

    @property
    def timeout(self) -> float:
        return self.transport.timeout

    @property
    def rate_limit(self) -> float | None:
        return self.transport.rate_limit

    def _metadata(self, need: bool, has_defaults: bool) -> ModelInfo:
        """The model metadata (retried only when the shapes depend on it); empty when unavailable and not needed."""
        empty = ModelInfo(None, None, None, None)
        try:
            resp = self.transport.request("GET", self.metadata_url, retries=None if need else 0, max_bytes=METADATA_CAP)
            return self.codec.describe(json_loads(resp.content))
        except (SuspectError, ValueError, UnicodeDecodeError) as exc:
            if need and not has_defaults:
                if isinstance(exc, SuspectError):
                    raise
                raise SuspectError(f"{self.metadata_url} answered metadata that is not JSON") from None
            if need:
                self.notes.append(f"{self.identity}: no model metadata ({str(exc)[:120]})")
            return empty

    def _binary(self) -> bool:
        """Whether a v2 server advertises the binary tensor data extension (asked once, never retried)."""
        if self.protocol != "v2":
            return False
        try:
            resp = self.transport.request("GET", self.codec.server_metadata_url, retries=0, max_bytes=METADATA_CAP)
            return advertised(json_loads(resp.content))
        except (SuspectError, ValueError, UnicodeDecodeError):
            return False

    def _input_shape(self, given: Any, default: Any, dims: tuple[int, ...] | None) -> tuple[int, int, int]:
        flat = self.layout.startswith("flat")
        from_meta = None
        if dims is not None and not flat and len(dims) == 4 and min(dims[1:]) > 0:
            from_meta = tuple(dims[1:]) if self.layout == "NCHW" else (dims[3], dims[1], dims[2])
        chosen = self._chosen["layout"] or self._chosen["input_shape"]
        if given is None and from_meta is not None and default is not None and tuple(from_meta) != tuple(default):
            if chosen:  # the user's flags win over the metadata (noted below); the key's shape is what we send
                from_meta = None
        if given is None and from_meta is not None and default is not None and tuple(from_meta) != tuple(default):
            raise ConfigError(f"{self.identity}: the metadata says inputs of shape {list(dims)}, read with layout "
                              f"{self.layout} as {tuple(from_meta)}, but the key's inputs are {tuple(default)}; "
                              "check --layout (NCHW or NHWC) and --input-shape")
        shape = tuple(int(s) for s in self._pick(given, from_meta, None if default is None else tuple(default),
                                                 "input shape", "input_shape"))
        if len(shape) != 3 or min(shape) < 1:
            raise ConfigError(f"input_shape must be three positive integers (C, H, W), got {shape}")
        sent = list(self._laid_out(np.zeros((1, *shape), np.float32)).shape)
        if dims is not None and (len(dims) != len(sent) or any(d > 0 and d != s for d, s in zip(dims[1:], sent[1:]))):
            if chosen:  # a server may publish wrong metadata: what the user chose explicitly is sent as chosen
                self.notes.append(f"{self.identity}: your --layout / --input-shape send inputs {['N', *sent[1:]]}, "
                                  f"which disagree with the metadata's {list(dims)}; sending what you chose")
                return shape  # type: ignore[return-value]
            raise ConfigError(f"{self.identity}: the metadata says inputs of shape {list(dims)}, but layout "
                              f"{self.layout} with input shape {shape} sends {['N', *sent[1:]]}; check --layout "
                              "and --input-shape")
        return shape  # type: ignore[return-value]

    def _pick(self, given: Any, from_meta: Any, default: Any, what: str, name: str) -> Any:
        """The argument, else the metadata's value, else the caller's default (with a note); ConfigError without."""
        if given is not None or from_meta is not None:
            return given if given is not None else from_meta
        flag = "--" + name.replace("_", "-")
        if default is None:
            raise ConfigError(f"{self.identity}: the model metadata does not give the {what}; pass {name} ({flag})")
        self.notes.append(f"{self.identity}: the metadata gives no {what}; using the key's {default} "
                          f"(pass {flag} to set it)")
        return default

    def _num_classes(self, given: int | None, default: int | None, from_meta: int | None) -> int:
        if given is not None and from_meta is not None and int(given) != int(from_meta):
            self.notes.append(f"{self.identity}: --num-classes {given} disagrees with the metadata's {from_meta}; "
                              f"using {given}")
        k = self._pick(given, from_meta, default, "number of classes (a label-only output?)", "num_classes")
        if int(k) < 1:
            raise ConfigError(f"num_classes must be at least 1, got {k}")
        return int(k)

    def close(self) -> None:
        """Close the HTTP connection pool."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        self.transport.close()

    def __enter__(self) -> HttpSuspect:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """Labels for ``images`` (float32 NCHW in [0,1]), asked ``batch_size`` inputs per request."""
        if not isinstance(images, torch.Tensor) or images.dim() != 4 or tuple(images.shape[1:]) != self.input_shape:
            raise ConfigError(f"{self.identity} expects queries of shape (N, {', '.join(map(str, self.input_shape))}), "
                              f"got {tuple(getattr(images, 'shape', ()))}")
        batches = [images[start:start + self.batch_size] for start in range(0, len(images), self.batch_size)]
        if self.concurrency == 1 or len(batches) < 2:
            parts = [self._ask(b) for b in batches]
        else:
            parts = self._ask_concurrently(batches)
        return torch.cat(parts) if parts else torch.empty(0, dtype=torch.int64)

    def _ask(self, batch: torch.Tensor) -> torch.Tensor:
        """The labels of one batch: one request (retried by the transport where that can help)."""
        arr = self.encode(batch)
        sent = f"sent {self.dtype} inputs of shape {list(arr.shape)}, layout {self.layout}" + (
            ", binary" if self.binary else "")
        body, headers = self.codec.body(arr, self.dtype, self.binary)
        try:
            resp = self.transport.request("POST", self.endpoint, body, sent=sent, headers=headers,
                                          max_bytes=answer_cap(len(arr), self.num_classes))
        except HttpStatusError as exc:
            raise self._shape_hint(exc) from None
        return self._labels(self.codec.answer(self._json(resp), self.identity), len(arr))

    def _ask_concurrently(self, batches: list[torch.Tensor]) -> list[torch.Tensor]:
        """:meth:`_ask` for each batch, ``concurrency`` at once, answers in order. On a failure nothing more is
        sent; the requests in flight end (each bounded by the timeout) and the first failure in order is raised."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="modelproof-http")
        futures: list[Future] = []
        failed = threading.Event()

        def ask(batch: torch.Tensor) -> torch.Tensor:
            if failed.is_set():
                raise _NotSent()
            try:
                return self._ask(batch)
            except BaseException:
                failed.set()
                raise

        try:
            futures = [self._pool.submit(ask, b) for b in batches]
            wait(futures)
        finally:
            for f in futures:
                f.cancel()
        errors = [f.exception() for f in futures if not f.cancelled() and f.exception() is not None]
        first = next((e for e in errors if not isinstance(e, _NotSent)), None)
        if first is not None:
            raise first
        return [f.result() for f in futures]

    def _shape_hint(self, exc: HttpStatusError) -> SuspectError:
        """``exc``, plus which layouts to try when the server's complaint is about the input's shape."""
        text = str(exc).split(" (sent ")[0].lower()  # the server's words, not ours
        if exc.status not in (400, 422, 500) or not any(w in text for w in ("shape", "dimension", "dim", "2d", "4d")):
            return exc
        others = [lay for lay in LAYOUTS if lay != self.layout]
        return SuspectError(f"{exc}; the server seems to expect another input shape: try --layout "
                            f"{' or '.join(others)} (flat sends [N, C*H*W]), and --input-shape C,H,W")

    def _laid_out(self, arr: np.ndarray) -> np.ndarray:
        if self.layout in ("NHWC", "flat-NHWC"):
            arr = arr.transpose(0, 2, 3, 1)
        return arr.reshape(len(arr), -1) if self.layout.startswith("flat") else arr

    def encode(self, images: torch.Tensor) -> np.ndarray:
        """Our [0,1] NCHW inputs as the endpoint expects them: scaled, normalised, laid out, typed."""
        arr = images.detach().cpu().numpy().astype(np.float32, copy=False)
        if self.scale != 1.0:
            arr = arr * np.float32(self.scale)
        if self._mean is not None:
            arr = (arr - self._mean) / self._std
        arr = self._laid_out(arr)
        if self.dtype == "UINT8":
            arr = np.clip(np.rint(arr), 0, 255)
        return np.ascontiguousarray(arr.astype(DTYPES[self.dtype], copy=False))

    def _json(self, resp: httpx.Response) -> Any:
        try:
            return self.codec.read(resp.content, resp.headers, self.identity)
        except (ValueError, UnicodeDecodeError):
            raise SuspectError(f"{self.identity} answered a body that is not JSON: {snippet(resp.content)}") from None

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



__all__ = ["HttpSuspect", "PROTOCOLS", "LAYOUTS", "DTYPES"]
