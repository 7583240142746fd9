"""The transport under the HTTP suspects: one ``httpx.Client``, a rate limit, and retries only where a retry can help.

A request is retried (exponential backoff) only when asking again can succeed: a connection error or a
timeout, HTTP 502 / 503 / 504 (a proxy or a server that is starting or overloaded), and HTTP 429 when the
server says when to come back (``Retry-After``). Every other failure is deterministic (a 4xx, a 500
whose body says the input is wrong) and fails at once with the server's own error text, trimmed and with
credentials redacted, plus what the caller says it sent (e.g. the input shape).
"""

from __future__ import annotations

import email.utils
import json
import threading
import time
from datetime import datetime, timezone
from typing import Any

import httpx

from ...util.errors import ConfigError, SuspectError
from ...util.redact import public_url, redact
from ...util.jsonsafe import loads as json_loads

RETRY_STATUSES = (502, 503, 504)
MAX_ANSWER_BYTES = 64 * 2 ** 20  # an answer larger than this (or than the caller expects) is refused while reading
MAX_RETRY_AFTER = 60.0


class HttpStatusError(SuspectError):
    """The server answered a non-retryable HTTP error; ``status`` is its code."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def snippet(content: Any, limit: int = 240, secrets: tuple[str, ...] = ()) -> str:
    """A short, one-line, redacted excerpt of a body for error messages (a JSON ``error`` field preferred)."""
    if isinstance(content, bytes):
        text = content.decode("utf-8", "replace")
        try:
            parsed = json_loads(text)
        except ValueError:
            parsed = None
        if isinstance(parsed, dict) and isinstance(parsed.get("error", parsed.get("detail")), str):
            text = parsed.get("error", parsed.get("detail"))
    elif isinstance(content, str):
        text = content
    else:
        text = json.dumps(content, default=str, allow_nan=True)
    text = redact(" ".join(text.split()), secrets)
    return repr(text[:limit] + ("..." if len(text) > limit else ""))


def retry_after(resp: httpx.Response) -> float | None:
    """Seconds from a ``Retry-After`` header, given in seconds or as an HTTP date (None when absent or unreadable)."""
    value = resp.headers.get("retry-after", "").strip()
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max((when - datetime.now(timezone.utc)).total_seconds(), 0.0)


class Transport:
    """HTTP requests with a timeout, a rate limit (requests per second) and the retry policy above."""

    def __init__(self, *, timeout: float = 10.0, retries: int = 3, backoff: float = 0.5,
                 rate_limit: float | None = None, headers: dict[str, str] | None = None,
                 secrets: tuple[str, ...] = ()) -> None:
        if timeout <= 0 or retries < 0 or backoff < 0:
            raise ConfigError(f"need timeout > 0, retries >= 0 and backoff >= 0; got {timeout}, {retries}, {backoff}")
        if rate_limit is not None and not rate_limit > 0:
            raise ConfigError(f"rate_limit must be a positive number of requests per second, got {rate_limit}")
        self.timeout, self.retries, self.backoff, self.rate_limit = float(timeout), int(retries), float(backoff), rate_limit
        headers = dict(headers or {})
        self.secrets = tuple(v for v in headers.values() if v) + tuple(
            v.split(None, 1)[1] for v in headers.values() if len(v.split(None, 1)) == 2) + tuple(secrets)
        self.client = httpx.Client(timeout=self.timeout, headers=headers)
        self._next_request = 0.0
        self._slot = threading.Lock()  # requests may come from several threads (HttpSuspect's concurrency)

    def close(self) -> None:
        """Close the connection pool."""
        self.client.close()

    def _throttle(self) -> None:
        if self.rate_limit is None:
            return
        with self._slot:  # each request takes the next free slot; the wait happens outside the lock
            now = time.monotonic()
            start = max(now, self._next_request)
            self._next_request = start + 1.0 / self.rate_limit
        if start > now:
            time.sleep(start - now)

    def _send(self, method: str, url: str, body: bytes | None, max_bytes: int,
              headers: dict[str, str] | None = None) -> httpx.Response:
        """One attempt: the whole answer within ``timeout`` seconds (a deadline, not a gap between bytes) and
        ``max_bytes`` bytes (decoded), else httpx.ReadTimeout / SuspectError while reading."""
        deadline = time.monotonic() + self.timeout
        headers = {"content-type": "application/json", **(headers or {})} if body is not None else headers
        with self.client.stream(method, url, content=body, headers=headers) as resp:
            chunks, size = [], 0
            for chunk in resp.iter_bytes():
                size += len(chunk)
                if size > max_bytes:
                    raise SuspectError(f"{method} {public_url(url)} answered more than {max_bytes} bytes, more than "
                                       "any answer to this request needs; refusing to read it")
                chunks.append(chunk)
                if time.monotonic() > deadline:
                    raise httpx.ReadTimeout("deadline passed while reading the answer")
            kept = [(k, v) for k, v in resp.headers.multi_items()
                    if k.lower() not in ("content-encoding", "content-length", "transfer-encoding")]
            return httpx.Response(resp.status_code, headers=kept, content=b"".join(chunks), request=resp.request)

    def request(self, method: str, url: str, body: bytes | None = None, *, sent: str = "",
                retries: int | None = None, max_bytes: int = MAX_ANSWER_BYTES,
                headers: dict[str, str] | None = None) -> httpx.Response:
        """One request, retried where that can help; ``sent`` (what was sent) is added to error messages.

        ``timeout`` bounds each attempt as a whole; an answer over ``max_bytes`` is refused while reading.
        A body is sent as JSON unless ``headers`` say otherwise (e.g. the binary tensor extension's).
        """
        retries = self.retries if retries is None else retries
        tail = f" ({sent})" if sent else ""
        where = public_url(url)
        last, wait = "no attempt", 0.0
        for attempt in range(retries + 1):
            if attempt:
                time.sleep(max(wait, self.backoff * 2 ** (attempt - 1)))
            wait = 0.0
            self._throttle()
            try:
                resp = self._send(method, url, body, max_bytes, headers)
            except httpx.TimeoutException:
                last = f"no whole answer within the --timeout of {self.timeout:g} s"
                continue
            except httpx.TransportError as exc:
                last = f"connection error ({type(exc).__name__}: {redact(str(exc), self.secrets)})"
                continue
            if resp.is_success:
                return resp
            said = snippet(resp.content, secrets=self.secrets)
            if resp.status_code in RETRY_STATUSES:
                last = f"HTTP {resp.status_code} {said}"
                continue
            if resp.status_code == 429:
                after = retry_after(resp)
                if after is not None and after <= MAX_RETRY_AFTER:
                    last, wait = f"HTTP 429 {said} (Retry-After {after:g} s)", after
                    continue
                hint = "; the server is rate limiting: pass --rate (rate_limit=...) below its limit"
                raise HttpStatusError(f"{method} {where}: HTTP 429 {said}{hint}{tail}", 429)
            hint = " (check --header / --header-env: the server wants credentials)" if resp.status_code in (401, 403) else ""
            raise HttpStatusError(f"{method} {where}: HTTP {resp.status_code}, the server said {said}{hint}{tail}",
                                  resp.status_code)
        raise SuspectError(f"{method} {where} failed after {retries + 1} attempt(s); last: {last}{tail}")


__all__ = ["Transport", "HttpStatusError", "redact", "snippet", "public_url", "retry_after", "RETRY_STATUSES"]
