"""Every protection with its defaults, calibrated as ``protect`` does, against independent models.

For one owner model (the README's MLP on the 16x16 digits, or LeNet-5 on MNIST), every registered
protection is run with its default parameters; the key goes through ``safeguards.finalize_key``
exactly as ``modelproof protect`` does (the default reference population, calibration, the
self-check). Each key that is written is verified (fixed mode, alpha 0.01) against the protected
model and against held-out independent models trained by code outside the package
(``benchmarks/heldout.py``: 30 on the digits, 15 on MNIST, of ten kinds), never references. Prints one
row per method: outcome, null before -> after, owned, false claims, seconds; and the time the
reference population took.

Run: ``.venv/bin/python benchmarks/sound_verdicts.py`` (digits, a few minutes) or
``... --dataset mnist --data-dir ../shared/data/mnist`` (LeNet-5; models cached in ``--cache``).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from modelproof.data.splits import load_splits
from modelproof.util.errors import ModelproofError
from modelproof.models.modelfile import load_model, save_model, weights_digest
from modelproof.protections.base import PROTECTIONS, discover_protections, make_protection
from modelproof.references.population import epochs_for, train_references
from modelproof.references.finalize import finalize_key
from modelproof.suspects.local import TorchSuspect
from modelproof.models.training import TrainConfig, evaluate, train_new
from modelproof.verification.verifier import verify
from modelproof.models.devices import configure

from heldout import heldout_suspects

SETTINGS = {"digits": ("mlp", 16, TrainConfig(epochs=20, lr=0.003)),
            "mnist": ("lenet5", None, TrainConfig(epochs=2, lr=0.001))}



def cached(cache: Path, name: str, build):
    """A model from the cache folder, or built and saved there."""
    path = cache / f"{name}.safetensors"
    if path.is_file():
        return load_model(path)
    model = build()
    save_model(model, path)
    return model


def main() -> None:
    """Print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="digits", choices=sorted(SETTINGS))
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--cache", type=Path, default=Path("runs/sound-verdicts"))
    parser.add_argument("--methods", nargs="*", default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--heldout", type=int, default=None, help="held-out independent suspects (default 30 on "
                        "the digits, 15 on MNIST)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, mps or auto (cuda when available)")
    args = parser.parse_args()
    configure(args.device, 1)  # models are built and loaded on the device
    arch, size, config = SETTINGS[args.dataset]
    cache = args.cache / args.dataset
    cache.mkdir(parents=True, exist_ok=True)
    splits = load_splits(args.dataset, args.data_dir, size=size, seed=args.seed)
    owner = cached(cache, f"owner-{arch}", lambda: train_new(arch, splits.owner, config, seed=args.seed)[0])
    print(f"{args.dataset}: owner {arch}, test accuracy {evaluate(owner, splits.test):.4f}; 1 torch thread")
    start = time.perf_counter()
    refs, ref_seconds = train_references(splits.owner, owner_arch=arch, seed=args.seed)
    print(f"reference population: {', '.join(r.name for r in refs)}; trained in {ref_seconds:.1f} s")
    negs = heldout_suspects(splits, cache / "heldout", args.heldout or (30 if args.dataset == "digits" else 15))
    print(f"{len(negs)} held-out independent suspects (benchmarks/heldout.py; never references)\n")
    discover_protections()
    print("| method | outcome | null before -> after | protected (fixed / sequential) | false claims | seconds |")
    print("|---|---|---|---|---|---|")
    for name in args.methods or list(PROTECTIONS):
        t0 = time.perf_counter()
        protection = make_protection(name, secret=f"sound-verdicts-{args.seed}")  # reproducible keys
        try:
            result = protection.protect(owner, splits.owner, seed=args.seed, test=splits.test)
            final = finalize_key(result, protection, splits.owner, source_digest=weights_digest(owner),
                                 trained=refs, seed=args.seed)
        except ModelproofError as exc:
            print(f"| {name} | refused: {str(exc)[:160]} | | | | {time.perf_counter() - t0:.0f} |")
            continue
        key = final.key
        ours = TorchSuspect(result.model)
        fixed, seq = verify(key, ours).decision, verify(key, ours, mode="sequential").decision
        claims = sum(verify(key, n).decision == "owned" for n in negs)
        before = key.params["calibration"]["previous_null_match_prob"]
        print(f"| {name} | key of {len(key)} | {before:.3g} -> {key.null_match_prob:.3g} | {fixed} / {seq} | "
              f"{claims}/{len(negs)} | {time.perf_counter() - t0:.0f} |")
    print(f"\n{time.perf_counter() - start:.0f} s in all (references {ref_seconds:.0f} s)")


if __name__ == "__main__":
    main()
