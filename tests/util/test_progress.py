"""The one progress helper: silent when piped or quiet, one task per command, nested loops report into it."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time

from modelproof.util import progress


def test_silent_when_not_a_terminal_but_steps_are_counted(capsys):
    with progress.task("job", total=3) as t:
        progress.report(2, loss=0.5)
        with progress.progress_bar(5, "inner") as bar:
            bar(5, loss=0.25)
            assert t.steps == 5 and t.fields["loss"] == 0.25
    assert t.steps == 2 and t.fields["loss"] == 0.5  # the inner loop ended: the outer phase's count and values
    assert capsys.readouterr().err == ""
    progress.report(1)  # no task open: nothing happens


def test_terminal_shows_a_final_line_nested_loops_report_into_the_task(capsys, monkeypatch):
    monkeypatch.setattr(progress, "_shown", lambda quiet: not quiet)
    monkeypatch.setattr(progress, "QUICK_S", 0.0)
    with progress.task("modelproof attack ftll") as t:
        progress.phase("training", 10)
        for _ in range(10):
            progress.report(1, loss=1.0)
        with progress.progress_bar(4, "fit") as bar:
            assert bar == t.advance  # no second display: the open task's
            bar(4)
        with progress.task("inner") as inner:
            assert inner is t
    # the nested loop's phase ended: the outer phase's description, total and count are back
    assert (t.description, t.total, t.steps) == ("training", 10, 10)
    err = capsys.readouterr().err
    assert "modelproof attack ftll: done in" in err and err.count("done in") == 1
    with progress.task("quiet job", quiet=True):
        progress.report(1)
    assert capsys.readouterr().err == ""


def _nested_like_a_reference_build(t, check):
    """The references build: one bar over the members, inside it each member's training bar."""
    with progress.progress_bar(3, "training reference models") as advance:
        for _ in range(3):
            with progress.progress_bar(5, "training mlp") as bar:
                for _ in range(5):
                    bar(1, loss=0.5)
                    check(t)
            advance(1)
            check(t)
    progress.report(0, queries=1)
    check(t)


def test_a_bar_never_exceeds_its_total(monkeypatch):
    """`modelproof demo` printed `239/238 loss ...`: a nested training bar left its total on the task."""
    monkeypatch.setattr(progress, "_shown", lambda quiet: False)
    seen = []

    def check(t):
        seen.append((t.steps, t.total))
        assert t.total is None or t.steps <= t.total, (t.description, t.steps, t.total)

    with progress.task("modelproof demo", quiet=True) as t:
        _nested_like_a_reference_build(t, check)
    assert (3, 3) in seen and t.total is None
    from rich.console import Console

    prog = progress._progress(Console(file=io.StringIO(), width=100, force_terminal=True))
    t = progress.Task(prog, "modelproof demo", None)
    t.interval = 0.0  # every step reaches the display

    def check_display(t):
        check(t)
        shown = prog.tasks[0]
        assert shown.total is None or shown.completed <= shown.total, (shown.description, shown.completed)
        assert shown.completed == t.steps and shown.total == t.total

    token = progress._CURRENT.set(t)
    try:
        _nested_like_a_reference_build(t, check_display)
    finally:
        progress._CURRENT.reset(token)


def test_a_detached_job_leaves_the_grid_display_alone():
    """A grid job's phases (a boundary search, a nested training bar) replaced the grid's "jobs" line and
    count: the report read `boundary search, 30 point(s)  151/25 ... cells 192/576`."""
    with progress.task("modelproof experiment run", quiet=True) as t:
        with progress.status_display(10, "jobs") as update:
            update(3, "cells 1/4")
            with progress.detached():
                progress.phase("boundary search, 30 point(s)", 25)
                progress.report(151, queries=5)
                with progress.progress_bar(7, "attack training") as advance:
                    advance(7)
            assert (t.description, t.steps, t.total) == ("modelproof experiment run (jobs)", 3, 10)
            update(4, "cells 2/4")
            assert t.steps == 4 and t.fields == {"status": "cells 2/4"}


def test_quick_work_prints_no_done_line(capsys, monkeypatch):
    """A group callback opened (and closed) a task at once: it printed a spurious "done in 0.0 s"."""
    monkeypatch.setattr(progress, "_shown", lambda quiet: not quiet)
    with progress.task("modelproof protect zhang-noise"):
        pass
    assert "done in" not in capsys.readouterr().err


def test_terminal_line_fits_the_width_and_keeps_the_count(monkeypatch):
    from rich.console import Console

    out = io.StringIO()
    console = Console(file=out, width=60, force_terminal=True, color_system=None)
    prog = progress._progress(console)
    current = progress.Task(prog, "modelproof protect zhang-noise (training reference models) (training)", 10)
    current.advance(3, loss=0.123456, key_accuracy=0.5)
    current.flush()
    console.print(prog.get_renderable())
    lines = [line for line in out.getvalue().splitlines() if line.strip()]
    assert lines and all(len(line) <= 60 for line in lines), lines
    assert "3/10" in lines[0] and "eta" in lines[0] and "…" in lines[0]


def test_piped_prints_stage_lines_and_heartbeats_without_control_characters(capsys, monkeypatch):
    monkeypatch.setenv("MODELPROOF_HEARTBEAT", "0.1")
    monkeypatch.setattr(progress, "QUICK_S", 0.0)
    with progress.task("modelproof train") as t:
        progress.phase("training \x1b[31mreference\r models", 4)
        progress.report(2, loss=0.5)
        time.sleep(0.35)
        with progress.progress_bar(5, "fit") as bar:
            bar(1)
            time.sleep(0.25)
    assert (t.steps, t.total) == (2, 4)
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == "modelproof train: training  [31mreference  models (4 steps)", lines
    assert any("2/4" in line and "loss 0.5" in line and "so far" in line for line in lines), lines
    assert "modelproof train: training  [31mreference  models (fit) (5 steps)" in lines, lines
    assert lines[-1].startswith("modelproof train: done in")
    assert not any(c in "".join(lines) for c in "\x1b\r\b")


def test_a_long_command_piped_shows_stage_lines_as_they_happen(tmp_path):
    """Off a terminal a long command printed nothing at all until it ended."""
    env = {**os.environ, "MODELPROOF_HEARTBEAT": "0.5", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-c", "from modelproof.cli import main; main()", "train", "--arch", "mlp",
           "--size", "16", "--epochs", "40", "--out", str(tmp_path / "m.safetensors"), "--threads", "1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        first = proc.stderr.readline()  # arrives while the command still runs
        running = proc.poll() is None
        _, rest = proc.communicate(timeout=120)
    finally:
        proc.kill()
    err = first + rest
    assert running and first.startswith("modelproof train"), first
    assert proc.returncode == 0
    assert "\x1b" not in err and "\r" not in err
