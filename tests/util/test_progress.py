"""The one progress helper: silent when piped or quiet, one task per command, nested loops report into it."""

from __future__ import annotations

from modelproof.util import progress


def test_silent_when_not_a_terminal_but_steps_are_counted(capsys):
    with progress.task("job", total=3) as t:
        progress.report(2, loss=0.5)
        with progress.progress_bar(5, "inner") as bar:
            bar(5, loss=0.25)
    assert t.steps == 5 and t.fields["loss"] == 0.25
    assert capsys.readouterr().err == ""
    progress.report(1)  # no task open: nothing happens


def test_terminal_shows_a_final_line_nested_loops_report_into_the_task(capsys, monkeypatch):
    monkeypatch.setattr(progress, "_shown", lambda quiet: not quiet)
    with progress.task("modelproof attack ftll") as t:
        progress.phase("training", 10)
        for _ in range(10):
            progress.report(1, loss=1.0)
        with progress.progress_bar(4, "fit") as bar:
            assert bar == t.advance  # no second display: the open task's
            bar(4)
        with progress.task("inner") as inner:
            assert inner is t
    assert t.description == "training" and t.steps == 4  # the nested loop's phase ended: its description restored
    err = capsys.readouterr().err
    assert "modelproof attack ftll: done in" in err and err.count("done in") == 1
    with progress.task("quiet job", quiet=True):
        progress.report(1)
    assert capsys.readouterr().err == ""
