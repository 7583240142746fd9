"""Safe files: atomic writes of files and folders (a reader never sees half of one), outputs checked before
any work, and refusing pickles before parsing.

What is written gets the usual mode (0666, or 0777 for a folder, less the umask, as ``open`` gives), except
a file written with ``secret=True`` (keys, the blind watermark's secret, signing keys, key samples): 0600,
readable by its owner only, from its first byte.
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .errors import ConfigError


PUBLIC_MODE, SECRET_MODE, FOLDER_MODE = 0o666, 0o600, 0o777  # before the umask (which open and mkdir apply)


def temporary_file(path: Path, suffix: str = ".tmp", secret: bool = False) -> tuple[int, Path]:
    """A new, unique, open file beside ``path`` (``.NAME.RANDOM.tmp``): its descriptor and path.

    Unlike ``tempfile.mkstemp`` (always 0600), its mode is the usual one, or 0600 when ``secret``.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
    return _fresh(path, suffix, lambda tmp: (os.open(tmp, flags, SECRET_MODE if secret else PUBLIC_MODE), tmp))


def _fresh(path: Path, suffix: str, create: Any) -> Any:
    """``create(name)`` for the first free random name beside ``path`` (it raises FileExistsError if taken)."""
    for _ in range(100):
        try:
            return create(path.parent / f".{path.name}.{secrets.token_hex(6)}{suffix}")
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name beside {path}")


def atomic_write_bytes(path: Path, data: bytes, *, secret: bool = False) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same folder and ``os.replace``.

    ``secret``: the file is created 0600 (owner only); otherwise it gets the usual mode (0666 less the umask).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = temporary_file(path, secret=secret)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def refuse_existing(paths: list[Path] | Path, force: bool) -> None:
    """ConfigError naming the first of ``paths`` that exists, unless ``force`` (then they may be replaced)."""
    for path in [paths] if isinstance(paths, Path) else paths:
        if not force and (path.exists() or path.is_symlink()):
            raise ConfigError(f"{path} already exists; pass --force to replace it (a commitment's hash may already "
                              "be timestamped, a key or report already handed over)")


def looks_like_pickle(raw: bytes) -> bool:
    """True for a pickle or ``torch.save`` (zip) file that is not laid out as safetensors.

    A safetensors file starts with an 8-byte little-endian header length followed by ``{``; that
    length's first byte may happen to be 0x80 or spell "PK", so the layout is checked first.
    """
    size = int.from_bytes(raw[:8], "little") if len(raw) >= 9 else -1
    if 0 <= size <= len(raw) - 8 and raw[8:9] == b"{":
        return False
    return raw[:1] == b"\x80" or raw[:2] == b"PK"


def file_kind(path: Path) -> str:
    """What an existing file holds, from its first bytes: ``safetensors`` (our model and key files),
    ``onnx`` (a protobuf ModelProto starts with field 1, ir_version), or ``other``."""
    with open(path, "rb") as fh:
        head = fh.read(9)
    size = int.from_bytes(head[:8], "little") if len(head) == 9 else -1
    if size > 0 and head[8:9] == b"{":
        return "safetensors"
    return "onnx" if head[:1] == b"\x08" else "other"


def check_output(path: Path, *, option: str = "--out", folder: bool = False, inputs: tuple = (),
                 force: bool = False, precious: tuple[str, ...] = ()) -> None:
    """Refuse, before any work, an output that would fail or destroy something when written.

    ``path`` must not be one of ``inputs`` (never, not even with ``force``), must not be an existing
    thing of the other sort (a folder where a file is written, or the reverse), nor an existing file of
    another format than its suffix says (``.safetensors``, ``.onnx``) unless ``force``, nor a folder
    holding one of the ``precious`` files (e.g. a key, the only copy of it) unless ``force``; its folder (or
    the nearest existing one above it) must be writable. ConfigError naming ``option`` otherwise.
    """
    from .errors import ConfigError

    path = Path(path)
    for given in inputs:
        if given is not None and Path(given).exists() and path.exists() and path.resolve() == Path(given).resolve():
            raise ConfigError(f"{option} {path} is also an input of this command: choose another path, "
                              "the input would be overwritten")
    if folder and path.exists() and not path.is_dir():
        raise ConfigError(f"{option} {path} is an existing file, not a folder: choose a folder")
    kept = [name for name in precious if folder and (path / name).exists()]
    if kept and not force:
        raise ConfigError(f"{option} {path} already holds {kept[0]}, which would be replaced: pass --force to "
                          "replace it, or choose another folder")
    if not folder and path.is_dir():
        raise ConfigError(f"{option} {path} is a folder: name the file to write")
    if not folder and path.is_file() and not force:
        expected = {".safetensors": "safetensors", ".onnx": "onnx"}.get(path.suffix.lower())
        found = file_kind(path)
        if expected is not None and found != expected:
            raise ConfigError(f"{option} {path} exists and is not a {expected} file ({found}): pass --force to "
                              "replace it, or choose another path")
    parent = path if folder and path.is_dir() else path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise ConfigError(f"{option} {path}: {parent} is a file, not a folder")
    try:
        fd, probe = tempfile.mkstemp(dir=parent, prefix=".modelproof-write-check.")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise ConfigError(f"{option} {path}: cannot write in {parent} ({exc.strerror})") from None


def _temporary_folder(path: Path) -> Path:
    """A new folder beside ``path`` with the usual mode (``tempfile.mkdtemp`` makes it 0700)."""
    return _fresh(path, ".partial", lambda tmp: (os.mkdir(tmp, FOLDER_MODE), tmp)[1])


@contextmanager
def atomic_folder(path: Path, last: tuple[str, ...] = ()) -> Iterator[Path]:
    """Yield a temporary folder beside ``path`` to fill; on success it becomes ``path`` as a whole.

    A new (or empty) ``path`` appears in one rename: a reader, or a Ctrl-C, sees all of its files or
    none. Into an existing folder the files are moved one by one, the names in ``last`` last (the key,
    so that a key never stands beside another model). On an error the temporary folder is removed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary_folder(path)
    try:
        yield tmp
        if path.is_dir() and not any(path.iterdir()):
            path.rmdir()
        if not path.exists():
            os.rename(tmp, path)
            return
        names = sorted(os.listdir(tmp), key=lambda n: (n in last, last.index(n) if n in last else 0, n))
        for name in names:
            os.replace(tmp / name, path / name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
