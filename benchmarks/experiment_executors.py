"""One experiment config under each executor, from an empty cache each time, in one run (issue 16).

Usage: OMP_NUM_THREADS=1 python benchmarks/experiment_executors.py [experiments/digits.toml] [--out DIR]
       [--executors local:1,local:2,ray:2] [--again]

Runs the config with ``--executor local --workers 1``, ``--workers 2`` and ``--executor ray`` on a
new local Ray instance of 2 CPUs (each ``executor:N``; N is workers or Ray CPUs), each in its own
empty output folder, and prints the wall time of each, its ratio to the first, and whether each
results table equals the first's (``experiment_run.comparable``: every column but wall-clock
seconds). ``--again`` also times a second run of the first executor on its full cache (goal: under
10 s). Torch threads per job: the config's ``experiment.threads``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

from modelproof.experiments.parse import load_config
from modelproof.experiments.run import comparable, run_experiment


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", nargs="?", default="experiments/digits.toml")
    parser.add_argument("--out", type=Path, default=Path("/tmp/experiment_executors"))
    parser.add_argument("--executors", default="local:1,local:2,ray:2")
    parser.add_argument("--again", action="store_true", help="re-run the first executor on its cache")
    args = parser.parse_args()
    config = load_config(args.config)
    print(f"{args.config}: {config.cells()} cells; torch threads per job {config.threads}", flush=True)
    runs = []
    for spec in args.executors.split(","):
        executor, _, n = spec.partition(":")
        count = int(n or 1)
        out = args.out / spec.replace(":", "-")
        shutil.rmtree(out, ignore_errors=True)
        start = time.perf_counter()
        summary = run_experiment(config, out, executor=executor, workers=count if executor == "local" else 1,
                                 num_cpus=count if executor == "ray" else None, quiet=True, report=False)
        seconds = time.perf_counter() - start
        runs.append({"executor": spec, "seconds": seconds, "jobs": summary.jobs, "failed": len(summary.failures),
                     "rows": comparable(summary.rows)})
        print(f"{spec}: {seconds:.0f} s, {summary.jobs} jobs, {len(summary.failures)} failed", flush=True)
        if executor == "ray":
            import ray

            ray.shutdown()
    first = runs[0]
    print("\n| executor | wall s | ratio to " + first["executor"] + " | same table |\n|---|---|---|---|")
    for r in runs:
        print(f"| {r['executor']} | {r['seconds']:.0f} | {r['seconds'] / first['seconds']:.2f} | "
              f"{'yes' if r['rows'] == first['rows'] else 'NO'} |")
    if args.again:
        start = time.perf_counter()
        summary = run_experiment(config, args.out / first["executor"].replace(":", "-"), quiet=True)
        print(f"\nre-run of {first['executor']} on its cache (report included): {time.perf_counter() - start:.1f} s, "
              f"{summary.counts}")
    (args.out / "timings.json").write_text(json.dumps([{k: v for k, v in r.items() if k != "rows"} for r in runs],
                                                      indent=1))


if __name__ == "__main__":
    main()
