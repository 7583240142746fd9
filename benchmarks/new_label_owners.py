"""New-label keys against other owners' new-label models that no part of the key ever saw.

A new-label key (Zhong et al.) asks for a class an independent C-class model does not have, so the
only models that can answer it are other owners' new-label models. Under key selection the key's null
is the upper order statistic (tail 0.001) of such models' answer rates over random patterns, measured
on foreign owners made from the selection references (``protections/watermarks/new_label.py``). This
benchmark checks that null from outside: each of ``--secrets`` keys (``protect_model`` with the default
population, as ``modelproof protect new-label`` does) is verified, fixed and sequential at alpha 0.01,
against the protected model and against held-out foreign owners: the held-out torch models of
``heldout.py`` (four kinds, trained by code outside the package, never selection or calibration
references), each marked with a new-label key of its own by one of two recipes:

- ``modelproof``: this package's recipe under selection (smooth 8x8 pattern, 3 decoys per key sample);
- ``paper``: Zhong et al.'s plain version (white-noise pattern, no decoys), which teaches a model that
  any noise means the new label.

It prints, per key, the null, the own model's sequential queries, and per recipe the foreign owners
claimed (fixed and sequential), their largest match rate and how many exceed the null.

Run (from ``benchmarks/``; a minute or two on the digits with the population cached):
``OMP_NUM_THREADS=1 python new_label_owners.py [--owner cnn] [--secrets 3] [--foreign 8]``;
``--dataset mnist --data-dir ../shared/data/mnist --owner lenet5`` for MNIST (about 20 minutes a key).

``--alternatives N`` asks instead what other key designs would give as a null (issue 22.4: could a null
decide in 10 sequential queries?): each held-out foreign owner answers ``key_size`` owner images carrying
each of N random patterns of our default kind, and the benchmark prints, per recipe, the distribution
(mean, 0.99 and 0.999 quantiles, largest) of the rate at which it answers the new label on

- ``one pattern``: a key of one pattern, as ours (the null is this distribution's upper tail);
- ``K patterns``: a key whose samples carry K = 4 or 8 patterns in turn (averages the pattern-to-pattern
  spread, not an owner's general readiness to answer the new label on noise);
- ``paired``: a key sample counts only when the new label answers it and a control (the same image with
  another random pattern) is answered otherwise, as a verifier asking controls beside the key would count.

and, for keys of one pattern verified against those owners with a null of ``--null`` (default 0.70, 0.72,
0.78: the digits MLP keys' nulls), how many of the (owner, pattern) pairs answer above the null and how
many a fixed test at alpha 0.009 (0.01 less the null's tail) would claim.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from modelproof.models.devices import configure
from modelproof.models.training import predict
from modelproof.protections.watermarks import patterns
from modelproof.protections.base import discover_protections, make_protection
from modelproof.references.build import ensure_population
from modelproof.references.protect import ReferenceOptions, protect_model
from modelproof.suspects.local import TorchSuspect
from modelproof.util.errors import ModelproofError
from modelproof.verification.stats import decision_threshold
from modelproof.verification.verifier import verify

from heldout import TORCH_KINDS, heldout_suspects
from sound_verdicts import count, load_owner, owner_parser

RECIPES = {"modelproof": {"alpha": 0.05, "decoys": 3}, "paper": {"alpha": 0.05, "decoys": 0, "cells": None},
           "smooth, no decoys": {"alpha": 0.05, "decoys": 0}}


def foreign_owners(splits, cache: Path, count: int, recipe: str) -> list[tuple[str, object, float]]:
    """(name, model, own key accuracy) of ``count`` held-out torch models each marked by ``recipe``."""
    torch_kinds = len(TORCH_KINDS)
    bases = [s for s in heldout_suspects(splits, cache, 2 * torch_kinds * ((count + torch_kinds - 1) // torch_kinds))
             if isinstance(s, TorchSuspect)][:count]
    out = []
    for i, base in enumerate(bases):
        marked = make_protection("new-label", secret=f"foreign owner {recipe} {i}", null_prob=1.0,
                                 **RECIPES[recipe]).protect(base.model, splits.owner, seed=i)
        out.append((base.identity.split()[-1], marked.model, marked.report["key_accuracy"]))
    return out


def probability(text: str) -> float:
    """A ``--null`` value: a number strictly between 0 and 1 (argparse reports anything else in one line)."""
    value = float(text)
    if not 0.0 < value < 1.0:
        raise ValueError(text)
    return value


def alternatives(owners: dict, images: torch.Tensor, count: int, seed: int, nulls: list[float]) -> None:
    """Print the new-label answer rates of each recipe's foreign owners under three key designs (module doc)."""
    defaults = make_protection("new-label")
    gen = torch.Generator().manual_seed(seed)
    shape = tuple(images.shape[1:])
    keys, controls = (torch.stack([patterns.noise_pattern(shape, gen, defaults.cells) for _ in range(count)])
                      for _ in range(2))

    def hits(model, chosen: torch.Tensor, label: int) -> torch.Tensor:  # (patterns, images): 1 where label answers
        out = []
        for chunk in chosen.split(max(1, 2048 // len(images))):
            probes = patterns.add_pattern(images.unsqueeze(0), chunk.unsqueeze(1), defaults.beta).flatten(0, 1)
            out.append((predict(model, probes) == label).view(len(chunk), len(images)))
        return torch.cat(out).double()

    print(f"new-label answer rates of held-out foreign owners on {len(images)} owner images, {count} random patterns")
    print("| recipe | design | mean | q 0.99 | q 0.999 | max |\n|---|---|---|---|---|---|")
    claims, means = [], []
    for recipe, models in owners.items():
        rates: dict[str, list[torch.Tensor]] = {"one pattern": [], "4 patterns": [], "8 patterns": [], "paired": []}
        for _, model, _ in models:
            label = int(getattr(model, "num_classes")) - 1
            on_key, on_control = hits(model, keys, label), hits(model, controls, label)
            rates["one pattern"].append(on_key.mean(dim=1))
            rates["paired"].append((on_key * (1 - on_control)).mean(dim=1))
            for k in (4, 8):  # image i carries pattern i mod k of each group of k patterns
                groups = torch.arange(count // k * k).view(-1, k)[:, torch.arange(len(images)) % k]
                rates[f"{k} patterns"].append(on_key[groups, torch.arange(len(images))].mean(dim=1))
        for design, values in rates.items():
            v = torch.cat(values)
            print(f"| {recipe} | {design} | {v.mean():.3f} | {torch.quantile(v, 0.99):.3f} | "
                  f"{torch.quantile(v, 0.999):.3f} | {v.max():.3f} |", flush=True)
        means.append(f"{recipe}: " + ", ".join(f"{float(r.mean()):.2f}" for r in rates["one pattern"]))
        one = torch.cat(rates["one pattern"]) * len(images)
        for p0 in nulls:
            need = decision_threshold(len(images), p0, 0.009)
            claims.append(f"| {recipe} | {p0:g} | {float((one > p0 * len(images)).double().mean()):.4f} | "
                          f"{float((one >= need).double().mean()):.4f} ({need}/{len(images)}) |")
    print(f"\nkeys of one pattern against these owners ({count} patterns each)\n| recipe | null | "
          "rate above the null | claimed, fixed test at alpha 0.009 (matches needed) |\n|---|---|---|---|\n"
          + "\n".join(claims))
    print("\neach owner's mean rate over the patterns (one pattern): how readily it answers the new label to noise\n"
          + "\n".join(means))


def main() -> None:
    """Print the table."""
    parser = owner_parser(__doc__.splitlines()[0])
    parser.add_argument("--secrets", type=count, default=3, help="our keys (one secret each)")
    parser.add_argument("--foreign", type=count, default=8, help="held-out foreign owners per recipe")
    parser.add_argument("--cells", type=count, default=None, help="our keys' pattern grid (default: the method's)")
    parser.add_argument("--alternatives", type=count, default=None, metavar="N",
                        help="print other key designs' foreign rates over N random patterns instead of verifying keys")
    parser.add_argument("--null", type=probability, nargs="*", default=[0.70, 0.72, 0.78],
                        help="with --alternatives: the nulls whose claim rates are printed")
    args = parser.parse_args()
    configure("cpu", 1)
    start = time.perf_counter()
    arch, splits, owner, cache = load_owner(args)
    pop, _ = ensure_population(splits, dataset=args.dataset, owner_arch=arch, quiet=True)
    discover_protections()
    owners = {recipe: foreign_owners(splits, cache / "heldout", args.foreign, recipe) for recipe in RECIPES}
    for recipe, models in owners.items():
        print(f"foreign owners ({recipe} recipe): " + ", ".join(f"{n} (own key {a:.2f})" for n, _, a in models))
    print(f"{args.dataset} {arch} owner; foreign owners made in {time.perf_counter() - start:.0f} s\n")
    if args.alternatives is not None:
        order = torch.randperm(len(splits.owner), generator=torch.Generator().manual_seed(args.seed))
        alternatives(owners, splits.owner.images[order[:make_protection("new-label").key_size]], args.alternatives,
                     args.seed, args.null)
        print(f"\n{time.perf_counter() - start:.0f} s in all")
        return
    print("| secret | null | own: sequential | " + " | ".join(
        f"{r}: claimed fixed / sequential, max rate, above null" for r in RECIPES) + " | s |")
    print("|---|---|---|" + "---|" * len(RECIPES) + "---|")
    refusals = []
    for i in range(args.secrets):
        t0 = time.perf_counter()
        protection = make_protection("new-label", **({} if args.cells is None else {"cells": args.cells}))
        protection.set_secret(f"new-label-owners/{i}")
        try:
            outcome = protect_model(protection, owner, splits, seed=args.seed, options=ReferenceOptions(
                references_dir=pop.root), owner_arch=arch, dataset=args.dataset)
        except ModelproofError as exc:
            print(f"| {i} | refused: {str(exc)[:160]} |" + " |" * (len(RECIPES) + 2), flush=True)
            refusals.append(f"{i}: {exc}")
            continue
        key, model = outcome.final.key, outcome.result.model
        own = verify(key, TorchSuspect(model), mode="sequential")
        cells = []
        for models in owners.values():
            suspects = [TorchSuspect(m, input_shape=splits.input_shape, num_classes=key.num_classes)
                        for _, m, _ in models]
            fixed = [verify(key, s) for s in suspects]
            seq = [verify(key, s, mode="sequential") for s in suspects]
            rates = [v.matches / v.queries for v in fixed]
            cells.append(f"{sum(v.decision == 'owned' for v in fixed)} / {sum(v.decision == 'owned' for v in seq)} of "
                         f"{len(models)}, {max(rates):.2f}, {sum(r > key.null_match_prob for r in rates)}")
        print(f"| {i} | {key.null_match_prob:.3f} | {own.decision} in {own.queries} ({own.matches} matched) | "
              + " | ".join(cells) + f" | {time.perf_counter() - t0:.0f} |", flush=True)
    for line in refusals:  # in full: the null's source names the foreign owners' answers to the key
        print(f"\nrefused, in full: {line}")
    print(f"\n{time.perf_counter() - start:.0f} s in all")


if __name__ == "__main__":
    main()
