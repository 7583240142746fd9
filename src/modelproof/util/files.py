"""Safe files: atomic writes (a reader never sees half a file) and refusing pickles before parsing."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from .errors import ConfigError


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same folder and ``os.replace``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
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
