"""Progress for long work: the one helper every command and every long loop uses.

A command opens :func:`task` around its work: on a terminal (stderr) and without ``quiet`` it draws a
rich line (description, bar when the total is known, steps, the latest values such as loss or key
accuracy, elapsed and estimated time) and prints a final line with the time taken; piped or quiet it
shows nothing. Library loops call :func:`report` (no-op when no task is open) or open a nested
:func:`progress_bar`, which reports into the open task instead of drawing a second display.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

_CURRENT: ContextVar[Task | None] = ContextVar("modelproof_progress_task", default=None)


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


class Task:
    """One piece of long work: ``advance`` steps, ``set`` the shown values, ``restart`` for a new phase.

    Updates reach the display at most every ``interval`` seconds (the steps in between are summed): a
    loop that reports every step then costs nothing, even on a loaded machine where waiting on the
    display's lock would otherwise stall it.
    """

    interval = 0.25

    def __init__(self, prog: Any, description: str, total: int | None) -> None:
        self._prog, self.description = prog, description
        self.fields: dict[str, Any] = {}
        self.steps, self._pending, self._last = 0, 0, 0.0
        self._id = prog.add_task(description, total=total, fields="") if prog is not None else None

    def flush(self) -> None:
        """Send the summed steps and the latest values to the display now."""
        if self._prog is not None:
            text = "  ".join(f"{k} {_fmt(v)}" for k, v in self.fields.items())
            self._prog.update(self._id, fields=text, advance=self._pending)
            self._pending, self._last = 0, time.monotonic()

    def advance(self, n: int = 1, **fields: Any) -> None:
        """``n`` more steps done; ``fields`` (e.g. ``loss=0.3``) replace the shown values of those names."""
        self.steps += n
        self.fields.update(fields)
        if self._prog is not None:
            self._pending += n
            if time.monotonic() - self._last >= self.interval:
                self.flush()

    def set(self, **fields: Any) -> None:
        """Show these values without advancing."""
        self.advance(0, **fields)

    def restart(self, description: str, total: int | None) -> None:
        """A new phase of the same work (a new description and total, steps from zero)."""
        self.description, self.steps, self._pending = description, 0, 0
        if self._prog is not None:
            self._prog.reset(self._id, total=total, description=description)


def _shown(quiet: bool) -> bool:
    return not quiet and sys.stderr.isatty()


@contextmanager
def task(description: str, total: int | None = None, quiet: bool = False) -> Iterator[Task]:
    """Open the progress line of a long job; on a terminal prints ``description: done in S s`` at the end."""
    if _CURRENT.get() is not None:  # nested: report into the open task
        outer = _CURRENT.get()
        assert outer is not None
        yield outer
        return
    start = time.perf_counter()
    if not _shown(quiet):
        silent = Task(None, description, total)
        token = _CURRENT.set(silent)
        try:
            yield silent
        finally:
            _CURRENT.reset(token)
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn
    from rich.progress import TimeElapsedColumn, TimeRemainingColumn

    console = Console(stderr=True)
    columns = [SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[fields]}"), TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn()]
    with Progress(*columns, console=console, transient=True, refresh_per_second=4) as prog:
        current = Task(prog, description, total)
        token = _CURRENT.set(current)
        try:
            yield current
        finally:
            current.flush()
            _CURRENT.reset(token)
    console.print(f"{description}: done in {time.perf_counter() - start:.1f} s", highlight=False)


def phase(description: str, total: int | None) -> None:
    """Start a new phase of the open task: ``total`` steps of ``description`` (nothing when no task is open)."""
    current = _CURRENT.get()
    if current is not None:
        current.restart(description, total)


def report(n: int = 1, **fields: Any) -> None:
    """Advance the open task by ``n`` steps with ``fields`` (nothing when no task is open)."""
    current = _CURRENT.get()
    if current is not None:
        current.advance(n, **fields)


@contextmanager
def progress_bar(total: int, description: str, quiet: bool = False) -> Iterator[Callable[..., None]]:
    """Yield ``advance(n, **fields)`` for a loop of ``total`` steps (a phase of the open task, if any)."""
    outer = _CURRENT.get()
    if outer is not None:
        before = outer.description
        outer.restart(f"{before} ({description})", total)
        try:
            yield outer.advance
        finally:
            outer.description = before
        return
    with task(description, total, quiet) as current:
        yield current.advance


@contextmanager
def status_display(total: int, description: str, quiet: bool = False) -> Iterator[Callable[[int, str], None]]:
    """Yield ``update(completed, status)``: the open task (or a new one) at ``completed`` of ``total`` steps,
    with ``status`` (e.g. cells done / running / cached / failed) among its shown values."""
    with progress_bar(total, description, quiet) as advance:
        done = [0]

        def update(completed: int, status: str) -> None:
            advance(completed - done[0], status=status)
            done[0] = completed

        yield update


__all__ = ["Task", "task", "phase", "report", "progress_bar", "status_display"]
