"""The DAWN log: each client's watermarked (input, answered label) pairs, one append-only file per client.

A folder holds one file per client, ``<readable part>-<12 hex of SHA-256(client)>.jsonl`` (the readable
part is the client id with characters other than letters, digits, ``.``, ``_`` and ``-`` replaced, so two
ids never share a file). Each line is one pair::

    {"format": "modelproof-dawn-log/1", "client": ..., "time": ..., "model": <weight digest>, "rate": r,
     "classes": C, "shape": [C, H, W], "input": <base64 of the canonical uint16 image>,
     "answer": <the model's label>, "label": <the label answered>}

The files hold the clients' inputs: the folder is created 0700 and each file 0600 from its first byte
(and set back to 0600 if found otherwise). Appends are safe across threads and processes: a batch's lines
are written with one ``write`` on a descriptor opened with ``O_APPEND`` (the kernel places each write at
the end whole), under a lock within the process, after a newline if the file does not end in one (a
write cut short by a crash). A log is never rewritten, so the atomic-replace rule for other files does
not apply; readers skip and count unreadable lines.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...util.errors import ConfigError

FORMAT = "modelproof-dawn-log/1"
SUFFIX = ".jsonl"
_LOCK = threading.Lock()


@dataclass(frozen=True)
class DawnPair:
    """One watermarked answer: who asked, the canonical image, the model's label and the label answered."""

    client: str
    image: np.ndarray  # uint16 (C, H, W), see modelproof.protections.watermarks.dawn.quantised
    answer: int
    label: int
    classes: int
    model: str
    rate: float
    time: str = ""


def log_pairs(sunk: list[tuple[np.ndarray, int, int]], *, client: str, classes: int, model: str,
              rate: float) -> list[DawnPair]:
    """The pairs a :class:`~modelproof.protections.watermarks.dawn.PairSink` kept, as a server logs them."""
    return [DawnPair(client=client, image=image, answer=answer, label=label, classes=classes, model=model, rate=rate)
            for image, answer, label in sunk]


def check_client(client: object) -> str:
    """A client id: non-empty text of at most 256 characters without control characters."""
    if not isinstance(client, str) or not client or len(client) > 256 or any(ord(c) < 32 for c in client):
        raise ConfigError(f"a client id must be 1-256 printable characters, got {client!r}")
    return client


def client_file(folder: str | Path, client: str) -> Path:
    """The log file of ``client`` in ``folder``."""
    readable = re.sub(r"[^A-Za-z0-9._-]", "_", check_client(client))[:64]
    return Path(folder) / f"{readable}-{hashlib.sha256(client.encode()).hexdigest()[:12]}{SUFFIX}"


def _line(pair: DawnPair, stamp: str) -> str:
    image = np.ascontiguousarray(pair.image, dtype="<u2")
    return json.dumps({"format": FORMAT, "client": pair.client, "time": pair.time or stamp, "model": pair.model,
                       "rate": pair.rate, "classes": pair.classes, "shape": list(image.shape),
                       "input": base64.b64encode(image.tobytes()).decode("ascii"), "answer": int(pair.answer),
                       "label": int(pair.label)}, separators=(",", ":")) + "\n"


def append_pairs(folder: str | Path, pairs: list[DawnPair]) -> int:
    """Append ``pairs`` to their clients' files in ``folder`` (created 0700); returns how many were written."""
    if not pairs:
        return 0
    folder = Path(folder)
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    by_client: dict[str, list[str]] = {}
    for pair in pairs:
        by_client.setdefault(check_client(pair.client), []).append(_line(pair, stamp))
    flags = os.O_RDWR | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
    with _LOCK:
        for client, lines in by_client.items():
            fd = os.open(client_file(folder, client), flags, 0o600)
            try:
                if os.fstat(fd).st_mode & 0o077:
                    os.fchmod(fd, 0o600)
                data = "".join(lines).encode("utf-8")
                size = os.fstat(fd).st_size
                if size and os.pread(fd, 1, size - 1) != b"\n":
                    data = b"\n" + data
                written = 0
                while written < len(data):
                    written += os.write(fd, data[written:])
            finally:
                os.close(fd)
    return len(pairs)


def _pair(record: dict) -> DawnPair:
    shape = tuple(int(s) for s in record["shape"])
    raw = base64.b64decode(record["input"], validate=True)
    image = np.frombuffer(raw, dtype="<u2").reshape(shape).astype(np.uint16)
    return DawnPair(client=str(record["client"]), image=image, answer=int(record["answer"]),
                    label=int(record["label"]), classes=int(record["classes"]), model=str(record["model"]),
                    rate=float(record["rate"]), time=str(record.get("time", "")))


def read_pairs(folder: str | Path, client: str) -> tuple[list[DawnPair], int]:
    """The pairs logged for ``client`` and how many unreadable lines were skipped (a write cut short by a
    crash; skipping one only leaves a pair out of a key, it never adds one). ConfigError when the client has
    no log."""
    path = client_file(folder, client)
    if not path.is_file():
        known = ", ".join(sorted(clients(folder))) or "none"
        raise ConfigError(f"no DAWN log for client {client!r} in {folder} (clients logged: {known})")
    pairs, skipped = [], 0
    for raw in path.read_bytes().split(b"\n"):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw)
            if record.get("format") != FORMAT or record.get("client") != client:
                raise ValueError("another format or client")
            pairs.append(_pair(record))
        except (ValueError, KeyError, TypeError, AttributeError):
            skipped += 1
    return pairs, skipped


def clients(folder: str | Path) -> dict[str, int]:
    """Every client logged in ``folder`` and its number of logged pairs (lines)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ConfigError(f"DAWN log folder not found: {folder}")
    out: dict[str, int] = {}
    for path in sorted(folder.glob(f"*{SUFFIX}")):
        with path.open("rb") as fh:
            first = fh.readline()
            count = 1 + sum(1 for line in fh if line.strip()) if first.strip() else 0
        try:
            out[str(json.loads(first)["client"])] = count
        except (ValueError, KeyError, TypeError):
            continue
    return out


__all__ = ["DawnPair", "FORMAT", "append_pairs", "check_client", "client_file", "clients", "log_pairs", "read_pairs"]
