"""Exclusive locks on output files: a lock file beside the output, holding the holder's process id.

:func:`exclusive` takes ``PATH.lock`` with ``flock`` (released by the kernel if the holder dies, so a
killed run never leaves a lock that blocks the next one) and writes its pid into it; a second writer is
refused with one line naming the holder's pid, or, given ``wait`` (a reporting callable), told once
whom it waits for and then blocks until the holder is done (a shared cache: the second run reuses what
the first made instead of failing or making it twice). The lock file is removed on release.
Locks are ``flock`` locks: they hold between processes of one machine, on a local file system.
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import os
from collections.abc import Callable, Iterator
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


def silently(_: str) -> None:
    """A ``wait`` reporter that says nothing (a wait of milliseconds, such as another manifest write)."""
    return None


class FileLock:
    """An exclusive lock on ``path`` (see the module): refused when taken, or waited for when ``wait`` is
    given (called once with a line naming the holder); :meth:`release` is idempotent."""

    def __init__(self, path: str | Path, what: str = "file", wait: Callable[[str], None] | None = None) -> None:
        self._fd: int | None = None
        self.path, self.lock = Path(path), lock_path(path)
        self.lock.parent.mkdir(parents=True, exist_ok=True)
        # The holder may unlink the lock file between our open and our flock: try again (a waiter, each time
        # a holder is done: as often as it takes).
        for _ in range(10) if wait is None else itertools.count():
            fd = os.open(self.lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if wait is None:
                    os.close(fd)
                    raise ConfigError(f"{what} {self.path} is in use by {_holder(self.lock)} (lock {self.lock}); "
                                      "wait for that run to finish") from None
                wait(f"{what} {self.path} is in use by {_holder(self.lock)}: waiting until it is released")
                wait = silently  # say it once, however often the holder's lock file is replaced
                fcntl.flock(fd, fcntl.LOCK_EX)
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
def exclusive(path: str | Path, what: str = "file", wait: Callable[[str], None] | None = None) -> Iterator[FileLock]:
    """Hold the lock of ``path`` for the ``with`` block; ConfigError naming the holder when it is taken (or,
    with ``wait``, wait for it: see :class:`FileLock`)."""
    lock = FileLock(path, what, wait)
    try:
        yield lock
    finally:
        lock.release()


__all__ = ["FileLock", "exclusive", "lock_path", "silently"]
