"""Progress for long work: the one helper every command and every long loop uses.

A command opens :func:`task` around its work. Where the progress goes depends on stderr:

* a terminal: one rich line that fits the terminal's width (description, bar when the total is known,
  steps, the latest values such as loss or key accuracy, elapsed and estimated time), then a final
  ``description: done in S s`` line for work that took a second or more;
* not a terminal (a pipe, a log file): plain lines, no bars and no control characters: one line per
  stage (each new phase), a heartbeat with the steps so far at least every :data:`HEARTBEAT_S` seconds
  (``MODELPROOF_HEARTBEAT`` overrides it), and the final ``done in`` line;
* ``quiet``: nothing.

Library loops call :func:`report` (no-op when no task is open) or open a nested :func:`progress_bar`,
which reports into the open task instead of drawing a second display.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

_CURRENT: ContextVar[Task | None] = ContextVar("modelproof_progress_task", default=None)
HEARTBEAT_S = 30.0  # the longest silence of the plain (piped) display
QUICK_S = 1.0  # work shorter than this prints no lines at all (no "done in 0.0 s")


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _plain(text: str) -> str:
    """``text`` with every control character (escape, carriage return, newline, ...) made a space."""
    return "".join(c if c.isprintable() else " " for c in text)


def _duration(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 60 else f"{int(seconds // 60)} min {int(seconds % 60)} s"


class _Lines:
    """The display off a terminal: stage lines and heartbeats on stderr, from a small daemon thread."""

    def __init__(self, name: str, heartbeat: float) -> None:
        self.name, self.heartbeat, self.start = name, heartbeat, time.monotonic()
        self.task: Task | None = None
        self._printed = ""  # the last stage printed ("" before the first)
        self._lock, self._stop = threading.Lock(), threading.Event()
        self._thread = threading.Thread(target=self._beat, name="modelproof-progress", daemon=True)
        self._thread.start()

    def _write(self, text: str) -> None:
        sys.stderr.write(_plain(text) + "\n")
        sys.stderr.flush()

    def _state(self) -> str:
        task = self.task
        if task is None:
            return ""
        steps = f"{task.steps}/{task.total}" if task.total else (str(task.steps) if task.steps else "")
        values = "  ".join(f"{k} {_fmt(v)}" for k, v in list(task.fields.items()))
        return "  ".join(part for part in (steps, values) if part)

    def stage(self, description: str, total: int | None, force: bool = False) -> None:
        """Print the stage line of ``description`` unless it is the one printed last."""
        with self._lock:
            if description == self._printed or (not force and time.monotonic() - self.start < QUICK_S
                                                and not self._printed):
                return
            self._printed = description
            self._write(self._label(description) + (f" ({total} steps)" if total else ""))

    def _label(self, description: str) -> str:
        """``name: stage`` (``modelproof train: training``, not ``modelproof train: modelproof train (training)``)."""
        rest = _plain(description)
        if rest.startswith(self.name):
            rest = rest[len(self.name):].strip()
            if rest.startswith("(") and rest.endswith(")"):
                rest = rest[1:-1].replace(") (", ": ")
        return f"{self.name}: {rest}" if rest else self.name

    def _beat(self) -> None:
        if self._stop.wait(min(QUICK_S, self.heartbeat)):
            return
        task = self.task
        # After a second, name the stage; a bare command name ("modelproof verify") says nothing yet, so
        # it waits for the heartbeat (a command that fails within seconds prints its error line alone).
        if task is not None and not self._printed and self._label(task.description) != self.name:
            self.stage(task.description, task.total, force=True)
        while not self._stop.wait(self.heartbeat):
            task = self.task
            if task is not None:
                with self._lock:
                    elapsed = _duration(time.monotonic() - self.start)
                    self._write(f"{self._label(task.description)}  {self._state()}  ({elapsed} so far)")

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


class Task:
    """One piece of long work: ``advance`` steps, ``set`` the shown values, ``restart`` for a new phase.

    Updates reach a terminal's display at most every ``interval`` seconds (the steps in between are
    summed): a loop that reports every step then costs nothing, even on a loaded machine where waiting
    on the display's lock would otherwise stall it.
    """

    interval = 0.25

    def __init__(self, prog: Any, description: str, total: int | None, lines: _Lines | None = None) -> None:
        self._prog, self.description, self.total, self._lines = prog, description, total, lines
        self.fields: dict[str, Any] = {}
        self.steps, self._pending, self._last = 0, 0, 0.0
        self._id = prog.add_task(description, total=total, fields="") if prog is not None else None
        if lines is not None:
            lines.task = self

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
        self.description, self.total, self.steps, self._pending = description, total, 0, 0
        self.fields = {}  # the last phase's values (its loss) are not this one's
        if self._prog is not None:
            self._prog.reset(self._id, total=total, description=description)
            self._unbounded(total)
        if self._lines is not None:
            self._lines.stage(description, total)

    def resume(self, description: str, total: int | None, steps: int, fields: dict[str, Any]) -> None:
        """Back to an outer phase once a nested loop's phase ends: its description, total, count and values
        (the nested loop's total and count are not the outer's: `239/238` came from keeping them)."""
        self.description, self.total, self.steps, self._pending = description, total, steps, 0
        self.fields = dict(fields)
        if self._prog is not None:
            self._prog.reset(self._id, total=total, completed=steps, description=description,
                             fields="  ".join(f"{k} {_fmt(v)}" for k, v in self.fields.items()))
            self._unbounded(total)
            self._last = time.monotonic()

    def _unbounded(self, total: int | None) -> None:
        """rich's ``reset`` keeps the last total when given None: clear it (a phase with no known total)."""
        if total is None:
            for shown in self._prog.tasks:
                if shown.id == self._id:
                    shown.total = None


def _shown(quiet: bool) -> bool:
    return not quiet and sys.stderr.isatty()


def _heartbeat() -> float:
    try:
        return max(0.05, float(os.environ.get("MODELPROOF_HEARTBEAT", HEARTBEAT_S)))
    except ValueError:
        return HEARTBEAT_S


def _console() -> Any:
    from rich.console import Console

    return Console(stderr=True)


def _progress(console: Any) -> Any:
    """A rich display whose description and values shrink (with an ellipsis) to fit the console's width."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn
    from rich.progress import TimeElapsedColumn, TimeRemainingColumn
    from rich.table import Column

    def shrinking(ratio: int) -> Column:
        return Column(no_wrap=True, overflow="ellipsis", ratio=ratio, min_width=4)

    columns = [SpinnerColumn(), TextColumn("{task.description}", table_column=shrinking(2)),
               BarColumn(bar_width=min(30, max(5, console.width // 8))), MofNCompleteColumn(),
               TextColumn("{task.fields[fields]}", table_column=shrinking(1)), TimeElapsedColumn(),
               TextColumn("eta"), TimeRemainingColumn()]
    return Progress(*columns, console=console, transient=True, refresh_per_second=4, expand=True)


@contextmanager
def task(description: str, total: int | None = None, quiet: bool = False) -> Iterator[Task]:
    """Open the progress of a long job (see the module's docstring for where it goes)."""
    outer = _CURRENT.get()
    if outer is not None:  # nested: report into the open task
        yield outer
        return
    start = time.perf_counter()
    if quiet:
        yield from _run(Task(None, description, total))
        return
    if not _shown(quiet):
        lines = _Lines(_plain(description), _heartbeat())
        try:
            yield from _run(Task(None, description, total, lines))
        finally:
            lines.close()
        if time.perf_counter() - start >= QUICK_S:
            if not lines._printed:  # name the work if no stage line did yet
                lines.stage(description, None, force=True)
            lines._write(f"{lines.name}: done in {_duration(time.perf_counter() - start)}")
        return
    console = _console()
    with _progress(console) as prog:
        current = Task(prog, description, total)
        try:
            yield from _run(current)
        finally:
            current.flush()
    if time.perf_counter() - start >= QUICK_S:
        console.print(f"{description}: done in {_duration(time.perf_counter() - start)}", highlight=False)


def _run(current: Task) -> Iterator[Task]:
    token = _CURRENT.set(current)
    try:
        yield current
    finally:
        _CURRENT.reset(token)


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
        before = (outer.description, outer.total, outer.steps, dict(outer.fields))
        outer.restart(f"{before[0]} ({description})", total)
        try:
            yield outer.advance
        finally:
            outer.resume(*before)
        return
    with task(description, total, quiet) as current:
        yield current.advance


@contextmanager
def detached() -> Iterator[None]:
    """Run a block whose own progress (phases, reports, nested bars) is shown nowhere: a job of a grid,
    whose phases would otherwise replace the grid's description and count on the one display."""
    token = _CURRENT.set(Task(None, "", None))
    try:
        yield
    finally:
        _CURRENT.reset(token)


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


__all__ = ["Task", "task", "phase", "report", "progress_bar", "detached", "status_display", "HEARTBEAT_S"]
