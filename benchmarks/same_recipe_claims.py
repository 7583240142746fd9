"""How often a key claims an independent model trained exactly as the owner's: same architecture, data and recipe.

The likeliest innocent suspect in a dispute is a model of the owner's own public architecture, trained on
the same public data with the same recipe and another seed. ``modelproof demo`` verifies two such models
(seeds 1 and 2) and a random forest against every key; this benchmark does the same over many secrets:
the demo's owner (the README's MLP on the 16x16 digits, seed 0), each of ``--methods`` protected with its
demo parameters under ``--secrets`` secrets (as ``protect`` runs it: chosen against the default
population's selection references, calibrated on its calibration references, self-checked), and each key
verified (fixed, alpha 0.01) against ``--negatives`` MLPs of the demo recipe with seeds 1..N and a random
forest. It prints per method the keys written, the nulls, the largest match rate of any negative, and the
keys that claimed at least one negative, with the negatives they claimed.

Run (from ``benchmarks/``; about 5 s a key with the population cached, 40 s more to build it once):
``OMP_NUM_THREADS=1 python same_recipe_claims.py [--methods ipguard] [--secrets 40] [--negatives 10]``.
"""

from __future__ import annotations

import argparse
import time

from modelproof.data.splits import load_splits
from modelproof.experiments.demo import DEMO_ARCH, DEMO_CONFIG, DEMO_SIZE
from modelproof.models.devices import configure
from modelproof.models.training import train_new
from modelproof.protections.base import PROTECTIONS, discover_protections, make_protection
from modelproof.references.build import ensure_population
from modelproof.references.protect import ReferenceOptions, protect_model
from modelproof.suspects.local import TorchSuspect, train_random_forest
from modelproof.util.errors import ModelproofError
from modelproof.util.progress import progress_bar
from modelproof.verification.verifier import verify

from sound_verdicts import count


def main() -> None:
    """Print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="*", default=["ipguard"])
    parser.add_argument("--secrets", type=count, default=40)
    parser.add_argument("--negatives", type=count, default=10, help="same-recipe MLPs (seeds 1..N)")
    args = parser.parse_args()
    configure("cpu", 1)
    discover_protections()
    unknown = [m for m in args.methods if m not in PROTECTIONS]
    if unknown:
        raise SystemExit(f"unknown method(s) {', '.join(unknown)}; registered: {', '.join(PROTECTIONS)}")
    start = time.perf_counter()
    splits = load_splits("digits", size=DEMO_SIZE, seed=0)
    owner = train_new(DEMO_ARCH, splits.owner, DEMO_CONFIG, seed=0, quiet=True)[0]
    negatives = [(f"{DEMO_ARCH} seed {s}", TorchSuspect(train_new(DEMO_ARCH, splits.owner, DEMO_CONFIG, seed=s,
                                                                        quiet=True)[0]))
                 for s in range(1, args.negatives + 1)]
    negatives.append(("random forest", train_random_forest(splits.owner, seed=0)))
    pop, _ = ensure_population(splits, dataset="digits", owner_arch=DEMO_ARCH, quiet=True)
    print(f"owner and {len(negatives)} negatives ready in {time.perf_counter() - start:.0f} s\n")
    print("| method | keys written | null min / median / max | largest negative match rate | keys claiming "
          "(claimed negatives: match rate, null) |\n|---|---|---|---|---|")
    for method in args.methods:
        nulls, rates, claiming = [], [], []
        with progress_bar(args.secrets, f"{method}: keys over secrets") as advance:
            for i in range(args.secrets):
                advance(1)
                protection = make_protection(method, **{**PROTECTIONS[method].demo_params,
                                                        "secret": f"same-recipe/{i}"})
                try:
                    key = protect_model(protection, owner, splits, seed=0, options=ReferenceOptions(
                        references_dir=pop.root), owner_arch=DEMO_ARCH, dataset="digits").final.key
                except ModelproofError:  # refused: counted as a key not written
                    continue
                verdicts = [(name, verify(key, suspect)) for name, suspect in negatives]
                nulls.append(key.null_match_prob)
                rates.append(max(v.matches / v.queries for _, v in verdicts))
                claimed = [f"{name}: {v.matches}/{v.queries}" for name, v in verdicts if v.decision == "owned"]
                if claimed:
                    claiming.append(f"secret {i} ({', '.join(claimed)}; null {key.null_match_prob:.3f})")
        nulls.sort()
        shown = f"{nulls[0]:.3f} / {nulls[len(nulls) // 2]:.3f} / {nulls[-1]:.3f}" if nulls else "-"
        print(f"| {method} | {len(nulls)} of {args.secrets} | {shown} | {max(rates, default=0):.2f} | "
              f"{len(claiming)}{': ' + '; '.join(claiming) if claiming else ''} |", flush=True)
    print(f"\n{time.perf_counter() - start:.0f} s in all")


if __name__ == "__main__":
    main()
