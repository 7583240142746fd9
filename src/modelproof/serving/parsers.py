"""Worker processes that parse big JSON bodies, fed through pipes so that the server keeps no copy of them.

Python's JSON parser holds the GIL, so a big body is parsed in another process or it pauses every other
request. A ``ProcessPoolExecutor`` would pickle the body (a second copy in the server) and keep its
argument until the result is back, so the server would hold the body twice and then the parsed arrays
beside it. Here each worker has its own pipe: the server writes the body straight from its buffer
(``Connection.send_bytes`` does not copy), drops its only reference, and gets back the parsed object
with each input's numbers as one float32 array (4 bytes per value, what the model takes). So the server
holds the body, then the result, never both (``benchmarks/serve_load.py`` measures it).

Both here and in the server's threads, request JSON is parsed with orjson (:func:`loads_request`): 6-7x
faster than the standard library's parser on a batch of floats (3.8 MB: 10 ms against 66 ms), which is
most of what a JSON request costs the server.

At most :data:`WORKERS` workers run, started on first use (forkserver, so they do not inherit the
server's torch state); a request waits for a free one. A worker that dies is replaced, and its request
fails with a RuntimeError (the server answers 500).
"""

from __future__ import annotations

import multiprocessing
import re
import queue
import threading
from multiprocessing.connection import Connection
from typing import Any

import numpy as np
import orjson

from ..util.jsonsafe import TooDeep

WORKERS = 2
_NON_FINITE = re.compile(rb"(?<![\"\w])-?(NaN|Infinity)(?![\"\w])")


def loads_request(raw: bytes | bytearray | memoryview) -> Any:
    """A request body's JSON (orjson: strict, so NaN, Infinity and invalid UTF-8 are bad JSON); ValueError
    with a short message for bad JSON, :class:`TooDeep` for nesting past orjson's depth limit (1,024)."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        message = str(exc)
        if message.startswith("depth limit"):
            raise TooDeep("JSON nested too deeply") from None
        if _NON_FINITE.search(raw):  # Python's json writes these; say why they are refused
            message = f"NaN and Infinity are not JSON; input values must be finite: {message}"
        raise ValueError(message[:300]) from None  # not the JSONDecodeError: it carries the whole body


def loads_arrays(raw: bytes | bytearray, dtype: str | None = None) -> Any:
    """:func:`loads_request` for a worker process: each v2 ``inputs[i].data`` list of numbers comes back as a
    numpy array (cheap to send between processes). With ``dtype="float32"``, float arrays, and integer
    arrays that float32 holds exactly (|v| < 2**24), come back as float32: half the bytes to send, and
    what the model takes."""
    body = loads_request(raw)
    inputs = body.get("inputs") if isinstance(body, dict) else None
    for inp in inputs if isinstance(inputs, list) else []:
        if isinstance(inp, dict) and isinstance(inp.get("data"), list):
            try:
                arr = np.asarray(inp["data"])
            except (ValueError, RecursionError):
                continue
            if arr.dtype.kind in "iuf":
                exact = arr.dtype.kind == "f" or arr.size == 0 or int(np.abs(arr).max()) < 2 ** 24
                inp["data"] = arr.astype(dtype, copy=False) if dtype and exact else arr
    return body


def _work(conn: Connection) -> None:
    """A worker's loop: a body in, ("ok", parsed) or ("deep" | "bad", message) out, until the pipe closes."""
    from .heap import tune_heap

    tune_heap()  # what one big body's parse freed goes back to the system, not kept for the next
    while True:
        try:
            raw = conn.recv_bytes()
        except (EOFError, OSError):
            return
        try:
            reply: tuple[str, Any] = ("ok", loads_arrays(raw, dtype="float32"))
        except TooDeep as exc:
            reply = ("deep", str(exc))
        except ValueError as exc:
            reply = ("bad", str(exc)[:300])
        del raw
        conn.send(reply)


class ParserPool:
    """Up to ``workers`` parser processes, each behind its own pipe; :meth:`parse` is called from threads."""

    def __init__(self, workers: int = WORKERS) -> None:
        self.workers = workers
        self._free: queue.Queue = queue.Queue()
        self._lock = threading.Lock()
        self._running = 0

    def _start(self) -> tuple[Any, Connection]:
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["modelproof.serving.parsers"])
        ours, theirs = context.Pipe()
        process = context.Process(target=_work, args=(theirs,), daemon=True, name="modelproof-json-parser")
        process.start()
        theirs.close()
        return process, ours

    def _take(self) -> tuple[Any, Connection]:
        with self._lock:
            if self._free.empty() and self._running < self.workers:
                self._running += 1
                try:
                    return self._start()
                except BaseException:
                    self._running -= 1
                    raise
        return self._free.get()

    def warm(self) -> None:
        """Start every worker now, so that the first big requests do not wait for them (about a second each)."""
        started = []
        with self._lock:
            while self._running < self.workers:
                self._running += 1
                try:
                    started.append(self._start())
                except BaseException:
                    self._running -= 1
                    raise
        for worker in started:
            self._free.put(worker)

    def parse(self, holder: list) -> Any:
        """Parse the one body in ``holder`` (taken out of it, so that the caller keeps no reference while
        the worker parses). Raises TooDeep or ValueError for bad JSON, RuntimeError if the worker died."""
        process, conn = self._take()
        healthy = False
        try:
            raw = holder.pop()
            conn.send_bytes(raw)
            del raw
            kind, value = conn.recv()
            healthy = True
        except (EOFError, OSError) as exc:
            raise RuntimeError("the JSON parser process died") from exc
        finally:
            if healthy:
                self._free.put((process, conn))
            else:
                process.kill()
                conn.close()
                with self._lock:
                    self._running -= 1
        if kind == "deep":
            raise TooDeep(value)
        if kind == "bad":
            raise ValueError(value)
        return value
