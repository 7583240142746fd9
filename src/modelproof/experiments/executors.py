"""Executors: run the jobs of a plan in-process, in a process pool, or as Ray tasks; same results.

Jobs whose result is already in the cache are resolved by the driver without dispatching them, so
a finished experiment re-runs in seconds. Every executor calls :func:`experiment_jobs.run_job`
and reports each job's start and end to ``notify(event, job, result)`` (event "start" or "end").

- ``local`` with ``workers=1``: one job at a time in this process;
- ``local`` with ``workers=N``: a spawn-started process pool, at most N jobs in flight, each
  submitted once its dependencies finished;
- ``ray``: one Ray task per job (``num_cpus=1``), every dependency passed as the object reference
  of its task, so Ray schedules the DAG; the cache folder must be visible to every node.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait

from ..util.errors import ConfigError
from ..util.progress import detached
from .cache import Store
from .jobs import Job, cached_result, run_job

EXECUTORS = ("local", "ray")
Notify = Callable[[str, Job, dict | None], None]


def _resolve_cached(jobs: list[Job], root: str, notify: Notify) -> dict[str, dict]:
    store, done = Store(root), {}
    for job in jobs:
        cached = cached_result(store, job)
        if cached is not None:
            done[job.id] = cached
            notify("end", job, cached)
    return done


def run_local(jobs: list[Job], root: str, *, workers: int = 1, threads: int = 1, device: str = "cpu",
              notify: Notify = lambda *a: None) -> dict[str, dict]:
    """Run ``jobs`` (listed dependencies first) in this process or a pool of ``workers`` processes."""
    results = _resolve_cached(jobs, root, notify)
    pending = [j for j in jobs if j.id not in results]
    if workers <= 1:
        for job in pending:
            notify("start", job, None)
            with detached():  # the grid's display counts jobs; a job's phases would take it over
                results[job.id] = run_job(job, root, {d: results[d] for d in job.deps}, threads, device)
            notify("end", job, results[job.id])
        return results
    context = multiprocessing.get_context("spawn")
    running: dict[Future, Job] = {}
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        while pending or running:
            ready = [j for j in pending if all(d in results for d in j.deps)]
            for job in ready[:max(0, workers - len(running))]:
                pending.remove(job)
                notify("start", job, None)
                running[pool.submit(run_job, job, root, {d: results[d] for d in job.deps}, threads, device)] = job
            if not running:
                raise RuntimeError("experiment plan has a dependency that is never run")
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                job = running.pop(future)
                results[job.id] = future.result()
                notify("end", job, results[job.id])
    return results


def _ray_module():
    try:
        import ray
    except ImportError:
        raise ConfigError("--executor ray needs Ray: pip install 'modelproof[cluster]'") from None
    return ray


def _ray_task(job: Job, root: str, threads: int, device: str, *dep_results: dict) -> dict:
    return run_job(job, root, dict(zip(job.deps, dep_results)), threads, device)


def run_ray(jobs: list[Job], root: str, *, address: str | None = None, threads: int = 1, num_cpus: int | None = None,
            device: str = "cpu", notify: Notify = lambda *a: None) -> dict[str, dict]:
    """Run ``jobs`` as Ray tasks on the cluster at ``address`` (or the running / a new local instance
    of ``num_cpus`` CPUs)."""
    ray = _ray_module()
    if not ray.is_initialized():
        ray.init(address=address, num_cpus=None if address else num_cpus, include_dashboard=False,
                 log_to_driver=False)
    remote = ray.remote(num_cpus=1, max_retries=0)(_ray_task)
    results = _resolve_cached(jobs, root, notify)
    refs, owners = {}, {}
    for job in jobs:
        if job.id in results:
            continue
        args = [results[d] if d in results else refs[d] for d in job.deps]
        refs[job.id] = remote.remote(job, root, threads, device, *args)
        owners[refs[job.id]] = job
        notify("start", job, None)
    waiting = list(owners)
    while waiting:
        finished, waiting = ray.wait(waiting, num_returns=1)
        for ref in finished:
            job = owners[ref]
            results[job.id] = ray.get(ref)
            notify("end", job, results[job.id])
    return results


def execute(jobs: list[Job], root: str, *, executor: str = "local", workers: int = 1, address: str | None = None,
            threads: int = 1, num_cpus: int | None = None, device: str = "cpu",
            notify: Notify = lambda *a: None) -> dict[str, dict]:
    """Run the plan's ``jobs`` with the named executor on ``device`` (cpu, cuda, mps); returns each job's result by id."""
    if executor not in EXECUTORS:
        raise ConfigError(f"executor must be one of {', '.join(EXECUTORS)}, got {executor!r}")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"workers must be a positive integer, got {workers!r}")
    if executor == "ray":
        if workers != 1:
            raise ConfigError("--workers is for the local executor; Ray uses the cluster's CPUs")
        return run_ray(jobs, root, address=address, threads=threads, num_cpus=num_cpus, device=device, notify=notify)
    if address is not None or num_cpus is not None:
        raise ConfigError("--address and --num-cpus are for --executor ray")
    return run_local(jobs, root, workers=workers, threads=threads, device=device, notify=notify)
