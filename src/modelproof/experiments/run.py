"""``run_experiment``: plan, execute, and write the results table (one row per cell and suspect).

Output folder: ``cache/`` (every artefact, by hash), ``config.toml`` (the config as run),
``results.csv`` / ``results.json`` (and ``results.parquet`` when pyarrow is installed),
``failures.json`` and ``report.html``. A positive row's ``outcome`` says what the payoff table counts
(``experiments.payoff.row_outcome``: a weak key is no attack's success). The positive suspect of a cell is the attacked model (for a
forgery: the protected model, verified with the forged key, so "owned" is a false claim); its
negatives are the independent models verified against the same key (one verification per key
and negative, shared by the cells of that key).
"""

from __future__ import annotations

import csv
import io
import json
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from ..models.devices import default_device
from ..util.files import atomic_write_bytes
from .config import ExperimentConfig
from .payoff import with_outcomes
from .plan import Cell, plan, select

COLUMNS = ("dataset", "host", "protection", "protection_kind", "attack", "attack_label", "strength_param",
           "strength", "seed", "suspect", "role", "decision", "p_value", "matches", "queries", "key_size",
           "match_rate", "key_accuracy", "null_match_prob", "accuracy_host", "accuracy_before", "accuracy_after",
           "plausible", "outcome", "protect_seconds", "attack_seconds", "verify_seconds", "attack_queries",
           "attack_kind", "fpr", "fnr", "config_hash", "key_hash", "status", "error")
TIMING = ("protect_seconds", "attack_seconds", "verify_seconds")


@dataclass
class RunSummary:
    """What a run did: rows, job counts by status, failures and wall time."""

    rows: list[dict]
    counts: dict[str, int]
    failures: list[dict]
    seconds: float
    cells: int
    jobs: int
    files: dict[str, str] = field(default_factory=dict)
    refusals: list[dict] = field(default_factory=list)  # protect jobs that could make no key, and why


def _status(result: dict) -> str:
    """A row's status: ok, refused (its protection made no key) or failed (a cell not in the cache yet too,
    with the error "not run")."""
    status = result.get("status")
    return {"done": "ok", "cached": "ok", "refused": "refused"}.get(status, "failed")


def _rows(config: ExperimentConfig, cells: list[Cell], results: dict[str, dict]) -> list[dict]:
    from ..attacks import Plausibility

    rule = Plausibility(**config.plausibility)
    rows = []
    for cell in cells:
        prot, res = results.get(cell.protect_job, {}), results.get(cell.cell_job, {})
        base = {"dataset": cell.dataset, "host": cell.host, "protection": cell.protection.label,
                "protection_kind": prot.get("method_kind", ""), "attack": cell.attack.name, "attack_label": cell.attack.label,
                "strength_param": cell.attack.strength[0] if cell.attack.strength else "",
                "strength": cell.attack.strength[1] if cell.attack.strength else "", "seed": cell.seed,
                "key_size": prot.get("key_size"), "accuracy_host": prot.get("accuracy_host"),
                "accuracy_before": prot.get("accuracy_protected"), "protect_seconds": prot.get("seconds"),
                "attack_kind": cell.attack_kind, "config_hash": cell.cell_job, "key_hash": cell.protect_job}
        ok = res.get("status") in ("done", "cached")
        row = {**base, "suspect": f"{cell.protection.label} / {cell.attack.label}", "role": "positive",
               **{k: res.get(k) for k in ("decision", "p_value", "matches", "queries", "match_rate", "key_accuracy",
                                          "null_match_prob", "accuracy_after", "attack_seconds", "verify_seconds",
                                          "attack_queries", "fpr", "fnr")},
               "plausible": rule(res["accuracy_before"], res["accuracy_after"]) if ok else None,
               "status": _status(res), "error": "" if ok else res.get("error", "not run")}
        rows.append(row)
        for label, job_id in cell.negverify_jobs:
            neg = results.get(job_id, {})
            nok = neg.get("status") in ("done", "cached")
            rows.append({**base, "suspect": label, "role": "negative", "config_hash": job_id,
                         **{k: neg.get(k) for k in ("decision", "p_value", "matches", "queries", "match_rate",
                                                    "key_accuracy", "null_match_prob", "accuracy_after",
                                                    "verify_seconds")},
                         "plausible": None, "status": _status(neg),
                         "error": "" if nok else neg.get("error", "not run")})
    return with_outcomes(rows)


def write_tables(rows: list[dict], out: Path) -> dict[str, str]:
    """results.csv and results.json (and results.parquet with pyarrow) in ``out``; returns their paths."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows([{k: ("" if r.get(k) is None else r.get(k)) for k in COLUMNS} for r in rows])
    files = {"csv": out / "results.csv", "json": out / "results.json"}
    atomic_write_bytes(files["csv"], buffer.getvalue().encode())
    atomic_write_bytes(files["json"], (json.dumps(rows, indent=1, default=str) + "\n").encode())
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        pass
    else:
        sink = pa.BufferOutputStream()
        pq.write_table(pa.Table.from_pylist([{k: r.get(k) for k in COLUMNS} for r in rows]), sink)
        files["parquet"] = out / "results.parquet"
        atomic_write_bytes(files["parquet"], sink.getvalue().to_pybytes())
    return {k: str(v) for k, v in files.items()}


def comparable(rows: list[dict]) -> list[dict]:
    """The rows without wall-clock columns: equal for equal configs, whichever executor ran them."""
    return [{k: v for k, v in r.items() if k not in TIMING} for r in rows]


def _cached(jobs: list, root: Path) -> dict[str, dict]:
    """The cached result of each job (listed dependencies first); else, when a dependency failed or made no
    key, that (as a run would say it); else its last recorded failure; else a "not run" placeholder (status
    ``missing``, never a failure)."""
    from .cache import Store
    from .jobs import blocked, cached_result

    store = Store(root)
    results: dict[str, dict] = {}
    for j in jobs:
        stopped = any(results[d]["status"] in ("failed", "refused") for d in j.deps)
        results[j.id] = cached_result(store, j) or (blocked(j, results) if stopped else None) \
            or store.failure(j.kind, j.id) or {"status": "missing", "error": "not run"}
    return results


def run_experiment(config: ExperimentConfig, out: str | Path, *, executor: str = "local", workers: int = 1,
                   address: str | None = None, num_cpus: int | None = None, quiet: bool = False,
                   report: bool = True, only: list[str] | None = None, limit: int | None = None,
                   cached_only: bool = False) -> RunSummary:
    """Run every cell of ``config`` with its cache in ``out/cache``; write the tables and the report.

    ``only`` (glob patterns) and ``limit`` run a subset of the cells (:func:`~.plan.select`); the tables
    and the report then hold that subset. ``cached_only`` runs nothing: the tables and the report show
    what the cache holds, every other cell "not run" (the outcome of :mod:`.payoff`), not failed. A rerun whose config and results are unchanged keeps the
    report it finds (drawing the figures is most of a cached rerun's time; ``experiment report``
    redraws it).
    """
    from ..util.progress import status_display
    from .executors import execute

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    before = {name: (out / name).read_bytes() if (out / name).is_file() else None
              for name in ("config.toml", "results.json")}
    atomic_write_bytes(out / "config.toml", config.source.encode())
    jobs, cells = plan(config)
    if only or limit is not None:
        jobs, cells = select(jobs, cells, only=only, limit=limit)
    counts: Counter = Counter()
    started: set[str] = set()
    start = time.perf_counter()
    with status_display(len(jobs), "jobs", quiet) as update:
        def notify(event: str, job, result: dict | None) -> None:
            if event == "start":
                started.add(job.id)
            else:
                started.discard(job.id)
                counts[result["status"]] += 1
                counts["cells"] += job.kind == "cell"
            counts["running"] = len(started)
            finished = counts["done"] + counts["cached"] + counts["failed"] + counts["refused"]
            update(finished, f"cells {counts['cells']}/{len(cells)}: done {counts['done']} cached {counts['cached']} "
                             f"running {counts['running']} failed {counts['failed']}"
                             + (f" no key {counts['refused']}" if counts["refused"] else ""))

        results = _cached(jobs, out / "cache") if cached_only else \
            execute(jobs, str(out / "cache"), executor=executor, workers=workers, address=address,
                    threads=config.threads, num_cpus=num_cpus, device=default_device().type, notify=notify)
    rows = _rows(config, cells, results)
    failures = [{"job": j.title, "kind": j.kind, "hash": j.id, "error": results[j.id].get("error", "")}
                for j in jobs if results[j.id].get("status") == "failed"]
    if cached_only:
        counts.update(r["status"] for r in results.values() if r["status"] in ("cached", "refused"))
    atomic_write_bytes(out / "failures.json", (json.dumps(failures, indent=1) + "\n").encode())
    refusals = [{"job": j.title, "reason": results[j.id]["refused"]} for j in jobs
                if j.kind == "protect" and results[j.id].get("refused")]
    summary = RunSummary(rows, {k: counts[k] for k in ("done", "cached", "failed", "refused")}, failures,
                         time.perf_counter() - start, len(cells), len(jobs), write_tables(rows, out), refusals)
    unchanged = (out / "report.html").is_file() and all(before[n] == (out / n).read_bytes() for n in before)
    if report and unchanged:
        summary.files["report"] = str(out / "report.html")
    elif report:
        from .report import write_report

        summary.files["report"] = str(write_report(out))
    return summary
