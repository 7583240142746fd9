"""Exclusive locks on output files: a lock file beside the output, holding the holder's process id.

:func:`exclusive` takes ``PATH.lock`` with ``flock`` (released by the kernel if the holder dies, so a
killed run never leaves a lock that blocks the next one) and writes its pid into it; a second writer is
refused with one line naming the holder's pid. The lock file is removed on release.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from .errors import ConfigError


def lock_path(path: str | Path) -> Path:
    """Where the lock of ``path`` lives: ``PATH.lock`` beside it."""
    path = Path(path)
    return path.with_name(path.name + ".lock")


def _holder(lock: Path) -> str:
    try:
        pid = lock.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        pid = ""
    return f"process {pid}" if pid.isdigit() else "another process"


class FileLock:
    """An exclusive, non-blocking lock on ``path`` (see the module); :meth:`release` is idempotent."""

    def __init__(self, path: str | Path, what: str = "file") -> None:
        self._fd: int | None = None
        self.path, self.lock = Path(path), lock_path(path)
        self.lock.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(10):  # the holder may unlink the lock file between our open and our flock
            fd = os.open(self.lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise ConfigError(f"{what} {self.path} is in use by {_holder(self.lock)} (lock {self.lock}); "
                                  "wait for that run to finish") from None
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.lock, follow_symlinks=False))
            except FileNotFoundError:
                same = False
            if same:
                os.ftruncate(fd, 0)
                os.write(fd, f"{os.getpid()}\n".encode())
                os.fsync(fd)
                self._fd = fd
                return
            os.close(fd)
        raise ConfigError(f"could not lock {self.path}: its lock file {self.lock} keeps changing")

    def release(self) -> None:
        """Remove the lock file and drop the lock."""
        if self._fd is None:
            return
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.lock)
        os.close(self._fd)
        self._fd = None

    def __del__(self) -> None:  # a lock dropped without release() (e.g. an abandoned wrapper) is released
        if getattr(self, "_fd", None) is not None:
            self.release()

    def __enter__(self) -> FileLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


@contextlib.contextmanager
def exclusive(path: str | Path, what: str = "file") -> Iterator[FileLock]:
    """Hold the lock of ``path`` for the ``with`` block; ConfigError naming the holder when it is taken."""
    lock = FileLock(path, what)
    try:
        yield lock
    finally:
        lock.release()


__all__ = ["FileLock", "exclusive", "lock_path"]
