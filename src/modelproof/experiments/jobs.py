"""The five kinds of experiment job and :func:`run_job`, the one entry point every executor calls.

- ``host``: train the host architecture on the owner split (seed = the grid seed);
- ``negative``: train an independent model (or note a random forest's accuracy) on the owner split;
- ``protect``: protect the host with one protection, save the key (and the watermarked model);
- ``negverify``: verify one negative suspect against one key;
- ``cell``: attack the protected model with one attack (cached as its own ``attack`` entry, so a
  change of alpha reuses it) and verify the result. A removal attack's model is verified with the
  owner's key; an evasion attack's (the pirate: the protected model behind its query filter) too,
  with the filter's FPR on the test split and FNR on the key inputs; a forgery's key (made by the
  counterfeiter from the attacker split, the protected model as its threat model grants, and
  ``INTERCEPTED`` of the owner's key inputs without their labels) is calibrated on the same
  reference population as the owner's keys, as a court's expert would, and verified against the
  protected model: "owned" there is a false claim upheld, the forgery's success.

A job reads what it depends on from the cache (its dependencies' results are passed in only to
check that they finished), so the same function runs in-process, in a worker process or as a Ray
task on any machine that sees the cache folder. Errors are returned as ``{"status": "failed"}``
results (never cached as results, so a re-run retries them; the last one is kept beside, so that tables
written from the cache show it); dependents of a failed job fail with its error.
"""

from __future__ import annotations

import time
import traceback
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import torch

from ..models.devices import configure
from ..util.errors import KeyRefused
from .cache import Store, canonical

INTERCEPTED = 10  # owner key inputs an intercepting counterfeiter sees (Li et al. §6.4: "a handful")


@dataclass(frozen=True)
class Job:
    """One unit of work: its hash (also its cache name), kind, JSON spec and the hashes it needs."""

    id: str
    kind: str
    spec: dict
    deps: tuple[str, ...] = ()
    title: str = field(default="", compare=False)


@lru_cache(maxsize=4)
def _splits_cached(spec_json: str):
    import json

    from ..data.splits import load_splits

    spec = json.loads(spec_json)
    splits = load_splits(spec["name"], spec["data_dir"], size=spec["size"], seed=spec["split_seed"],
                         attacker_fraction=spec["attacker_fraction"], test_fraction=spec["test_fraction"])
    gen = torch.Generator().manual_seed(spec["split_seed"])
    owner, attacker = splits.owner, splits.attacker
    if spec.get("owner_images") and spec["owner_images"] < len(owner):
        owner = owner.subset(torch.randperm(len(owner), generator=gen)[:spec["owner_images"]], owner.name)
    if spec.get("attacker_images") and spec["attacker_images"] < len(attacker):
        attacker = attacker.subset(torch.randperm(len(attacker), generator=gen)[:spec["attacker_images"]],
                                   attacker.name)
    return type(splits)(owner, attacker, splits.test)


def splits_for(dataset: dict):
    """The (memoised) owner / attacker / test splits of a dataset spec, subsets applied."""
    return _splits_cached(canonical(dataset))


@lru_cache(maxsize=8)
def _forest(dataset_json: str, trees: int, seed: int):
    import json

    from ..suspects.local import train_random_forest

    return train_random_forest(splits_for(json.loads(dataset_json)).owner, n_trees=trees, seed=seed)


def _host(store: Store, job: Job) -> dict:
    from ..models.training import TrainConfig, evaluate, train_new

    s = job.spec
    splits = splits_for(s["dataset"])
    model, report = train_new(s["arch"], splits.owner, TrainConfig(**s["train"]), seed=s["seed"], quiet=True)
    info = {"accuracy": evaluate(model, splits.test), "seconds": report.seconds, "arch": s["arch"]}
    if not store.put_model("host", job.id, model, info):
        raise RuntimeError(f"host {s['arch']} could not be saved as a model file")
    return info


def _negative(store: Store, job: Job) -> dict:
    from ..models.training import TrainConfig, evaluate, train_new

    s = job.spec
    splits = splits_for(s["dataset"])
    start = time.perf_counter()
    if s["arch"] == "forest":
        forest = _forest(canonical(s["dataset"]), s["trees"], s["seed"])
        acc = float((forest.predict(splits.test.images) == splits.test.labels).float().mean())
        return {"accuracy": acc, "seconds": time.perf_counter() - start, "arch": "forest"}
    model, report = train_new(s["arch"], splits.owner, TrainConfig(**s["train"]), seed=s["seed"], quiet=True)
    info = {"accuracy": evaluate(model, splits.test), "seconds": report.seconds, "arch": s["arch"]}
    if not store.put_model("negative", job.id, model, info):
        raise RuntimeError(f"negative {s['arch']} could not be saved as a model file")
    return info


def _key_preview(key, owner_images: torch.Tensor, count: int = 6) -> dict:
    """The first ``count`` key inputs and, for each, the nearest owner image (L2) as uint8 lists."""
    inputs = key.inputs[:count].float()
    dist = torch.cdist(inputs.flatten(1), owner_images.flatten(1).float())
    nearest = owner_images[dist.argmin(dim=1)]
    as_bytes = lambda t: (t.clamp(0, 1) * 255).round().to(torch.uint8).tolist()  # noqa: E731
    return {"key": as_bytes(inputs), "source": as_bytes(nearest), "shape": list(inputs.shape[1:])}


def _protect(store: Store, job: Job) -> dict:
    from ..protections.base import PROTECTIONS, discover_protections, make_protection
    from ..references.protect import ReferenceOptions, protect_model
    from .config import accepts_secret

    discover_protections()
    s = job.spec
    splits = splits_for(s["dataset"])
    host = store.model("host", s["host"])
    params = dict(s["params"])
    if accepts_secret(PROTECTIONS[s["name"]]):
        params["secret"] = s["secret"]
    protection = make_protection(s["name"], **params)
    # exactly as `modelproof protect`: the key chosen against the selection references of the default
    # reference population (cached, trained once per dataset), its null calibrated on the disjoint
    # calibration references, and the self-check; a weak key is kept (the grid goes on) and flagged. A
    # key that cannot be made at all (too few candidates survive selection) is a result too: its cells
    # read "no key".
    try:
        outcome = protect_model(protection, host, splits, seed=s["seed"], options=ReferenceOptions(allow_weak=True),
                                owner_arch=getattr(getattr(host, "record", None), "arch", None))
    except KeyRefused as exc:
        return {"refused": str(exc).splitlines()[0], "method_kind": protection.kind}
    result, final = outcome.result, outcome.final
    key = final.key
    info = {"calibrated": True, "null_before": final.summary.get("null_before"),
            "self_check": final.summary.get("self_check"), "method_kind": protection.kind,
            "seconds": final.summary.get("protect_seconds", 0.0), "key_size": len(key),
            "null_match_prob": key.null_match_prob, "null_source": key.null_source,
            "accuracy_host": outcome.accuracy_before, "accuracy_protected": outcome.accuracy_after,
            "key_accuracy": outcome.key_accuracy, "num_classes": int(key.num_classes),
            "preview": _key_preview(key, splits.owner.images),
            "warning": key.params.get("warning") or result.report.get("warning")}
    if protection.kind == "watermark" and not store.put_model("protect", job.id, result.model, {"method": s["name"]}):
        raise RuntimeError(f"the model protected by {s['name']} could not be saved as a model file")
    store.put_key(job.id, key)
    return info


def _protected_model(store: Store, spec: dict):
    return store.model("protect", spec["protect"]) if store.has_model("protect", spec["protect"]) \
        else store.model("host", spec["host"])


def _verdict(key, model_or_suspect, label: str, verification: dict) -> dict:
    from ..suspects.local import TorchSuspect
    from ..references.calibration import match_count
    from ..verification.verifier import verify

    suspect = TorchSuspect(model_or_suspect, identity=label) if isinstance(model_or_suspect, torch.nn.Module) \
        else model_or_suspect
    start = time.perf_counter()
    verdict = verify(key, suspect, alpha=verification["alpha"], mode=verification["mode"],
                     batch_size=verification["batch_size"], budget=verification["budget"])
    seconds = time.perf_counter() - start
    full = verdict.queries == len(key)
    key_acc = verdict.matches / len(key) if full else match_count(key, suspect) / len(key)
    return {"decision": verdict.decision, "p_value": verdict.p_value, "matches": verdict.matches,
            "queries": verdict.queries, "match_rate": verdict.match_rate, "key_accuracy": key_acc,
            "null_match_prob": verdict.null_match_prob, "verify_seconds": seconds}


def _negverify(store: Store, job: Job) -> dict:
    s = job.spec
    key, neg = store.key(s["protect"]), s["negative"]
    accuracy = (store.result("negative", s["negative_job"]) or {}).get("accuracy")
    suspect = _forest(canonical(s["dataset"]), neg["trees"], neg["seed"]) if neg["arch"] == "forest" \
        else store.model("negative", s["negative_job"])
    return {**_verdict(key, suspect, s["label"], s["verification"]), "accuracy_after": accuracy}


def _attacker_data(data, num_outputs: int):
    """The attacker's data with class names padded to the model's outputs (new-label models have C+1)."""
    from ..data.splits import Dataset

    if num_outputs <= data.num_classes:
        return data
    names = (*data.class_names, *(f"extra-{i}" for i in range(data.num_classes, num_outputs)))
    return Dataset(data.images, data.labels, names, data.name, dict(data.meta))


def _attacked(store: Store, s: dict, model, splits) -> tuple[Any, dict]:
    from ..attacks import make_attack, run_attack
    from ..models.training import evaluate

    if s["attack"] == "none":
        acc = evaluate(model, splits.test)
        return model, {"accuracy_before": acc, "accuracy_after": acc, "attack_seconds": 0.0, "attack_queries": 0,
                       "model_cached": True, "details": {}}
    cached = store.result("attack", s["attack_job"])
    if cached is not None and store.has_model("attack", s["attack_job"]):
        return store.model("attack", s["attack_job"]), dict(cached, attack_cached=True)
    outputs = int(getattr(model, "num_classes", splits.attacker.num_classes))
    attacker, test = _attacker_data(splits.attacker, outputs), _attacker_data(splits.test, outputs)
    result = run_attack(make_attack(s["attack"], **s["params"]), model, attacker, test, seed=s["seed"])
    info = {"accuracy_before": result.accuracy_before, "accuracy_after": result.accuracy_after,
            "attack_seconds": result.seconds, "attack_queries": result.queries,
            "details": {k: v for k, v in result.details.items() if isinstance(v, (int, float, str, bool))}}
    info["model_cached"] = store.put_model("attack", s["attack_job"], result.model, {"attack": s["attack"]})
    store.put_result("attack", s["attack_job"], info)
    return result.model, info


def _forged(store: Store, s: dict, model, key, splits) -> tuple[Any, dict]:
    """The counterfeiter's key for ``model`` (cached as the cell's ``attack`` entry), calibrated."""
    from ..attacks.forgery import FORGERIES, make_forgery
    from ..references.calibration import calibrate
    from ..references.population import train_references
    from ..models.training import evaluate

    cached = store.result("attack", s["attack_job"])
    if cached is not None and store.has_key("attack", s["attack_job"]):
        return store.key(s["attack_job"], "attack"), dict(cached, attack_cached=True)
    arch = getattr(getattr(store.model("host", s["host"]), "record", None), "arch", None)
    params = dict(s["params"])
    if "arch" in {p.name for p in FORGERIES[s["attack"]].PARAMS} and "arch" not in params and arch:
        params["arch"] = arch  # the counterfeiter guesses the victim's architecture (Li et al. Fig. 9: "same")
    forgery = make_forgery(s["attack"], **params)
    seen = None
    if forgery.access == "intercepted":
        order = torch.randperm(len(key), generator=torch.Generator().manual_seed(s["seed"]))
        seen = key.inputs[order[:INTERCEPTED]]
    outcome = forgery.perform(model, _attacker_data(splits.attacker, int(key.num_classes)), seen, seed=s["seed"])
    references, _ = train_references(splits.owner, owner_arch=arch, seed=s["seed"], quiet=True)
    forged = calibrate(outcome.key, references)
    acc = evaluate(model, splits.test)
    info = {"accuracy_before": acc, "accuracy_after": acc, "attack_seconds": outcome.seconds,
            "attack_queries": outcome.queries, "forged_key_size": len(forged),
            "details": {k: v for k, v in outcome.details.items() if isinstance(v, (int, float, str, bool))}}
    store.put_key(s["attack_job"], forged, "attack")
    store.put_result("attack", s["attack_job"], info)
    return forged, info


def _cell(store: Store, job: Job) -> dict:
    from .config import attack_kind

    s = job.spec
    splits = splits_for(s["dataset"])
    key, kind = store.key(s["protect"]), attack_kind(s["attack"], s["params"])
    if kind == "forgery":
        model = _protected_model(store, s)
        forged, info = _forged(store, s, model, key, splits)
        return {**info, **_verdict(forged, model, s["label"], s["verification"])}
    model, info = _attacked(store, s, _protected_model(store, s), splits)
    if kind != "evasion":
        return {**info, **_verdict(key, model, s["label"], s["verification"])}
    from ..attacks.evasion.metrics import flag_rate

    model.reset_answers()  # the deployment's answers from its seed, whether built now or read from the cache
    verdict = _verdict(key, model, s["label"], s["verification"])
    return {**info, **verdict, "fpr": flag_rate(model, splits.test.images), "fnr": 1.0 - flag_rate(model, key.inputs)}


RUNNERS = {"host": _host, "negative": _negative, "protect": _protect, "negverify": _negverify, "cell": _cell}


def cached_result(store: Store, job: Job) -> dict | None:
    """``job``'s result from the cache with its status ("cached", or "refused" for a protect that made no
    key), or None when the cache does not hold it."""
    cached = store.result(job.kind, job.id)
    if cached is None:
        return None
    return dict(cached, status="refused" if cached.get("refused") else "cached")


def blocked(job: Job, deps: dict[str, dict]) -> dict | None:
    """``job``'s result when a dependency (``deps``: hash -> result) made no key ("refused", with its reason)
    or did not finish ("failed", with its error); None when every dependency finished."""
    for dep in job.deps:
        result = deps.get(dep, {})
        if result.get("refused"):
            return {"status": "refused", "kind": job.kind, "refused": result["refused"],
                    "error": f"no key: {result['refused']}"}
        if result.get("status") not in ("done", "cached"):
            return {"status": "failed", "kind": job.kind,
                    "error": f"needs a failed {result.get('kind', 'job')}: {result.get('error', 'not run')}"}
    return None


def run_job(job: Job, root: str, deps: dict[str, dict], threads: int = 1, device: str = "cpu") -> dict:
    """Run ``job`` (or read its cached result) with the cache at ``root`` on ``device``; never raises.

    ``deps`` maps each dependency's hash to its result; a failed dependency fails the job.
    The result carries ``status`` ("done", "cached", "failed", or "refused": a protect that could make
    no key, and every job that needs it) and ``seconds``.
    """
    store = Store(root)
    cached = cached_result(store, job)
    if cached is not None:
        return cached
    stopped = blocked(job, deps)
    if stopped is not None:
        return stopped
    configure(device, threads)  # models built and loaded by the job go to ``device``
    start = time.perf_counter()
    try:
        result = RUNNERS[job.kind](store, job)
    except Exception as exc:  # noqa: BLE001 -- recorded per job; the run goes on
        last = traceback.extract_tb(exc.__traceback__)[-1]
        failed = {"status": "failed", "kind": job.kind, "seconds": time.perf_counter() - start,
                  "error": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''} "
                           f"({last.filename.rsplit('/', 1)[-1]}:{last.lineno})"}
        store.put_failure(job.kind, job.id, failed)  # kept, so a run stopped before its tables loses no error
        return failed
    result = dict(result, kind=job.kind, job_seconds=time.perf_counter() - start)
    store.put_result(job.kind, job.id, result)
    store.put_failure(job.kind, job.id, None)
    return dict(result, status="refused" if result.get("refused") else "done")
