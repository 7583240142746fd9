"""The ``modelproof`` command line: ``app`` (a typer app) and ``main``, its console-script entry point.

Each module of this package that defines ``register(app)`` adds its verbs: thin typer commands over
library calls (argument parsing, one library call, printing).
"""

from __future__ import annotations

import os
import signal
import sys
import threading

INTERRUPTED_EXIT = 130  # 128 + SIGINT, as shells report it
GRACE_S = 5.0  # after Ctrl-C, the longest the clean-up may take before the process ends anyway


class Interrupted(BaseException):
    """Raised by Ctrl-C (SIGINT) inside :func:`main`: unwinds every ``finally`` (temporary files removed),
    then :func:`main` prints one line. Not a KeyboardInterrupt, so click does not turn it into "Aborted!"."""


def _say_interrupted() -> None:
    sys.stderr.write(("\n" if sys.stderr.isatty() else "") + "modelproof: interrupted\n")
    sys.stderr.flush()


def _exit_now(*_: object) -> None:
    _say_interrupted()
    os._exit(INTERRUPTED_EXIT)


def _interrupt(signum: int, frame: object) -> None:
    # A library may swallow the exception (torch's import does, halfway): a second Ctrl-C, or the grace
    # period running out, ends the process at once.
    signal.signal(signal.SIGINT, _exit_now)
    watchdog = threading.Timer(GRACE_S, _exit_now)
    watchdog.daemon = True
    watchdog.start()
    raise Interrupted


def main() -> None:
    """Entry point of the ``modelproof`` console script: Ctrl-C anywhere exits 130 with one line."""
    signal.signal(signal.SIGINT, _interrupt)
    try:
        from .app import main as run

        run()
    except (Interrupted, KeyboardInterrupt):
        _say_interrupted()
        sys.exit(INTERRUPTED_EXIT)
