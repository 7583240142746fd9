"""Building a reference population once: train what the plan lacks, record each model as it is done.

:func:`build_population` trains the members of :func:`~modelproof.references.mix.plan` that the
folder does not hold yet (so a rerun after an interruption, or a second ``protect`` on the same
data, trains only what is missing, usually nothing), writes each model file and then the manifest
atomically, and finally measures the population's diversity: each member's test accuracy and how
often two members agree on the test images. One process builds into a folder at a time (the folder's
lock, ``ROOT.lock`` beside it, is waited for): a second ``protect`` on a shared cache waits for the first
and then trains nothing. :func:`ensure_population` is what ``protect`` calls: the given folder, or the
default cache folder of the owner's data.
"""

from __future__ import annotations

import itertools
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from ..data.splits import Dataset, Splits
from ..util.locks import exclusive
from ..util.progress import progress_bar
from .mix import DEFAULT_CALIBRATION, DEFAULT_SELECTION, OWNER_SHARE, MAX_TRAIN, Member, plan, recipe_record, \
    train_config
from .store import Population, default_dir, open_member

DIVERSITY_IMAGES = 1000  # test images the pairwise agreement is measured on


def stderr_log(quiet: bool) -> Callable[[str], None]:
    """A logger writing plain stage lines to stderr (nothing when ``quiet``)."""
    return (lambda line: None) if quiet else (lambda line: print(line, file=sys.stderr, flush=True))


def _subset(data: Dataset, limit: int, seed: int) -> Dataset:
    if len(data) <= limit:
        return data
    idx = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))[:limit].sort().values
    return data.subset(idx, f"{data.name}[{limit}]")


def train_member(member: Member, data: Dataset, root: Path) -> dict:
    """Train (or fit) one member on ``data`` and write its file into ``root``; returns its manifest entry."""
    from ..models.devices import default_device
    from ..models.modelfile import save_model, weights_digest
    from ..models.training import train_new
    from .estimators import fit_estimator, save_estimator

    start = time.perf_counter()
    entry = {"name": member.name, "kind": member.kind.name, "role": member.role, "seed": member.seed,
             "for_arch": member.for_arch, "source": "trained", "recipe": recipe_record(data, member)}
    if member.kind.arch is None:
        model = fit_estimator(member.kind.name, data, member.seed)
        path = save_estimator(model, root / f"{member.name}.safetensors")
        entry.update(arch=None, estimator=member.kind.name, digest=model.digest())
    else:
        train = _subset(data, MAX_TRAIN, member.seed)
        net = train_new(member.kind.arch, train, train_config(data, member.kind), seed=member.seed,
                        **member.kind.arch_kwargs)[0] if default_device().type == "cpu" else \
            _train_on_device(member, train, data)
        path = save_model(net.cpu(), root / f"{member.name}.safetensors", extra={"reference": member.name})
        entry.update(arch=member.kind.arch, digest=weights_digest(net))
    entry.update(file=path.name, seconds=round(time.perf_counter() - start, 3))
    return entry


def _train_on_device(member: Member, train: Dataset, data: Dataset):
    from ..models import build_model
    from ..models.devices import default_device
    from ..models.training import fit

    net = build_model(member.kind.arch, data.num_classes, data.input_shape, seed=member.seed,
                      **member.kind.arch_kwargs).to(default_device())
    fit(net, train, train_config(data, member.kind), seed=member.seed)
    return net.eval()


def build_population(root: str | Path, splits: Splits | tuple[Dataset, Dataset | None], *, dataset: str,
                     split: dict | None = None,
                     calibration: int = DEFAULT_CALIBRATION, selection: int = DEFAULT_SELECTION,
                     owner_archs: tuple[str, ...] = (), owner_share: int = OWNER_SHARE, quiet: bool = True,
                     log: Callable[[str], None] | None = None) -> tuple[Population, list[str], float]:
    """Make sure ``root`` holds the planned population for ``splits.owner``; returns it, the names trained
    now and the seconds spent. Progress: the progress line on a terminal and, via ``log``, one line per model.
    ``splits`` may be a pair (owner data, test data or None: then no accuracies and no diversity)."""
    log = log or stderr_log(True)
    # One builder at a time per folder (``ROOT.lock`` beside it): a second process, e.g. a second `protect`
    # on a shared cache, waits and then finds the models trained instead of training them again.
    with exclusive(Path(root).resolve(), "reference population", wait=log):
        return _build(Path(root), splits, dataset, split, plan(
            splits[0] if isinstance(splits, tuple) else splits.owner, calibration=calibration, selection=selection,
            owner_archs=owner_archs, owner_share=owner_share), quiet, log)


def _build(root: Path, splits: Splits | tuple[Dataset, Dataset | None], dataset: str, split: dict | None,
           members: list[Member], quiet: bool, log: Callable[[str], None]) -> tuple[Population, list[str], float]:
    owner, test = splits if isinstance(splits, tuple) else (splits.owner, splits.test)
    pop = Population.create(root, dataset, owner, split)
    have = pop.names()
    todo = [m for m in members if m.name not in have]
    start = time.perf_counter()
    if todo:
        log(f"references: training {len(todo)} of {len(members)} models into {pop.root} "
            f"({len(members) - len(todo)} already there)")
        with progress_bar(len(todo), "training reference models", quiet) as advance:
            for i, member in enumerate(todo, 1):
                entry = train_member(member, owner, pop.root)
                entry["test_accuracy"] = _accuracy(pop.root, entry, test) if test is not None else None
                pop.record(entry)
                advance(1)
                shown = f"test accuracy {entry['test_accuracy']:.4f}" if test is not None else "trained"
                log(f"  [{i}/{len(todo)}] {member.name} ({member.role}): {shown} in {entry['seconds']:.1f} s")
        if test is not None:
            pop.diversity = diversity(pop, test)
            pop.save()
    return pop, [m.name for m in todo], (time.perf_counter() - start) if todo else 0.0


def _accuracy(root: Path, entry: dict, test: Dataset) -> float:
    ref = open_member(root, entry)
    return float((ref.suspect.predict(test.images) == test.labels).float().mean())


def diversity(pop: Population, test: Dataset, images: int = DIVERSITY_IMAGES) -> dict:
    """Accuracy per member and pairwise agreement (share of test images two members label alike)."""
    x = test.images[:images]
    answers = {m["name"]: open_member(pop.root, m).suspect.predict(x) for m in pop.members}
    pairs = [float((answers[a] == answers[b]).float().mean()) for a, b in itertools.combinations(answers, 2)]
    kinds: dict[str, list[float]] = {}
    for m in pop.members:
        if m.get("test_accuracy") is not None:
            kinds.setdefault(m["kind"], []).append(float(m["test_accuracy"]))
    return {"images": len(x), "members": len(answers),
            "agreement_mean": round(sum(pairs) / len(pairs), 4) if pairs else None,
            "agreement_min": round(min(pairs), 4) if pairs else None,
            "agreement_max": round(max(pairs), 4) if pairs else None,
            "accuracy_by_kind": {k: [round(min(v), 4), round(max(v), 4)] for k, v in sorted(kinds.items())}}


def ensure_population(splits: Splits, *, dataset: str, root: str | Path | None = None,
                      owner_arch: str | None = None, calibration: int = DEFAULT_CALIBRATION,
                      selection: int = DEFAULT_SELECTION, quiet: bool = True,
                      log: Callable[[str], None] | None = None) -> tuple[Population, float]:
    """The population ``protect`` uses: the folder ``root`` as it is (nothing is trained into a given folder),
    else the default cache folder of ``splits.owner``, completed with what it lacks; and the seconds spent."""
    if root is not None:
        return Population.open(root), 0.0
    folder = default_dir(dataset, splits.owner)
    pop, _, seconds = build_population(folder, splits, dataset=dataset, calibration=calibration, selection=selection,
                                       owner_archs=(owner_arch,) if owner_arch else (), quiet=quiet, log=log)
    return pop, seconds


def build_for_dataset(dataset: str, *, data_dir: str | Path | None = None, size: int | None = None, seed: int = 0,
                      out: str | Path | None = None, archs: tuple[str, ...] = (),
                      calibration: int = DEFAULT_CALIBRATION, selection: int = DEFAULT_SELECTION,
                      quiet: bool = True) -> dict:
    """``modelproof references build``: load the dataset's split, build its population in ``out`` (default:
    the cache folder ``protect`` looks in) and return a summary (folder, members per role and kind, the
    models trained now, seconds, diversity)."""
    from ..data.splits import load_splits

    splits = load_splits(dataset, data_dir, size=size, seed=seed)
    folder = Path(out) if out is not None else default_dir(dataset, splits.owner)
    pop, trained, seconds = build_population(folder, splits, dataset=dataset,
                                             split={"seed": seed, "size": size, "name": dataset},
                                             calibration=calibration, selection=selection, owner_archs=archs,
                                             quiet=quiet, log=stderr_log(quiet))
    roles: dict[str, dict[str, int]] = {}
    for m in pop.members:
        kinds = roles.setdefault(m["role"], {})
        kinds[m["kind"]] = kinds.get(m["kind"], 0) + 1
    return {"folder": str(pop.root), "dataset": dataset, "members": len(pop.members), "trained": trained,
            "seconds": round(seconds, 1), "roles": roles, "diversity": pop.diversity}
