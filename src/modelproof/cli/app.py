"""The ``modelproof`` command line: a typer app whose verbs live in ``modelproof.cli``.

Each module of ``modelproof.cli`` that defines ``register(app)`` adds its verbs. Each command
is a library call plus argument parsing and printing. A user error (any ``ModelproofError``)
prints one line ``error: ...`` on stderr and exits with status 2.

The command modules (and torch, scipy, ... beneath them) are imported only when their command runs:
:data:`COMMANDS` names each top-level command's modules and one-line help, so ``--help``,
``--version`` and a mistyped command answer at once. A module not named there is imported eagerly.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

import typer
from typer.core import TyperGroup

# command -> (the modules of modelproof.cli that register it, its one-line help); tests check both.
COMMANDS: dict[str, tuple[tuple[str, ...], str]] = {
    "demo": (("demo",), "Run the demo on the bundled digits and print what it did."),
    "models": (("models",), "List the architectures for --arch: smallest input side, parameters (at the "
                            "smallest side), description."),
    "serve": (("serve",), "Serve MODEL over HTTP: v2 health, metadata and infer endpoints, and TF-Serving's "
                          ":predict."),
    "train": (("train",), "Train a zoo model on the owner split of a dataset and save it."),
    "evaluate": (("train",), "Test accuracy of a model file on a dataset's test split."),
    "export-onnx": (("train",), "Export a model file to ONNX (dynamic batch) and check onnxruntime agrees "
                                "with torch."),
    "verify": (("verify",), "Ask a suspect the key's inputs and decide, with an exact test, whether it is the "
                            "protected model."),
    "calibrate": (("verify",), "Bound the key's null match probability from independently trained reference "
                               "models."),
    "check-report": (("verify",), "Check that a report is unedited and, when signed, that its signature "
                                  "verifies."),
    "attack": (("attack",), "Run removal attacks on a model file, or forge a key for it (see `attack list`)."),
    "data": (("data",), "Inspect and download datasets."),
    "experiment": (("experiment",), "Every protection against every attack: a cached grid, a payoff table "
                                    "and an HTML report."),
    "keys": (("keys",), "Inspect ownership keys; commit to them; make signing keys."),
    "references": (("references",), "Build and extend reference populations (independent models that keys are "
                                    "selected against and calibrated on)."),
    "protect": (("protect", "protect_blind", "protect_extraction", "protect_frontier", "protect_ipguard",
                 "protect_trigger"),
                "Protect a model with a watermark or fingerprint."),
}
_NOT_COMMANDS = {"app", "common", "suspect_options", "forge", "attack_pirate", "tables"}  # helpers, no register()
_PACKAGE = __name__.rsplit(".", 1)[0]
_LOADED: dict[str, Any] = {}


def load_command(name: str) -> Any:
    """The click command ``name`` of :data:`COMMANDS`, its modules imported and registered on first use."""
    if name not in _LOADED and name in COMMANDS:
        sub = typer.Typer(rich_markup_mode=None, context_settings={"help_option_names": ["-h", "--help"]})
        for module in COMMANDS[name][0]:
            importlib.import_module(f"{_PACKAGE}.{module}").register(sub)
        _LOADED.update({n: c for n, c in typer.main.get_group(sub).commands.items() if n in COMMANDS})
    return _LOADED.get(name)


class LazyGroup(TyperGroup):
    """The top-level group: lists :data:`COMMANDS` from the table, imports a command's modules when it runs."""

    def list_commands(self, ctx: Any) -> list[str]:
        return [*COMMANDS, *(n for n in super().list_commands(ctx) if n not in COMMANDS)]

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        return load_command(cmd_name) or super().get_command(ctx, cmd_name)

    def format_commands(self, ctx: Any, formatter: Any) -> None:
        rows = [(name, COMMANDS[name][1] if name in COMMANDS else self.commands[name].get_short_help_str(
            limit=formatter.width - 6 - len(name))) for name in self.list_commands(ctx)]
        if rows:
            width = formatter.width - 6 - max(len(name) for name, _ in rows)
            rows = [(name, text if len(text) <= width else text[:max(width - 3, 10)].rsplit(" ", 1)[0] + "...")
                    for name, text in rows]
            with formatter.section("Commands"):
                formatter.write_dl(rows)


app = typer.Typer(name="modelproof", cls=LazyGroup, no_args_is_help=True, add_completion=False,
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


_LAZY = {module for modules, _ in COMMANDS.values() for module in modules} | _NOT_COMMANDS
for _info in sorted(pkgutil.iter_modules(importlib.import_module(_PACKAGE).__path__), key=lambda m: m.name):
    if _info.name not in _LAZY:  # a command module not in the table: registered now
        _module = importlib.import_module(f"{_PACKAGE}.{_info.name}")
        if hasattr(_module, "register"):
            _module.register(app)


def main() -> None:
    """Entry point of the ``modelproof`` console script."""
    app()
