"""Worker processes that parse big JSON bodies, fed through pipes so that the server keeps no copy of them.

Python's JSON parser holds the GIL, so a big body is parsed in another process or it pauses every other
request. A ``ProcessPoolExecutor`` would pickle the body (a second copy in the server) and keep its
argument until the result is back, so the server would hold the body twice and then the parsed arrays
beside it. Here each worker has its own pipe: the server writes the body straight from its buffer
(``Connection.send_bytes`` does not copy), drops its only reference, and gets back the parsed object
with each input's numbers as one float32 array (4 bytes per value, what the model takes). So the server
holds the body, then the result, never both (``benchmarks/serve_load.py`` measures it).

At most :data:`WORKERS` workers run, started on first use (forkserver, so they do not inherit the
server's torch state); a request waits for a free one. A worker that dies is replaced, and its request
fails with a RuntimeError (the server answers 500).
"""

from __future__ import annotations

import multiprocessing
import queue
import threading
from multiprocessing.connection import Connection
from typing import Any

from ..util.jsonsafe import TooDeep, loads_arrays

WORKERS = 2


def _work(conn: Connection) -> None:
    """A worker's loop: a body in, ("ok", parsed) or ("deep" | "bad", message) out, until the pipe closes."""
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
        context.set_forkserver_preload(["modelproof.util.jsonsafe"])
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
