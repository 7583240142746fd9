"""Expand an experiment config into jobs (a DAG: host -> protect -> cell, negative -> negverify).

Each job's id is the hash of everything its result depends on: the config fragment, the seed,
its dependencies' ids and the code version of the method; equal fragments share a job (the
hosts of two protections are one job), so the plan is the minimal set of work.
"""

from __future__ import annotations

from dataclasses import dataclass

from .cache import code_version, digest
from .config import UNATTACKED, ExperimentConfig, Item, Negative, attack_kind, registered_attacks
from .jobs import Job

NEGATIVE_SEED_BASE = 1000  # a negative's seed: 1000 + 100 * grid seed + its own seed (never a host's seed)


@dataclass(frozen=True)
class Cell:
    """One cell of the grid and the jobs whose results make its rows."""

    dataset: str
    host: str
    protection: Item
    attack: Item
    seed: int
    protect_job: str
    cell_job: str
    negverify_jobs: tuple[tuple[str, str], ...]  # (negative label, job id)
    attack_kind: str = "removal"


def _versions() -> dict[str, str]:
    from .. import attacks
    from ..protections import base as protection
    from ..references import protect as reference_protect
    from ..models import training
    from ..verification import verifier as verification
    from ..models import registry
    from . import jobs as experiment_jobs

    return {"train": code_version(training, registry), "verify": code_version(verification, experiment_jobs),
            "protect": code_version(protection, reference_protect), "attack": code_version(attacks.base, attacks.result)}


def _method_version(kind: str, name: str, params: dict | None = None) -> str:
    if name == UNATTACKED:
        return "none"
    if kind == "protect":
        from ..protections.base import PROTECTIONS, discover_protections

        discover_protections()
        return code_version(PROTECTIONS[name])
    if name == "chain":  # the chain's code and every step's
        from ..attacks import make_attack

        return code_version(registered_attacks()[name], *(type(s) for s in make_attack(name, **(params or {})).steps))
    return code_version(registered_attacks()[name])


def _reads_the_model(name: str) -> bool:
    """Whether protection ``name`` is a fingerprint: it returns the model it was given, untouched."""
    from ..protections.base import PROTECTIONS, discover_protections

    discover_protections()
    return getattr(PROTECTIONS[name], "kind", "watermark") == "fingerprint"


def negative_seed(negative: Negative, seed: int) -> int:
    """The training seed of ``negative`` in the cells of grid seed ``seed``."""
    return NEGATIVE_SEED_BASE + 100 * seed + negative.seed


def plan(config: ExperimentConfig) -> tuple[list[Job], list[Cell]]:
    """The jobs (dependencies first, each once) and the cells of ``config``."""
    jobs: dict[str, Job] = {}
    versions = _versions()
    ver = config.verification
    cells: list[Cell] = []

    def add(kind: str, spec: dict, deps: tuple[str, ...], title: str, version: str) -> str:
        job_id = digest(kind, spec, version)
        jobs.setdefault(job_id, Job(job_id, kind, spec, deps, title))
        return job_id

    for dataset in config.datasets:
        dlabel = dataset["name"] + (f"@{dataset['size']}" if dataset["size"] else "")
        for host in config.hosts:
            for seed in config.seeds:
                host_job = add("host", {"dataset": dataset, "arch": host["arch"], "train": host["train"],
                                        "seed": seed}, (), f"host {host['label']} seed={seed}", versions["train"])
                negatives = []
                for neg in config.negatives:
                    arch = host["arch"] if neg.arch == "same" else neg.arch
                    spec = {"dataset": dataset, "arch": arch, "train": host["train"], "trees": neg.trees,
                            "seed": negative_seed(neg, seed)}
                    label = f"{'forest' if arch == 'forest' else arch} seed={spec['seed']}"
                    negatives.append((label, spec, add("negative", spec, (), f"negative {label}", versions["train"])))
                for prot in config.protections:
                    pspec = {"dataset": dataset, "host": host_job, **prot.spec(), "seed": seed,
                             "secret": f"{config.secret}/{prot.label}/{seed}"}
                    pjob = add("protect", pspec, (host_job,), f"protect {prot.label} seed={seed}",
                               versions["protect"] + _method_version("protect", prot.name))
                    nv = tuple((label, add("negverify", {"dataset": dataset, "protect": pjob, "negative_job": njob,
                                                         "negative": {"arch": spec["arch"], "seed": spec["seed"],
                                                                      "trees": spec["trees"]},
                                                         "label": label, "verification": ver},
                                           (pjob, njob), f"verify {label} vs {prot.label}", versions["verify"]))
                               for label, spec, njob in negatives)
                    attacked = host_job if _reads_the_model(prot.name) else pjob
                    for attack in config.attacks:
                        kind = attack_kind(attack.name, attack.params)
                        aspec = {"protect": pjob, "attack": attack.name, "params": attack.params, "seed": seed}
                        # a fingerprint's protected model is the host itself: its attacked model is the host's,
                        # made once for every fingerprint (a forgery reads the key, so it stays per key)
                        ajob = digest("attack", {**aspec, "protect": pjob if kind == "forgery" else attacked},
                                      versions["attack"] + _method_version("attack", attack.name, attack.params))
                        cspec = {"dataset": dataset, "host": host_job, **aspec, "attack_job": ajob,
                                 "label": f"{prot.label} / {attack.label}", "verification": ver}
                        cjob = add("cell", cspec, (pjob,), f"{prot.label} x {attack.label} seed={seed}",
                                   versions["verify"])
                        cells.append(Cell(dlabel, host["label"], prot, attack, seed, pjob, cjob, nv, kind))
    return list(jobs.values()), cells


def select(jobs: list[Job], cells: list[Cell], *, only: list[str] | None = None,
           limit: int | None = None) -> tuple[list[Job], list[Cell]]:
    """The cells that match one of the ``only`` patterns (globs on the protection, the attack, or
    ``"PROTECTION x ATTACK"``), the first ``limit`` of them, and just the jobs they need."""
    from fnmatch import fnmatchcase

    from ..util.errors import ConfigError

    if limit is not None and limit < 1:
        raise ConfigError(f"--limit must be a positive number of cells, got {limit}")
    if only:
        cells = [c for c in cells if any(fnmatchcase(text, pattern) for pattern in only for text in
                                         (c.protection.label, c.attack.label,
                                          f"{c.protection.label} x {c.attack.label}"))]
        if not cells:
            raise ConfigError(f"--only {' '.join(only)} matches no cell (patterns match a protection, an attack, "
                              "or 'PROTECTION x ATTACK')")
    cells = cells[:limit] if limit is not None else cells
    by_id = {j.id: j for j in jobs}
    needed: set[str] = set()
    stack = [job for c in cells for job in (c.cell_job, *(jid for _, jid in c.negverify_jobs))]
    while stack:
        job_id = stack.pop()
        if job_id not in needed:
            needed.add(job_id)
            stack.extend(by_id[job_id].deps)
    return [j for j in jobs if j.id in needed], cells
