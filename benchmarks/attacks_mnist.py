"""Removal attacks on MNIST: each at its strongest plausible strength, with accuracy, time and queries.

Usage: python benchmarks/attacks_mnist.py [--mnist ../shared/data/mnist] [--fashion ../shared/data/fashion-mnist]
                                          [--arch lenet5] [--epochs 2] [--attacker-images 6000] [--threads 1]

The victim (LeNet-5 by default, or the Keras CNN) is trained for ``--epochs`` on the owner split
(42,000 images). Attacks see only a random subset of ``--attacker-images`` of the 18,000-image
attacker split (to fit ~10 minutes on a 2-core CPU); extraction queries the whole attacker split.
Pruning and SVD run with ``rate="auto"`` (the largest rate in the sweep whose accuracy loss on the
attacker's own holdout stays within 3 points); long fine-tuning runs 10 epochs instead of the
blind-watermark paper's 100. Test accuracy is on the 10,000 MNIST test images. "plaus." is the
relative rule (at most 3 points lost, IPGuard), ">=0.95" frontier stitching's absolute bound.
Filter pruning is also swept as IPGuard did, c = 1/16, 2/16, ... while the TEST accuracy loss
stays within 3 points (the owner's view; the attacker's auto search can only use its holdout), and
at that c the table reports parameters and CPU inference throughput (batch of 1,000, best of 5)
before and after. ``--threads 1`` avoids OpenMP oversubscription on a shared 2-core machine.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from modelproof.attacks import Plausibility, make_attack, run_attack
from modelproof.attacks.filters import FILTER_SWEEP, count_params
from modelproof.data.splits import load_dataset, load_splits
from modelproof.models.training import TrainConfig, train_new
from modelproof.models.devices import configure, model_device

REPO = Path(__file__).resolve().parents[1]


def throughput(model: torch.nn.Module, images: torch.Tensor, repeats: int = 5) -> float:
    """Best-of-``repeats`` images per second of ``model`` on one batch, eval mode, no gradients."""
    model.eval()
    best, images = float("inf"), images.to(model_device(model))
    with torch.no_grad():
        model(images[:10])
        for _ in range(repeats):
            t = time.perf_counter()
            model(images)
            if images.is_cuda:
                torch.cuda.synchronize()
            best = min(best, time.perf_counter() - t)
    return len(images) / best


def strength(details: dict, params: dict) -> str:
    """A short description of the strength an attack ran at."""
    if "rate" in details:
        found = "" if details.get("found_within_bound", True) else " (none within bound)"
        how = ", retrained" if params.get("retrain") else ", no retraining"
        return f"rate {details['rate']:.4g}{' auto' if details.get('auto') else ''}{how}{found}"
    if "adversaries" in details:
        return f"{details['adversaries']} FGSM eps {params['eps']}"
    if "query_images" in details:
        return f"{details['answers']}, {details['source']}"
    if "images" in details:
        return f"{details['images']} images x {params['epochs']} ep"
    return ", ".join(f"{k}={v}" for k, v in params.items() if k in ("epochs", "lr", "mode"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mnist", default=str(REPO.parent / "shared" / "data" / "mnist"))
    parser.add_argument("--fashion", default=str(REPO.parent / "shared" / "data" / "fashion-mnist"))
    parser.add_argument("--arch", default="lenet5", choices=("lenet5", "cnn"))
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--attacker-images", type=int, default=6000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu", help="cpu, cuda, mps or auto (cuda when available)")
    args = parser.parse_args()
    configure(args.device, args.threads)  # models are built and loaded on the device
    start = time.perf_counter()
    splits = load_splits("mnist", args.mnist, seed=args.seed)
    perm = torch.randperm(len(splits.attacker), generator=torch.Generator().manual_seed(args.seed))
    attacker = splits.attacker.subset(perm[:args.attacker_images], "mnist/attacker-subset")
    victim, rep = train_new(args.arch, splits.owner, TrainConfig(epochs=args.epochs, batch_size=64), seed=args.seed)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s); victim {args.arch} trained "
          f"{rep.epochs} epochs on {len(splits.owner)} owner images in {rep.seconds:.0f} s; attacker subset "
          f"{len(attacker)} of {len(splits.attacker)}; test {len(splits.test)}")
    fashion = None
    if Path(args.fashion).is_dir():
        fashion = load_dataset("fashion-mnist", args.fashion, split="train")
        fashion = fashion.subset(torch.arange(len(splits.attacker)), "fashion-mnist")
    runs: list[tuple[str, dict, object]] = [
        ("ftll", {"epochs": 3}, attacker), ("ftal", {"epochs": 3}, attacker),
        ("rtll", {"epochs": 3}, attacker), ("rtal", {"epochs": 3}, attacker),
        ("finetune-small", {"epochs": 10}, attacker),
        ("prune-weights", {"rate": "auto", "epochs": 1}, attacker),
        ("prune-weights", {"rate": "auto", "retrain": False}, attacker),
        ("prune-filters", {"rate": "auto", "epochs": 1}, attacker),
        ("svd", {"rate": "auto"}, attacker),
        ("quantize", {}, attacker),
        ("overwrite", {"n": 1000}, attacker),
        ("extract", {"epochs": 5}, splits.attacker),
        ("extract", {"epochs": 5, "answers": "probabilities"}, splits.attacker),
    ]
    if fashion is not None:
        runs.append(("extract", {"epochs": 5, "source": fashion}, splits.attacker))
    rows, absolute = [], Plausibility(max_drop=None, min_accuracy=0.95)
    pruned_filters = None
    for name, params, data in runs:
        result = run_attack(make_attack(name, **params), victim, data, splits.test, seed=args.seed)
        rows.append((name, strength(result.details, result.params), result.accuracy_before, result.accuracy_after,
                     result.change, result.plausible, absolute(result.accuracy_before, result.accuracy_after),
                     result.seconds, result.queries))
    # IPGuard's own sweep measures the loss on the test set (the owner's view): the largest c within it.
    for c in FILTER_SWEEP:
        result = run_attack(make_attack("prune-filters", rate=c, epochs=1), victim, attacker, splits.test,
                            seed=args.seed)
        if not result.plausible:
            break
        pruned_filters = result
    if pruned_filters is not None:
        r = pruned_filters
        rows.append(("prune-filters", f"rate {r.details['rate']:.4g} test sweep, retrained", r.accuracy_before,
                     r.accuracy_after, r.change, r.plausible, absolute(r.accuracy_before, r.accuracy_after),
                     r.seconds, r.queries))
    print(f"\n{'attack':<15} {'strength':<36} {'acc before':>10} {'acc after':>9} {'change':>8} {'plaus.':>6} "
          f"{'>=0.95':>6} {'seconds':>8} {'queries':>8}")
    for name, what, before, after, change, plaus, absolute_ok, sec, queries in rows:
        print(f"{name:<15} {what[:36]:<36} {before:10.4f} {after:9.4f} {change:+8.4f} {'yes' if plaus else 'no':>6} "
              f"{'yes' if absolute_ok else 'no':>6} {sec:8.1f} {queries:8d}")
    if pruned_filters is not None:
        batch = splits.test.images[:1000]
        d = pruned_filters.details
        before_ips, after_ips = throughput(victim, batch), throughput(pruned_filters.model, batch)
        print(f"\nfilter pruning at c = {d['rate']:.4g} (largest c whose test accuracy loss is within 3 points): "
              f"parameters {count_params(victim):,} -> {count_params(pruned_filters.model):,}; "
              f"widths {d['widths_before']} -> {d['widths_after']}; CPU inference {before_ips:,.0f} -> "
              f"{after_ips:,.0f} images/s (batch 1,000, {torch.get_num_threads()} thread(s))")
    print(f"\ntotal {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
