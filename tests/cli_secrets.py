"""Test helpers: secrets reach the command line as files (the argv forms are refused, issue 23.10). The files
live in one private temporary folder per test process, removed when the process exits."""

from __future__ import annotations

import itertools
import tempfile
from pathlib import Path

_FOLDER = tempfile.TemporaryDirectory(prefix="mp-secret-")  # its finalizer removes it at exit
_NUMBER = itertools.count()


def _file(text: str) -> str:
    path = Path(_FOLDER.name) / f"secret-{next(_NUMBER)}.txt"
    path.write_text(text + "\n")
    return str(path)


def secret(text: str) -> list[str]:
    """``--secret-file FILE`` holding ``text``."""
    return ["--secret-file", _file(text)]


def passphrase(text: str) -> list[str]:
    """``--passphrase-file FILE`` holding ``text``."""
    return ["--passphrase-file", _file(text)]
