"""What the server reads from a request before the model sees it: the body, capped while reading (chunked
bodies too) and parsed off the event loop (in a thread, or for a body over 1 MiB in a worker process,
since a JSON parser holds the GIL; a body of at most 64 KiB is parsed in place, faster than a thread hop);
and what it writes to its access log (no query strings).

The bodies held at once (being read or parsed) share a :class:`BodyBudget` of the body cap's size, so that
many concurrent clients cannot make the server hold more than one maximal body's worth of raw bytes: a
request waits (first come, first served) until its body fits.

A malformed request is a :class:`Reject`: its status (400 bad JSON or JSON nested too deeply, or a malformed
binary tensor body, 413 over the cap, 415 not JSON) and ``{"error": message}``.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections import deque
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Callable, TypeVar

import numpy as np
from fastapi import Request
from starlette.concurrency import run_in_threadpool

from ..suspects.http import binary
from ..util.jsonsafe import TooDeep
from .parsers import WORKERS, ParserPool, loads_request

BYTES_PER_VALUE = 24  # JSON bytes allowed per input value ("0.6274510025978088, " is 20)
INLINE_BYTES = 64 * 2 ** 10  # bodies this small are parsed on the event loop: a thread hop costs more
PROCESS_BYTES = 2 ** 20  # bodies larger than this are parsed in a worker process
_PARSER: ParserPool | None = None
T = TypeVar("T")


class Reject(Exception):
    """A malformed request: answered with ``status`` and ``{"error": message}``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


class BodyBudget:
    """Bytes of request bodies the server may hold at once, handed out first come, first served.

    A request asks for its Content-Length (the whole budget when it sends none: a chunked body may grow to the
    cap) before reading, and gives it back once its body is parsed; a client that leaves while waiting gives
    up its place. Event-loop only (no locks needed)."""

    def __init__(self, total: int) -> None:
        self.total = self.free = int(total)
        self._waiting: deque[tuple[int, asyncio.Future]] = deque()

    @asynccontextmanager
    async def hold(self, size: int) -> AsyncIterator[None]:
        size = max(0, min(int(size), self.total))
        if self._waiting or self.free < size:
            future = asyncio.get_running_loop().create_future()
            self._waiting.append((size, future))
            try:
                await future
            except asyncio.CancelledError:
                if future.done() and not future.cancelled():  # granted as it was cancelled: give it back
                    self._give_back(size)
                else:
                    self._waiting.remove((size, future))
                    self._grant()  # it may have been the head of the queue
                raise
        else:
            self.free -= size
        try:
            yield
        finally:
            self._give_back(size)

    def _give_back(self, size: int) -> None:
        self.free += size
        self._grant()

    def _grant(self) -> None:
        while self._waiting and self._waiting[0][0] <= self.free:
            size, future = self._waiting.popleft()
            self.free -= size
            future.set_result(None)


def body_cap(wire_shape: list[int], max_batch: int) -> int:
    """The default body cap: the largest batch the model accepts as JSON (24 bytes per value) plus 1 MiB."""
    return max_batch * int(np.prod(wire_shape)) * BYTES_PER_VALUE + 2 ** 20


def _is_json(content_type: str | None) -> bool:
    kind = (content_type or "application/json").split(";", 1)[0].strip().lower()
    return kind in ("application/json", "text/json") or kind.endswith("+json")


def _parse(raw: bytes | bytearray) -> dict:
    try:
        body = loads_request(raw)
    except TooDeep:
        raise Reject(400, "request body is JSON nested too deeply") from None
    except ValueError as exc:
        raise Reject(400, f"request body is not valid JSON ({exc})") from None
    if not isinstance(body, dict):
        raise Reject(400, f"request body must be a JSON object, got {type(body).__name__}")
    return body


async def _read(request: Request, cap: int) -> bytearray:
    """The body, the cap enforced while reading (chunked bodies too; a Content-Length over it is refused by
    :func:`_announced` before the budget is asked)."""
    raw = bytearray()  # grows in place: no second copy of the body for a join
    async for chunk in request.stream():
        if len(raw) + len(chunk) > cap:
            raise Reject(413, f"request body is over this server's maximum of {cap} bytes")
        raw += chunk
    request.state.body_bytes = len(raw)
    return raw


def body_bytes(request: Request) -> int:
    """The bytes of the request's body as read by :func:`read_infer` or :func:`read_json` (not read yet: large)."""
    return getattr(request.state, "body_bytes", PROCESS_BYTES)


async def by_size(nbytes: int, fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` for work on a body of ``nbytes``: on the event loop when the body is at most
    :data:`INLINE_BYTES` (a thread hop costs more than the work), else in a worker thread. The choice follows
    the bytes the client sent, never the shape it claims."""
    if nbytes <= INLINE_BYTES:
        return fn(*args)
    return await run_in_threadpool(fn, *args)


def _decode_binary(raw: bytearray, header: str) -> dict:
    try:
        return binary.decode(raw, header, "inputs", "request")
    except binary.BinaryFormatError as exc:
        raise Reject(400, str(exc)) from None


async def read_infer(request: Request, cap: int, budget: BodyBudget) -> dict:
    """A v2 infer request: JSON (:func:`read_json`), or, with an ``Inference-Header-Content-Length`` header
    (the binary tensor data extension; any content type, as Triton's clients send none or octet-stream),
    the JSON header with each binary input decoded into its ``data``; sizes checked strictly, off the loop."""
    header = request.headers.get(binary.HEADER)
    if header is None:
        return await read_json(request, cap, budget)
    async with budget.hold(_announced(request, cap)):
        raw = await _read(request, cap)
        return await by_size(len(raw), _decode_binary, raw, header)


async def read_json(request: Request, cap: int, budget: BodyBudget) -> dict:
    """The request's JSON object: the cap enforced while reading (chunked bodies too), parsed off the event loop,
    its bytes counted against ``budget`` until parsed."""
    if not _is_json(request.headers.get("content-type")):
        raise Reject(415, f"request content-type must be application/json, got {request.headers['content-type']!r}")
    async with budget.hold(_announced(request, cap)):
        return await _parse_json(await _read(request, cap))


def _announced(request: Request, cap: int) -> int:
    """The bytes a request's body will take: its Content-Length (413 at once when over the cap), or the cap
    for a body without one."""
    size = request.headers.get("content-length")
    if size is None or not size.isdigit():
        return cap
    if int(size) > cap:
        raise Reject(413, f"request body of {size} bytes is over this server's maximum of {cap}")
    return int(size)


async def _parse_json(raw: bytearray) -> dict:
    if len(raw) <= PROCESS_BYTES:
        return await by_size(len(raw), _parse, raw)
    holder = [raw]  # the parser pool takes the body out: no reference stays here while a worker parses it
    del raw
    try:  # Python's JSON parser holds the GIL: a big body is parsed in another process, not just another thread
        body = await run_in_threadpool(_parser().parse, holder)
    except TooDeep:
        raise Reject(400, "request body is JSON nested too deeply") from None
    except ValueError as exc:
        raise Reject(400, f"request body is not valid JSON ({exc})") from None
    if not isinstance(body, dict):
        raise Reject(400, f"request body must be a JSON object, got {type(body).__name__}")
    return body


def warm_parsers() -> None:
    """Start the parser processes before serving (lazily, the first big requests would wait for them)."""
    _parser().warm()


def _parser() -> ParserPool:
    """The worker processes that parse big bodies (started on first use; at most 2, which bounds their memory)."""
    global _PARSER
    if _PARSER is None:
        _PARSER = ParserPool(min(WORKERS, os.cpu_count() or 1))
    return _PARSER


class DropQueryStrings(logging.Filter):
    """An access-log filter that cuts the query string (where clients put API keys) off each request path."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str) and "?" in args[2]:
            record.args = (*args[:2], args[2].split("?", 1)[0], *args[3:])
        return True



__all__ = ["BYTES_PER_VALUE", "BodyBudget", "DropQueryStrings", "Reject", "body_bytes", "body_cap", "by_size", "read_infer",
           "read_json", "warm_parsers"]
