"""The end-to-end demo on the bundled digits: what ``modelproof demo`` runs.

The story: the owner trains a model on the owner split of digits (16x16, so that Zhang et al.'s
round blocks fit), saves it as a safe model file and exports it to ONNX. Then every registered
protection that declares ``demo_params`` protects it as ``modelproof protect`` does (its key chosen
against the selection references of the default reference population, cached after the first run,
and calibrated on the calibration references); each protected model is verified (it
should be "owned") and so are the negatives, models the protected one has nothing to do with:
the same architecture trained on the same data with other seeds, and a random forest (all
should be "not owned"). One compact table summarises accuracy before/after, key accuracy, the
verdict and p-value, false claims over the negatives, and the queries sequential verification
needed. A protection that raises a user error gets a row with the error instead of a verdict.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import torch

from ..data.splits import load_splits
from ..util.errors import ModelproofError
from ..keys.container import save_key
from ..models.modelfile import export_onnx, load_model, save_model, weights_digest
from ..protections.base import PROTECTIONS, discover_protections, make_protection
from ..references.build import ensure_population
from ..references.protect import ReferenceOptions, protect_model
from ..suspects.local import TorchSuspect, train_random_forest
from ..models.training import TrainConfig, evaluate, train_new
from ..verification.verifier import verify

DEMO_CONFIG = TrainConfig(epochs=20, batch_size=64, lr=0.003, optimizer="adam")
DEMO_ARCH, DEMO_SIZE = "mlp", 16
NEGATIVE_SEEDS = (1, 2)
COLUMNS = (("method", "method", 20, "s"), ("key", "key_size", 4, "d"), ("acc before", "accuracy_before", 10, ".4f"),
           ("acc after", "accuracy_after", 9, ".4f"), ("key acc", "key_accuracy", 7, ".3f"),
           ("verdict", "decision", 9, "s"), ("p-value", "p_value", 9, ".1e"),
           ("false claims", "false_claims", 12, "s"), ("seq queries", "sequential_queries", 11, "d"),
           ("seconds", "seconds", 7, ".1f"))


def demo_protections() -> list[str]:
    """Names of the registered protections that declare ``demo_params``, in registry order."""
    discover_protections()
    return [name for name, cls in PROTECTIONS.items() if isinstance(getattr(cls, "demo_params", None), dict)]


def format_table(rows: list[dict]) -> str:
    """The demo's rows as a fixed-width text table; a refused method's row says so, its reason under the table."""
    lines = ["  ".join(f"{title:<{w}}" if i == 0 else f"{title:>{w}}" for i, (title, _, w, _) in enumerate(COLUMNS))]
    reasons = [f"{row['method']} refused: {row['error']}" for row in rows if "error" in row]
    for row in rows:
        if "error" in row:
            lines.append(f"{row['method']:<{COLUMNS[0][2]}}  refused (the reason is under the table)")
            continue
        lines.append("  ".join(f"{row[key]:<{w}{spec}}" if i == 0 else
                               (f"{row[key]:>{w}{spec}}" if row.get(key) is not None else f"{'-':>{w}}")
                               for i, (_, key, w, spec) in enumerate(COLUMNS)))
    return "\n".join(lines + ([""] + reasons if reasons else []))


def _row(name: str, model, splits, negatives: list, population: Path, out: Path, seed: int, arch: str) -> dict:
    start = time.perf_counter()
    protection = make_protection(name, **PROTECTIONS[name].demo_params)
    outcome = protect_model(protection, model, splits, seed=seed, options=ReferenceOptions(references_dir=population),
                            owner_arch=arch, dataset="digits")
    result, key = outcome.result, outcome.final.key
    protected = TorchSuspect(result.model)
    verdict = verify(key, protected)
    sequential = verify(key, protected, mode="sequential")
    claims = [verify(key, negative).decision == "owned" for negative in negatives]
    save_key(key, out / name / "key.mpkey")
    if PROTECTIONS[name].kind == "watermark":
        save_model(result.model, out / name / "model.safetensors", dataset="digits")
    key_acc = verdict.matches / verdict.queries if verdict.queries else 0.0
    return {"method": name, "kind": PROTECTIONS[name].kind, "key_size": len(key),
            "accuracy_before": evaluate(model, splits.test), "accuracy_after": evaluate(result.model, splits.test),
            "key_accuracy": key_acc, "decision": verdict.decision, "p_value": verdict.p_value,
            "null_match_prob": key.null_match_prob, "false_claims": f"{sum(claims)}/{len(claims)}",
            "false_claim_count": sum(claims), "negatives": len(claims),
            "sequential_decision": sequential.decision, "sequential_queries": sequential.queries,
            "seconds": time.perf_counter() - start}


def run_demo(out_dir: str | Path = "runs/demo", *, seed: int = 0, arch: str = DEMO_ARCH, size: int = DEMO_SIZE,
             quiet: bool = True, log: Callable[[str], None] = print, threads: int = 1) -> dict:
    """Train, save, export, protect with every demo protection, verify protected and negative models;
    returns a summary with the table (``result["table"]``) and logs each step.

    Runs with ``threads`` intra-op torch threads (one by default; restored afterwards): these models
    are tiny, and extra threads only add start-up cost and, on a busy machine, a many-fold slowdown.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return _run(Path(out_dir), seed=seed, arch=arch, size=size, quiet=quiet, log=log)
    finally:
        torch.set_num_threads(before)


def _run(out: Path, *, seed: int, arch: str, size: int, quiet: bool, log: Callable[[str], None]) -> dict:
    start = time.perf_counter()
    splits = load_splits("digits", size=size, seed=seed)
    log(f"digits: {len(splits.owner)} owner / {len(splits.attacker)} attacker / {len(splits.test)} test images, "
        f"shape {splits.input_shape}")
    model, report = train_new(arch, splits.owner, DEMO_CONFIG, seed=seed, quiet=quiet)
    acc = evaluate(model, splits.test)
    log(f"trained {arch} for {report.epochs} epochs in {report.seconds:.1f} s: test accuracy {acc:.4f}")
    path = save_model(model, out / f"{arch}.safetensors", dataset="digits", extra={"split_seed": seed, "size": size})
    same = weights_digest(load_model(path)) == weights_digest(model)
    log(f"saved {path} (safetensors + JSON record); reload bit-exact: {same}")
    result: dict = {"arch": arch, "size": size, "test_accuracy": acc, "train_seconds": report.seconds,
                    "model_file": str(path), "reload_bit_exact": same}
    try:
        result["onnx_file"] = str(export_onnx(model, out / f"{arch}.onnx"))
        log(f"exported {result['onnx_file']}; onnxruntime matches torch")
    except ImportError:
        log("onnxruntime not installed: skipped the ONNX export (pip install 'modelproof[onnx]')")
    negatives = [TorchSuspect(train_new(arch, splits.owner, DEMO_CONFIG, seed=seed + s, quiet=quiet)[0],
                              identity=f"{arch}, seed {seed + s}") for s in NEGATIVE_SEEDS]
    negatives.append(train_random_forest(splits.owner, seed=seed))
    log(f"negatives: {arch} trained with seeds {', '.join(str(seed + s) for s in NEGATIVE_SEEDS)} "
        "and a random forest (20 trees), none of them derived from the protected model")
    population, ref_seconds = ensure_population(splits, dataset="digits", owner_arch=arch, quiet=quiet)
    roles = {role: len(population.entries(role, arch)) for role in ("selection", "calibration")}
    log(f"references: {len(population.members)} independent models of {len({m['kind'] for m in population.members})} "
        f"kinds in {population.root} ({'trained now in %.1f s' % ref_seconds if ref_seconds else 'cached'}): "
        f"every key is chosen against the {roles['selection']} selection models, its null bounded on the "
        f"{roles['calibration']} calibration models, and it must prove its own model")
    result["reference_seconds"] = ref_seconds
    rows = []
    for name in demo_protections():
        try:
            rows.append(_row(name, model, splits, negatives, population.root, out, seed, arch))
        except ModelproofError as exc:
            rows.append({"method": name, "error": str(exc)})
        log(f"  {name}: " + ("refused, its key cannot prove its own model (see the table)" if "error" in rows[-1]
                             else f"done in {rows[-1]['seconds']:.1f} s"))
    table = format_table(rows)
    log(table)
    result.update(table=rows, negatives=[n.identity for n in negatives], seconds=time.perf_counter() - start)
    log(f"demo finished in {result['seconds']:.1f} s")
    result["next_commands"] = next_commands(out, rows)
    for line in written_lines(out, arch, rows) + ["try next:"] + [f"  {c}" for c in result["next_commands"]]:
        log(line)
    return result


def written_lines(out: Path, arch: str, rows: list[dict]) -> list[str]:
    """Where the demo wrote its models and keys."""
    marked = [r["method"] for r in rows if r.get("kind") == "watermark"]
    printed = [r["method"] for r in rows if r.get("kind") == "fingerprint"]
    lines = [f"wrote under {out}/: {arch}.safetensors and {arch}.onnx (the unprotected model)"]
    if marked:
        lines.append(f"  METHOD/model.safetensors + METHOD/key.mpkey for the watermarks ({', '.join(marked)})")
    if printed:
        lines.append(f"  METHOD/key.mpkey for the fingerprints of the unprotected model ({', '.join(printed)})")
    return lines


def next_commands(out: Path, rows: list[dict]) -> list[str]:
    """Three commands to try on the demo's files: verify, attack and verify again, an evidence report."""
    method = next((r["method"] for r in rows if r.get("kind") == "watermark" and r.get("decision") == "owned"),
                  next((r["method"] for r in rows if r.get("kind") == "watermark"), "zhang-content"))
    key, model, attacked = out / method / "key.mpkey", out / method / "model.safetensors", out / "attacked.safetensors"
    return [f"modelproof verify --key {key} --suspect {model} --sequential",
            f"modelproof attack ftal --model {model} --out {attacked} && modelproof verify --key {key} --suspect {attacked}",
            f"modelproof verify --key {key} --suspect {model} --report {out / 'evidence.json'} && "
            f"modelproof check-report {out / 'evidence.json'}"]
