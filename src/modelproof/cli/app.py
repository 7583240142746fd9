"""The ``modelproof`` command line: a typer app whose verbs live in ``modelproof.cli``.

Each module of ``modelproof.cli`` that defines ``register(app)`` adds its verbs. Each command
is a library call plus argument parsing and printing. A user error (any ``ModelproofError``)
prints one line ``error: ...`` on stderr and exits with status 2.
"""

from __future__ import annotations

import importlib
import pkgutil

import typer


app = typer.Typer(name="modelproof", no_args_is_help=True, add_completion=False,
                  pretty_exceptions_enable=False, rich_markup_mode=None,
                  context_settings={"help_option_names": ["-h", "--help"]},
                  help="Prove that a suspect image classifier is yours, and measure how well the proof survives attacks.")


def _version(value: bool) -> None:
    if value:
        from .. import __version__

        typer.echo(f"modelproof {__version__}")
        raise typer.Exit()


@app.callback()
def _main(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit."),
          quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress lines for any command.")) -> None:
    """Prove that a suspect image classifier is yours, and measure how well the proof survives attacks."""
    from .common import QUIET

    QUIET[0] = quiet

_PACKAGE = __name__.rsplit(".", 1)[0]
for _info in sorted(pkgutil.iter_modules(importlib.import_module(_PACKAGE).__path__), key=lambda m: m.name):
    _module = importlib.import_module(f"{_PACKAGE}.{_info.name}")
    if hasattr(_module, "register"):
        _module.register(app)


def main() -> None:
    """Entry point of the ``modelproof`` console script."""
    app()
