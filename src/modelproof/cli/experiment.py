"""``modelproof experiment run CONFIG --out DIR`` and ``modelproof experiment report DIR``.

``run`` expands the TOML config into its grid, runs every cell not already in ``DIR/cache``,
writes ``results.csv`` (and JSON, Parquet with pyarrow) and ``report.html``, and exits with
status 1 listing the failed jobs when any failed (the others are kept). ``report`` rewrites the
HTML page from a finished or partial run; ``table`` prints its survival matrix (protection x attack)
as Markdown.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .common import JsonOpt, QuietOpt, compute_options, emit, user_errors

ExecutorOpt = Annotated[str, typer.Option("--executor", help="local (in-process or --workers processes) or ray.")]
WorkersOpt = Annotated[int, typer.Option("--workers", help="local executor: number of worker processes.")]
AddressOpt = Annotated[str | None, typer.Option("--address", help="ray executor: the cluster's address "
                                                                  "(default: a running or new local instance).")]
CpusOpt = Annotated[int | None, typer.Option("--num-cpus", help="ray executor: CPUs of a new local instance.")]


@user_errors
@compute_options
def run(config: Annotated[Path, typer.Argument(help="The experiment's TOML config.")],
        out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the cache, results and report.")],
        executor: ExecutorOpt = "local", workers: WorkersOpt = 1, address: AddressOpt = None, num_cpus: CpusOpt = None,
        no_report: Annotated[bool, typer.Option("--no-report", help="Skip the HTML report.")] = False,
        only: Annotated[list[str] | None, typer.Option("--only", help="Run only the cells whose protection, attack, "
                                                       "or 'PROTECTION x ATTACK' matches this glob (repeatable; "
                                                       "e.g. --only 'zhang-*' --only 'ipguard x ftal*').")] = None,
        limit: Annotated[int | None, typer.Option("--limit", help="Run only the first N cells (after --only).")] = None,
        cached_only: Annotated[bool, typer.Option("--cached-only", help="Run nothing: write the tables and the "
                                                  "report from what the cache holds, other cells 'not run'.")] = False,
        quiet: QuietOpt = False, json_out: JsonOpt = False) -> None:
    """Run (or resume) every cell of an experiment and write its results table and report."""
    from ..experiments.parse import load_config
    from ..experiments.run import run_experiment

    cfg = load_config(config)
    summary = run_experiment(cfg, out, executor=executor, workers=workers, address=address, num_cpus=num_cpus,
                             quiet=quiet, report=not no_report, only=only, limit=limit,
                             cached_only=cached_only)
    c = summary.counts
    lines = [f"{cfg.name}: {summary.cells} cells, {summary.jobs} jobs ({c['done']} run, {c['cached']} cached, "
             f"{c['failed']} failed, {c['refused']} without a key) in {summary.seconds:.1f} s with executor {executor}",
             *[f"{kind}: {path}" for kind, path in summary.files.items()]]
    lines += [f"NO KEY {r['job']}: {r['reason']}" for r in summary.refusals]
    lines += [f"FAILED {f['job']}: {f['error']}" for f in summary.failures]
    emit({"cells": summary.cells, "jobs": summary.jobs, "counts": c, "seconds": summary.seconds,
          "files": summary.files, "failures": summary.failures, "refusals": summary.refusals}, json_out, lines)
    if summary.failures:
        raise typer.Exit(1)


@user_errors
def report(out: Annotated[Path, typer.Argument(help="An experiment's output folder.")]) -> None:
    """Write DIR/report.html from an experiment's results."""
    from ..experiments.report import write_report

    path = write_report(out)
    typer.echo(f"report: {path} ({path.stat().st_size:,} bytes)")


@user_errors(progress=False)
def table(results: Annotated[Path, typer.Argument(help="An experiment's output folder, or its results.json / "
                                                       "results.csv.")],
          attack: Annotated[list[str] | None, typer.Option("--attack", help="Only the attack columns whose label "
                                                           "matches this glob (repeatable; e.g. --attack none "
                                                           "--attack 'extract*').")] = None,
          transpose: Annotated[bool, typer.Option("--transpose", help="Attacks as rows, protections as "
                                                  "columns.")] = False,
          json_out: JsonOpt = False) -> None:
    """Print the survival matrix (protection x attack: outcome and attacked accuracy) as Markdown."""
    from ..experiments.survival import load_results, survival_matrices, to_markdown

    matrices = [m.only(attack) for m in survival_matrices(load_results(results))]
    data = [{"title": m.title, "host_accuracy": m.host_accuracy, "survives": {p: m.survives(p) for p in m.protections},
             "cells": [{"protection": p, "attack": a, **vars(c)} for (p, a), c in m.cells.items() if a in m.attacks]}
            for m in matrices]
    emit({"matrices": data}, json_out, [to_markdown(m, transpose=transpose) + "\n" for m in matrices])


def register(app: typer.Typer) -> None:
    """Add the ``experiment`` group."""
    group = typer.Typer(no_args_is_help=True, help="Every protection against every attack: a cached grid, "
                                                   "a payoff table and an HTML report.")
    group.command("run")(run)
    group.command("report")(report)
    group.command("table")(table)
    app.add_typer(group, name="experiment")
