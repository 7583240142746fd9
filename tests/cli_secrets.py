"""Test helpers: secrets reach the command line as files (the argv forms are refused, issue 23.10)."""

from __future__ import annotations

import tempfile
from pathlib import Path


def _file(text: str) -> str:
    path = Path(tempfile.mkdtemp(prefix="mp-secret-")) / "secret.txt"
    path.write_text(text + "\n")
    return str(path)


def secret(text: str) -> list[str]:
    """``--secret-file FILE`` holding ``text``."""
    return ["--secret-file", _file(text)]


def passphrase(text: str) -> list[str]:
    """``--passphrase-file FILE`` holding ``text``."""
    return ["--passphrase-file", _file(text)]
