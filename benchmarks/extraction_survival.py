"""Does a key survive label-only extraction? Thief match rate against independent match rate.

For one owner model (the README's MLP on the 16x16 digits, or LeNet-5 on MNIST), each named method
is protected with its defaults (``--param k=v`` overrides) and its key finished as ``protect`` does
(calibration on the default reference population, the self-check). The key is then verified (fixed
mode, alpha 0.01) against: the protected model; thieves (label-only distilled students of other
architectures trained on the attacker's split; FTAL; 50% weight pruning with retraining); and the
held-out independent suspects of ``benchmarks/heldout.py`` (trained by code outside the package). Prints,
per suspect group, the mean match rate and how many were judged owned. A key that ``protect`` would
refuse (self-check failed) is said to be refused and measured anyway: its calibrated null is then
too high for any "owned", which is what the rows show.

Run from the repository root: ``.venv/bin/python benchmarks/extraction_survival.py --methods margin``
(digits, minutes on a free core) or ``--dataset mnist --data-dir ../shared/data/mnist``.

``--dawn`` measures DAWN instead (``benchmarks/dawn_survival.py``): the owner's model, carrying a weight
watermark (``--weight-method``), answers label-only thieves of ``--queries`` queries through the DAWN rule
(``--dawn-rate``); each thief's key comes from its log; FTAL and pruning face the weight key; e.g.
``--dataset mnist --data-dir ../shared/data/mnist --dawn [--owner cnn]``.
"""

from __future__ import annotations

import argparse
import ast
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from modelproof.attacks.registry import make_attack  # noqa: E402
from modelproof.attacks.result import run_attack  # noqa: E402
from modelproof.data.splits import load_splits  # noqa: E402
from modelproof.models.modelfile import load_model, save_model, weights_digest  # noqa: E402
from modelproof.models.training import TrainConfig, evaluate, train_new  # noqa: E402
from modelproof.protections.base import make_protection  # noqa: E402
from modelproof.references.finalize import finalize_key  # noqa: E402
from modelproof.references.population import train_references  # noqa: E402
from modelproof.suspects.local import TorchSuspect  # noqa: E402
from modelproof.util.errors import ModelproofError  # noqa: E402
from modelproof.verification.verifier import verify  # noqa: E402

from heldout import heldout_suspects  # noqa: E402

SETTINGS = {"digits": ("mlp", 16, TrainConfig(epochs=20, lr=0.003), ("lenet5", "cnn")),
            "mnist": ("lenet5", None, TrainConfig(epochs=2, lr=0.001), ("cnn", "mlp"))}
OTHER_STUDENTS = {"cnn": ("lenet5", "mlp"), "mlp": ("lenet5", "cnn"), "lenet5": ("cnn", "mlp")}


def cached(path: Path, build):
    """A model from ``path``, or built and saved there."""
    if path.is_file():
        return load_model(path)
    model = build()
    save_model(model, path)
    return model


def parse_value(text: str):
    """A Python literal, else the string itself."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def row(key, suspects) -> tuple[float, int]:
    """(mean match rate, number judged owned) of ``suspects`` on ``key``."""
    rates, owned = [], 0
    for s in suspects:
        v = verify(key, s)
        rates.append(v.matches / max(v.queries, 1))
        owned += v.decision == "owned"
    return sum(rates) / max(len(rates), 1), owned


def main() -> None:
    """Print one block per method."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="digits", choices=sorted(SETTINGS))
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--cache", type=Path, default=Path("runs/extraction-survival"))
    parser.add_argument("--methods", nargs="+", default=["margin", "conferrable"])
    parser.add_argument("--param", action="append", default=[], help="KEY=VALUE for every method")
    parser.add_argument("--heldout", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--attacks", nargs="*", default=["extract", "ftal", "prune-weights"])
    parser.add_argument("--owner", default=None, help="owner architecture (default: the dataset's)")
    parser.add_argument("--dawn", action="store_true", help="measure DAWN + a weight watermark (dawn_survival.py)")
    parser.add_argument("--dawn-rate", type=float, nargs="+", default=[0.005])
    parser.add_argument("--queries", type=int, nargs="+", default=[1000, 5000, 20000], help="DAWN thieves' budgets")
    parser.add_argument("--students", nargs="+", default=None, help="DAWN thieves' architectures")
    parser.add_argument("--student-epochs", type=int, default=30)
    parser.add_argument("--weight-method", default="zhang-content")
    parser.add_argument("--skip-weight-attacks", action="store_true", help="DAWN: no FTAL / pruning rows")
    args = parser.parse_args()
    torch.set_num_threads(1)
    arch, size, config, students = SETTINGS[args.dataset]
    if args.owner:
        arch, students = args.owner, OTHER_STUDENTS[args.owner]
    cache = args.cache / args.dataset
    cache.mkdir(parents=True, exist_ok=True)
    splits = load_splits(args.dataset, args.data_dir, size=size, seed=args.seed)
    owner = cached(cache / f"owner-{arch}.safetensors",
                   lambda: train_new(arch, splits.owner, config, seed=args.seed)[0])
    print(f"{args.dataset}: owner {arch}, test accuracy {evaluate(owner, splits.test):.4f}; 1 torch thread")
    refs, ref_seconds = train_references(splits.owner, owner_arch=arch, seed=args.seed)
    negs = heldout_suspects(splits, cache / "heldout", args.heldout or (30 if args.dataset == "digits" else 15))
    params = dict(p.split("=", 1) for p in args.param)
    params = {k: parse_value(v) for k, v in params.items()}
    print(f"{len(refs)} calibration references ({ref_seconds:.0f} s); {len(negs)} held-out suspects; params {params}")
    if args.dawn:
        from dawn_survival import dawn_block

        dawn_block(args, splits, owner, arch, tuple(args.students or students), refs, negs)
        return
    for name in args.methods:
        t0 = time.perf_counter()
        protection = make_protection(name, secret=f"extraction-survival-{args.seed}", **params)
        try:
            result = protection.protect(owner, splits.owner, seed=args.seed, test=splits.test)
            final = finalize_key(result, protection, splits.owner, source_digest=weights_digest(owner),
                                 trained=refs, seed=args.seed, allow_weak=True)
        except ModelproofError as exc:
            print(f"{name}: refused after {time.perf_counter() - t0:.0f} s: {exc}")
            continue
        key, model = final.key, result.model
        if final.summary["self_check"] != "passed":  # measured anyway: a weak key's null never gives "owned"
            print(f"{name}: REFUSED by protect (self-check: {final.summary['self_check']}); measured anyway")
        cal = key.params.get("calibration", {})
        print("calibration matches:", ", ".join(f"{r['name']} {r['matches']}/{r['queries']}"
                                                for r in cal.get("references", [])))
        rep = {k: v for k, v in result.report.items() if k != "history"}
        print(f"\n{name}: key of {len(key)}, null {key.null_match_prob:.3g}, protect {time.perf_counter() - t0:.0f} s, "
              f"test accuracy {evaluate(model, splits.test):.4f}; report {rep}")
        print("| suspect | test acc | match rate | owned |")
        print("|---|---|---|---|")
        rate, owned = row(key, [TorchSuspect(model)])
        print(f"| protected model | {evaluate(model, splits.test):.3f} | {rate:.2f} | {owned}/1 |")
        attacks = []
        for attack in args.attacks:
            if attack == "extract":
                attacks += [(f"extract labels -> {s}", make_attack("extract", student=s, answers="labels"))
                            for s in students]
            elif attack == "prune-weights":
                attacks.append(("prune-weights 0.5 + retrain", make_attack("prune-weights", rate=0.5)))
            else:
                attacks.append((attack, make_attack(attack)))
        for label, attack in attacks:
            out = run_attack(attack, model, splits, seed=args.seed)
            rate, owned = row(key, [TorchSuspect(out.model)])
            print(f"| {label} ({out.queries or 0} queries) | {out.accuracy_after:.3f} | {rate:.2f} | {owned}/1 |")
        rate, owned = row(key, negs)
        print(f"| held-out independent ({len(negs)}, 10 kinds) | - | {rate:.2f} (mean) | {owned}/{len(negs)} |")
        print(f"({time.perf_counter() - t0:.0f} s for {name})")


if __name__ == "__main__":
    main()
