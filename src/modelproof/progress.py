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
