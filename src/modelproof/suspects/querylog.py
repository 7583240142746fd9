"""The query log file: append-only JSON lines, hash-chained, locked while a run holds it.

The first line is a header (``{"format": "modelproof-query-log", "version": 2, ...}``); every later
line holds ``prev``, the SHA-256 of the line before it, so a record edited, inserted or deleted in the
middle breaks the chain and the whole log is refused. A file that is not a log of ours (no header: a
token file, a ``.tsq``, an older log) is refused without being touched, and so is a symbolic link. The
log is locked (``LOG.lock`` with the holder's pid, :mod:`modelproof.util.locks`) from opening to
:meth:`QueryLog.close`, so two runs never append to one log.

What the chain does not stop: someone who rewrites every line after the one they edit (the digests are
not keyed) or cuts records off the end (those answers are then asked again). The replay check of
:class:`~modelproof.suspects.queried.QueriedSuspect` is what binds replayed answers to the suspect.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from datetime import datetime, timezone
from pathlib import Path

from ..util.errors import ConfigError
from ..util.files import SECRET_MODE
from ..util.locks import FileLock

FORMAT = "modelproof-query-log"
VERSION = 2
_HEADER_START = b'{"format": "modelproof-query-log"'


def _digest(line: bytes) -> str:
    return hashlib.sha256(line).hexdigest()


def now() -> str:
    """The current UTC time as an ISO string with milliseconds."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


class QueryLog:
    """One log file opened for a run: its header, its records (chain checked) and :meth:`append`."""

    def __init__(self, path: str | Path, header: dict) -> None:
        self.path = Path(path)
        if self.path.is_symlink():
            raise ConfigError(f"query log {self.path} is a symbolic link; give the log file itself")
        if self.path.exists() and not stat.S_ISREG(self.path.stat().st_mode):
            raise ConfigError(f"query log {self.path} is not a regular file")
        self._lock = FileLock(self.path, "query log")
        try:
            self.header: dict = {}
            self.records: list[dict] = []
            self._head = ""
            self._load(header)
        except BaseException:
            self._lock.release()
            raise

    def close(self) -> None:
        """Release the log's lock (idempotent)."""
        self._lock.release()

    def _refuse(self, why: str) -> ConfigError:
        return ConfigError(f"--log {self.path} {why}; refusing to use it (nothing was changed): give a new file name")

    def _load(self, header: dict) -> None:
        raw = self.path.read_bytes() if self.path.exists() else b""
        lines = raw.split(b"\n")
        complete, torn = lines[:-1], lines[-1]
        if not complete:
            if torn and not (_HEADER_START.startswith(torn) or torn.startswith(_HEADER_START)):
                raise self._refuse(f"holds {len(raw)} bytes that are not a modelproof query log")
            if torn:
                self._truncate(0)
            self.header = {"format": FORMAT, "version": VERSION, "created": now(), **header}
            line = json.dumps(self.header).encode()  # "format" first: a torn header is still recognised
            self._write([line])
            self._head = _digest(line)
            return
        try:
            first = json.loads(complete[0])
        except (ValueError, UnicodeDecodeError, RecursionError):
            first = None
        if not isinstance(first, dict) or first.get("format") != FORMAT:
            raise self._refuse("is not a modelproof query log (its first line is not a log header)")
        if first.get("version") != VERSION:
            raise self._refuse(f"is a query log of format version {first.get('version')!r}, not {VERSION} "
                               "(written by another modelproof, without a hash chain)")
        self.header, prev = first, _digest(complete[0])
        for number, line in enumerate(complete[1:], start=2):
            try:
                rec = json.loads(line)
            except (ValueError, UnicodeDecodeError, RecursionError):
                rec = None
            if not isinstance(rec, dict):
                raise self._refuse(f"line {number} is not a JSON record")
            if rec.get("prev") != prev:
                raise self._refuse(f"line {number} breaks the hash chain (a record before it, or it, was edited, "
                                   "inserted or removed)")
            prev = _digest(line)
            self.records.append(rec)
        self._head = prev
        if torn:  # a write cut short by a crash: drop it so that new records start on a line of their own
            self._truncate(len(raw) - len(torn))

    def _truncate(self, size: int) -> None:
        with open(self.path, "r+b") as fh:
            fh.truncate(size)
            fh.flush()
            os.fsync(fh.fileno())

    def append(self, records: list[dict]) -> None:
        """Chain ``records`` to the log (each gets ``prev``) and write them, flushed and fsynced."""
        lines = []
        for rec in records:
            rec["prev"] = self._head
            line = json.dumps(rec, sort_keys=True).encode()
            self._head = _digest(line)
            lines.append(line)
        self._write(lines)
        self.records.extend(records)

    def _write(self, lines: list[bytes]) -> None:
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW
        fd = os.open(self.path, flags, SECRET_MODE)  # its answers are mostly the key's labels when the suspect is owned
        with os.fdopen(fd, "ab") as fh:
            fh.write(b"".join(line + b"\n" for line in lines))
            fh.flush()
            os.fsync(fh.fileno())


__all__ = ["FORMAT", "VERSION", "QueryLog", "now"]
