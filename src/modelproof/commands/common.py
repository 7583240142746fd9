"""What every command shares: user-error handling, JSON or human output, dataset options."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from ..errors import ModelproofError

F = TypeVar("F", bound=Callable[..., Any])

DatasetOpt = Annotated[str, typer.Option("--dataset", "-d", help="digits (bundled), mnist, fashion-mnist, cifar10, cifar100, npz, folder")]
DataDirOpt = Annotated[Path | None, typer.Option("--data-dir", help="Folder holding the dataset's files (not needed for digits).")]
SizeOpt = Annotated[int | None, typer.Option("--size", help="Resize images to SIZE x SIZE.")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Seed for splits, initialisation and training.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON instead of text.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")]


def user_errors(fn: F) -> F:
    """Turn a ModelproofError into one line on stderr and exit status 2 (no traceback)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ModelproofError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]


def emit(result: dict, as_json: bool, lines: list[str]) -> None:
    """Print ``result`` as JSON, or the human-readable ``lines``."""
    if as_json:
        sys.stdout.write(json.dumps(result, indent=2, sort_keys=True, default=str) + "\n")
    else:
        for line in lines:
            typer.echo(line)


def key_passphrase(path: Path, passphrase: str | None, passphrase_file: Path | None) -> str | None:
    """The passphrase for the key at ``path``: given, read from a file, or asked for on a terminal.

    Nothing is asked for a plain key; an encrypted one without a passphrase and no terminal is left
    to ``load_key``, whose error says to pass one.
    """
    from ..keys import is_encrypted
    from .protect import read_passphrase

    passphrase = read_passphrase(passphrase, passphrase_file)
    if passphrase is None and Path(path).is_file() and is_encrypted(path) and sys.stdin.isatty():
        passphrase = typer.prompt(f"passphrase of {path}", hide_input=True)
    return passphrase


def load_key_file(path: Path, passphrase: str | None):
    """``keys.load_key`` (imported late: commands load fast)."""
    from ..keys import load_key

    return load_key(path, passphrase)
