"""A progress bar for long work, shown only on a terminal and never with ``quiet``."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager


@contextmanager
def progress_bar(total: int, description: str, quiet: bool = False) -> Iterator[Callable[[int], None]]:
    """Yield ``advance(n)``; draws a rich progress bar when stderr is a terminal and not ``quiet``."""
    if quiet or not sys.stderr.isatty():
        yield lambda n: None
        return
    from rich.progress import Progress

    with Progress(transient=True) as prog:
        task = prog.add_task(description, total=total)
        yield lambda n: prog.advance(task, n)


@contextmanager
def status_display(total: int, description: str, quiet: bool = False) -> Iterator[Callable[[int, str], None]]:
    """Yield ``update(completed, status)``: a bar with a status text, elapsed and estimated time left,
    drawn only on a terminal and never with ``quiet``."""
    if quiet or not sys.stderr.isatty():
        yield lambda n, text: None
        return
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                               TimeRemainingColumn)

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[status]}"),
               TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn())
    with Progress(*columns, transient=True) as prog:
        task = prog.add_task(description, total=total, status="")
        yield lambda n, text: prog.update(task, completed=n, status=text)
