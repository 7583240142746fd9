"""Every protection with its defaults, chosen and calibrated as ``protect`` does, against held-out models.

For one owner model (``--owner``: the README's MLP or a CNN on the 16x16 digits; LeNet-5 or the Keras
CNN on MNIST), every registered protection is run with its default parameters through
``references.protect.protect_model``, exactly as ``modelproof protect`` runs it: the key is chosen
against the selection references of the default reference population (cached; built on first use)
and calibrated on its disjoint calibration references, then self-checked. Each key that is written
is verified (alpha 0.01) against:

- the protected model (fixed and sequential), and its copies after FTAL, after 50% magnitude pruning
  with retraining and after filter pruning at a fixed rate 1/4 with retraining (their test accuracy
  loss is printed: the acceptance asks for at most 3 points);
- held-out independent models (``--held-out``, default 30 on the digits and 15 on MNIST) of ten
  kinds trained by code outside the package (``benchmarks/heldout.py``: MLP, CNNs with and without
  BatchNorm, a residual net, random forest, extra-trees, logistic regression, RBF-SVM, kNN,
  scikit-learn's MLP; on the owner's and the attacker's splits), never used for selection or
  calibration.

Prints one row per method (null, p-values, attacked copies, false claims with the smallest held-out
p-value, seconds) and the time the population and the selection took.

``--distill`` adds a column: a label-only distilled student (``extract``, the protected model's top-1
labels on the attacker's split, a fresh student of another architecture: the MLP owner's student is
the CNN and the other way round; LeNet-5's is the CNN) verified with the key.
``--secrets N`` measures instead how often ``protect`` refuses the same owner model: each method is
protected with N different secrets (no attacks, no held-out models) and the table gives keys written,
refusals, the nulls of the written keys and the refusal reasons.

Run: ``.venv/bin/python benchmarks/sound_verdicts.py [--owner cnn]`` (digits) or
``... --dataset mnist --data-dir ../shared/data/mnist [--owner cnn]``; models cached in ``--cache``. One torch
thread unless ``--threads N`` (the reproducible choice, and the one the docs' figures state; two threads
shorten the hours-long MNIST Keras CNN rows on an idle 2-core machine). The blind watermark's training keeps a
checkpoint in ``--cache``/DATASET/resume/ after each epoch, the IGSM and CW-L2 fingerprints each chunk of their
selection search that took a minute or more: the same command run again after a stop goes on from it.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path


from modelproof.attacks import make_attack, run_attack
from modelproof.data.splits import load_splits
from modelproof.models.devices import configure
from modelproof.models.modelfile import load_model, save_model, weights_digest
from modelproof.models.training import TrainConfig, evaluate, train_new
from modelproof.protections.base import PROTECTIONS, discover_protections, make_protection
from modelproof.protections.checkpoint import Resume
from modelproof.references.build import ensure_population
from modelproof.references.protect import ReferenceOptions, protect_model
from modelproof.suspects.local import TorchSuspect
from modelproof.util.errors import ModelproofError
from modelproof.verification.stats import p_value_text
from modelproof.verification.verifier import verify

from heldout import heldout_suspects

OWNERS = {("digits", "mlp"): (16, TrainConfig(epochs=20, lr=0.003)), ("digits", "cnn"): (16, TrainConfig(epochs=20)),
          ("mnist", "lenet5"): (None, TrainConfig(epochs=2)), ("mnist", "cnn"): (None, TrainConfig(epochs=2))}
HELD_OUT = {"digits": 30, "mnist": 15}
STUDENTS = {"mlp": "cnn", "cnn": "mlp", "lenet5": "cnn"}
ATTACKS = (("FTAL", "ftal", {"epochs": 5}), ("WP 0.5", "prune-weights", {"rate": 0.5, "retrain": True, "epochs": 3}),
           ("FP 1/4", "prune-filters", {"rate": 0.25, "retrain": True, "epochs": 3}))


def cached(cache: Path, name: str, build):
    """A model from the cache folder, or built and saved there."""
    path = cache / f"{name}.safetensors"
    if path.is_file():
        return load_model(path)
    model = build()
    save_model(model, path)
    return model


def attacked_copies(model, splits, seed: int, cache: Path | None = None) -> list[tuple[str, object, float]]:
    """(label, attacked model or None, test accuracy loss) for each of ``ATTACKS``; with ``cache`` (a folder
    for the unchanged owner model, which every fingerprint shares) each copy is saved there and reused by
    a later run (the file name holds the owner's weight digest, the attack and the seed)."""
    out = []
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
    for label, name, params in ATTACKS:
        stem = None if cache is None else cache / f"{weights_digest(model)[:16]}-{name}-{seed}"
        if stem is not None and stem.with_suffix(".safetensors").is_file():
            drop = json.loads(stem.with_suffix(".json").read_text())["drop"]
            out.append((label, load_model(stem.with_suffix(".safetensors")), drop))
            continue
        try:
            result = run_attack(make_attack(name, **params), model, splits, seed=seed)
            out.append((label, result.model, result.accuracy_before - result.accuracy_after))
        except ModelproofError as exc:
            out.append((label, None, float("nan")))
            print(f"  ({label} not applicable: {str(exc)[:80]})")
            continue
        if stem is not None:
            save_model(result.model, stem.with_suffix(".safetensors"))
            stem.with_suffix(".json").write_text(json.dumps({"drop": out[-1][2], "params": params}))
    return out


def distilled(model, splits, arch: str, seed: int) -> tuple[object, float]:
    """A label-only distilled student of ``model`` (another architecture) and its test accuracy."""
    result = run_attack(make_attack("extract", student=STUDENTS[arch], answers="labels"), model, splits, seed=seed)
    return result.model, result.accuracy_after


def secrets_table(names, owner, splits, options, arch: str, dataset: str, count: int, seed: int) -> None:
    """How often ``protect`` writes a key for the same owner model over ``count`` secrets, per method."""
    print("| method | keys written | refused | null min / median / max | refusal reasons | seconds |")
    print("|---|---|---|---|---|---|")
    for name in names:
        t0, nulls, reasons = time.perf_counter(), [], {}
        for i in range(count):
            protection = make_protection(name)
            protection.set_secret(f"sound-verdicts/{name}/secret-{i}")
            start = time.perf_counter()
            try:
                outcome = protect_model(protection, owner, splits, seed=seed, options=options, owner_arch=arch,
                                        dataset=dataset)
                nulls.append(outcome.final.key.null_match_prob)
                said = f"written, null {nulls[-1]:.3g}"
            except ModelproofError as exc:
                reason = str(exc).removeprefix(f"{name}: ").split(" (")[0].split(":")[0][:70]
                reasons[reason] = reasons.get(reason, 0) + 1
                said = f"refused: {reason}"
            # one line per secret on stderr, so that a run stopped part-way still says what it measured
            print(f"{name} secret {i + 1}/{count}: {said} ({time.perf_counter() - start:.0f} s)", file=sys.stderr,
                  flush=True)
        nulls.sort()
        spread = (f"{nulls[0]:.3g} / {nulls[len(nulls) // 2]:.3g} / {nulls[-1]:.3g}" if nulls else "-")
        why = "; ".join(f"{n}x {r}" for r, n in reasons.items()) or "-"
        print(f"| {name} | {len(nulls)}/{count} | {count - len(nulls)}/{count} | {spread} | {why} | "
              f"{time.perf_counter() - t0:.0f} |", flush=True)


def selection_line(name: str, chosen: dict, report: dict) -> str:
    """What a key's selection record says of its search: candidates tried and kept, learnt, draws, time."""
    search = [f"{label} {chosen[field]}" for label, field in (("draws", "rounds"), ("oversample", "oversample"),
                                                             ("budget", "budget")) if field in chosen]
    learnt = f", {chosen['learnt']} learnt by the protected model" if "learnt" in chosen else ""
    seconds = report.get("selection_seconds")
    return (f"{name}: kept {chosen['kept']} of {chosen['tried']:,} candidates{learnt}"
            + (f" ({', '.join(search)})" if search else "") + (f", {float(seconds):.0f} s" if seconds else ""))


def count(text: str) -> int:
    """An argparse type: an integer of at least 1, or one line naming the bad value."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"needs an integer of at least 1, got {text!r}")
    return value


def owner_parser(description: str) -> argparse.ArgumentParser:
    """The options every owner benchmark shares: dataset, owner architecture, data folder, cache, seed."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--dataset", default="digits", choices=("digits", "mnist"))
    parser.add_argument("--owner", default=None, help="owner architecture (digits: mlp or cnn; mnist: lenet5 or cnn)")
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--cache", type=Path, default=Path("runs/sound-verdicts"))
    parser.add_argument("--seed", type=int, default=0)
    return parser


def load_owner(args: argparse.Namespace) -> tuple[str, object, object, Path]:
    """(owner architecture, the dataset's splits, the owner model (cached), the dataset's cache folder)."""
    arch = args.owner or ("mlp" if args.dataset == "digits" else "lenet5")
    if (args.dataset, arch) not in OWNERS:
        raise SystemExit(f"--owner must be one of {', '.join(a for d, a in OWNERS if d == args.dataset)} on "
                         f"{args.dataset}, got {arch!r}")
    size, config = OWNERS[(args.dataset, arch)]
    cache = args.cache / args.dataset
    cache.mkdir(parents=True, exist_ok=True)
    splits = load_splits(args.dataset, args.data_dir, size=size, seed=args.seed)
    owner = cached(cache, f"owner-{arch}", lambda: train_new(arch, splits.owner, config, seed=args.seed)[0])
    return arch, splits, owner, cache


def main() -> None:
    """Print the table."""
    parser = owner_parser(__doc__.splitlines()[0])
    parser.add_argument("--references-dir", type=Path, default=None)
    parser.add_argument("--held-out", type=int, default=None)
    parser.add_argument("--methods", nargs="*", default=None)
    parser.add_argument("--no-attacks", action="store_true")
    parser.add_argument("--distill", action="store_true", help="add a label-only distilled student column")
    parser.add_argument("--secrets", type=int, default=0, help="refusal rate over N secrets instead of the table")
    parser.add_argument("--oversample", type=int, default=None, help="candidates per key input (default: each method's)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, mps or auto (cuda when available)")
    parser.add_argument("--threads", type=count, default=1,
                        help="torch threads (default 1, the reproducible choice; more for the slow MNIST rows)")
    args = parser.parse_args()
    configure(args.device, args.threads)  # models are built and loaded on the device
    arch, splits, owner, cache = load_owner(args)
    print(f"{args.dataset}: owner {arch}, test accuracy {evaluate(owner, splits.test):.4f}; "
          f"{args.threads} torch thread{'s' if args.threads > 1 else ''}")
    start = time.perf_counter()
    pop, ref_seconds = ensure_population(splits, dataset=args.dataset, root=args.references_dir, owner_arch=arch,
                                         quiet=True)
    print(f"reference population {pop.root}: {len(pop.members)} models, trained now in {ref_seconds:.0f} s")
    options = ReferenceOptions(references_dir=pop.root, oversample=args.oversample)
    discover_protections()
    if args.secrets:
        secrets_table(args.methods or list(PROTECTIONS), owner, splits, options, arch, args.dataset, args.secrets,
                      args.seed)
        print(f"\n{time.perf_counter() - start:.0f} s in all (references trained now: {ref_seconds:.0f} s)")
        return
    negs = heldout_suspects(splits, cache / "heldout", args.held_out or HELD_OUT[args.dataset])
    kinds = sorted({n.identity.split()[1].rsplit("-", 2)[0] for n in negs})
    print(f"held-out independent models (benchmarks/heldout.py): {len(negs)} of {len(kinds)} kinds ({', '.join(kinds)})\n")
    labels = [a[0] for a in ATTACKS] + ([f"distilled (labels -> {STUDENTS[arch]})"] if args.distill else [])
    print("| method | outcome | null | p own (fixed) | sequential | " + " | ".join(labels)
          + " | false claims (min p) | select+protect s |", flush=True)
    print("|---|---|---|---|---|" + "---|" * len(labels) + "---|---|")
    owner_attacks, owner_student, refusals, selections = None, None, [], []
    for name in args.methods or list(PROTECTIONS):
        t0 = time.perf_counter()
        protection = make_protection(name)
        protection.set_secret(f"sound-verdicts/{name}")
        resume = Resume(cache / "resume" / f"{arch}-{name}")  # blind's training and IGSM's search go on after a stop
        resumed = resume.folder.exists()
        protection.resume_in(resume)
        try:
            outcome = protect_model(protection, owner, splits, seed=args.seed, options=options, owner_arch=arch,
                                    dataset=args.dataset)
            shutil.rmtree(resume.folder, ignore_errors=True)
            if resumed:
                print(f"({name}: went on from a checkpoint of an interrupted run; its times below count this "
                      f"run only)" if "embed_seconds" not in outcome.result.report else
                      f"({name}: went on from a checkpoint of an interrupted run; training took "
                      f"{outcome.result.report['embed_seconds']:.0f} s in all)", flush=True)
        except ModelproofError as exc:
            print(f"| {name} | refused: {str(exc)[:150]} | | | | " + "| " * len(labels) + f"| {time.perf_counter() - t0:.0f} |",
                  flush=True)
            refusals.append(str(exc) if str(exc).startswith(f"{name}: ") else f"{name}: {exc}")
            continue
        seconds = outcome.final.summary.get("protect_seconds", 0.0)
        key, model = outcome.final.key, outcome.result.model
        fixed = verify(key, TorchSuspect(model))
        seq = verify(key, TorchSuspect(model), mode="sequential")
        cells = []
        if not args.no_attacks:
            copies = (owner_attacks if protection.kind == "fingerprint" and owner_attacks is not None
                      else attacked_copies(model, splits, args.seed,
                                           cache / "attacked" if protection.kind == "fingerprint" else None))
            if protection.kind == "fingerprint":
                owner_attacks = copies
            for label, copy, drop in copies:
                v = None if copy is None else verify(key, TorchSuspect(copy))
                cells.append("n/a" if v is None else f"{v.decision} {v.matches}/{v.queries} ({-100 * drop:+.1f} pt)")
        if args.distill:
            if protection.kind == "fingerprint" and owner_student is not None:
                student = owner_student
            else:
                student = distilled(model, splits, arch, args.seed)
                owner_student = student if protection.kind == "fingerprint" else owner_student
            v = verify(key, TorchSuspect(student[0]))
            cells.append(f"{v.decision} ({v.matches}/{v.queries}; acc {student[1]:.3f})")
        held = [verify(key, n) for n in negs]
        claims = sum(v.decision == "owned" for v in held)
        min_p = min(v.p_value for v in held)
        own_p = p_value_text(fixed.p_value, fixed.matches, fixed.queries, fixed.null_match_prob)
        print(f"| {name} | key of {len(key)} | {key.null_match_prob:.3g} | {fixed.decision} p {own_p} | "
              f"{seq.decision} in {seq.queries} | " + " | ".join(cells or ["-"] * len(labels))
              + f" | {claims}/{len(negs)} ({min_p:.2g}) | {seconds:.0f} |", flush=True)
        chosen = key.params.get("selection")
        if isinstance(chosen, dict) and "tried" in chosen:  # the yield the search measured
            selections.append(selection_line(name, chosen, getattr(outcome.result, "report", {})))
    for line in selections:
        print(f"\nselection, {line}")
    for line in refusals:  # the whole reason (the table cuts it): reference match counts, selection yield
        print(f"\nrefused, in full: {line}")
    print(f"\n{time.perf_counter() - start:.0f} s in all (references trained now: {ref_seconds:.0f} s)")


if __name__ == "__main__":
    main()
