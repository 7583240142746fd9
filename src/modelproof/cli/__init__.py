"""The ``modelproof`` command line: ``app`` (a typer app) and ``main``, its console-script entry point.

Each module of this package that defines ``register(app)`` adds its verbs: thin typer commands over
library calls (argument parsing, one library call, printing).
"""

from __future__ import annotations


def main() -> None:
    """Entry point of the ``modelproof`` console script."""
    from .app import main as run

    run()
