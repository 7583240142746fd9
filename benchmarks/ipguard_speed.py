"""IPGuard speed (Table 8): 100 fingerprint points for ResNet-20 on 32x32x3 inputs, on this CPU.

Usage: python benchmarks/ipguard_speed.py [--cifar ../shared/data/cifar10] [--train-images 5000] [--epochs 1]
                                          [--k 10] [--init TL] [--subset 10] [--threads 1]

The target is ResNet-20 trained briefly on a CIFAR-10 subset (``--train-images 0``: random init).
In the same run it times, with the same thread count:

- IPGuard batched: all 100 points in one batch, each stopping on its own (measured in full);
- IPGuard per point: the same starts and labels optimised one at a time. The loop over 100 points
  would take long on a shared CPU, so ``--subset`` points are timed and the total is extrapolated
  two ways: by point count, and by time per Adam step times the steps all 100 points need (the
  batched run knows each point's steps; per-point runs take the same number);
- Random and FGSM (measured), and CW-L2 with its defaults (9 binary-search steps of up to 1,000
  Adam steps): seconds per batched CW step at 100 points are measured over ``--cw-steps`` steps
  and multiplied by the 9,000-step budget (an upper bound: early abort can stop sooner), and by
  90,000 for the authors' default of 10,000 steps.

The paper's figures (CIFAR-10, GPU): IPGuard 37.8 s, CW-L2 20,006.3 s, FGSM 4.9 s, Random << 1 s.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from modelproof.data.splits import Dataset
from modelproof.protections.fingerprints.baselines import _cw_margin, targeted_fgsm
from modelproof.protections.fingerprints.ipguard import (
    boundary_search, frozen, initial_points, learning_rate, per_point_search,
)
from modelproof.models import build_model
from modelproof.models.training import TrainConfig, evaluate, fit
from modelproof.models.devices import configure, model_device

PAPER = {"IPGuard": 37.8, "CW-L2": 20006.3, "FGSM": 4.9, "Random": 0.0}


def cifar(root: str, n: int, test: int = 1000) -> tuple[Dataset, Dataset]:
    """The first ``n`` training images and ``test`` test images of CIFAR-10 (npz files in ``root``)."""
    def load(name: str, count: int) -> Dataset:
        raw = np.load(f"{root}/{name}")
        x = torch.from_numpy(raw["x"][:count]).permute(0, 3, 1, 2).float() / 255.0
        return Dataset(x.contiguous(), torch.from_numpy(raw["y"][:count].astype(np.int64)),
                       tuple(str(i) for i in range(10)), "cifar10")
    return load("cifar10-train.npz", max(n, 200)), load("cifar10-test-first1000.npz", test)


def cw_step_seconds(model: torch.nn.Module, x0: torch.Tensor, j: torch.Tensor, k: float, lr: float,
                    steps: int) -> float:
    """Seconds per batched CW-L2 Adam step (the body of ``baselines.cw_l2``) at this batch size."""
    w0 = torch.atanh((x0 * 2 - 1) * 0.999999)
    modifier = torch.zeros_like(w0, requires_grad=True)
    opt = torch.optim.Adam([modifier], lr=lr)
    const = torch.full((len(x0),), 1e-3, device=x0.device)
    start = time.perf_counter()
    for _ in range(steps):
        x = (torch.tanh(modifier + w0) + 1) / 2
        loss = (x - x0).flatten(1).pow(2).sum(1).sum() + (const * (_cw_margin(model(x), j) + k).clamp(min=0)).sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    sync()
    return (time.perf_counter() - start) / steps


def sync() -> None:
    """Wait for queued GPU work, so that wall times measure it (nothing on the CPU)."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cifar", default="../shared/data/cifar10")
    parser.add_argument("--train-images", type=int, default=5000)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--points", type=int, default=100)
    parser.add_argument("--k", type=float, default=10.0)
    parser.add_argument("--init", default="TL")
    parser.add_argument("--subset", type=int, default=10)
    parser.add_argument("--cw-steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu", help="cpu, cuda, mps or auto (cuda when available)")
    args = parser.parse_args()
    configure(args.device, args.threads)  # models are built and loaded on the device
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s)")
    train, test = cifar(args.cifar, args.train_images)
    model = build_model("resnet20", 10, (3, 32, 32), seed=0)
    if args.train_images:
        rep = fit(model, train.subset(range(args.train_images)), TrainConfig(epochs=args.epochs, batch_size=128,
                                                                               lr=0.002), seed=0)
        print(f"resnet20 trained on {args.train_images} CIFAR-10 images, {args.epochs} epoch(s) in "
              f"{rep.seconds:.0f} s: test accuracy {evaluate(model, test):.3f}")
    else:
        print(f"resnet20 random init: test accuracy {evaluate(model, test):.3f}")
    lr, n = learning_rate("cifar10"), args.points
    rows = []
    with frozen(model):
        x0, i, j = (t.to(model_device(model)) for t in initial_points(model, train, n, args.init,
                                                                       torch.Generator().manual_seed(0)))
        t = time.perf_counter()
        batched = boundary_search(model, x0, i, j, k=args.k, lr=lr)
        t_batched = time.perf_counter() - t
        steps = batched.iterations
        print(f"IPGuard-{args.init} k={args.k:g} lr={lr:g}: {float(batched.converged.float().mean()):.2f} of points "
              f"converged; Adam steps per point mean {float(steps.float().mean()):.1f}, median "
              f"{float(steps.float().median()):.0f}, max {int(steps.max())}")
        m = min(args.subset, n)
        t = time.perf_counter()
        single = per_point_search(model, x0[:m], i[:m], j[:m], k=args.k, lr=lr)
        t_sub = time.perf_counter() - t
        per_step = t_sub / max(int(single.iterations.sum()) + m, 1)
        by_count, by_steps = t_sub * n / m, per_step * (int(steps.sum()) + n)
        same = bool(torch.equal(single.iterations, steps[:m]))
        rows += [("IPGuard batched (measured)", t_batched, PAPER["IPGuard"]),
                 (f"IPGuard per point ({m} timed, x{n / m:g})", by_count, PAPER["IPGuard"]),
                 ("IPGuard per point (by Adam steps)", by_steps, PAPER["IPGuard"])]
        t = time.perf_counter()
        targeted_fgsm(model, x0, j, 0.03)
        sync()
        rows.append(("FGSM (measured)", time.perf_counter() - t, PAPER["FGSM"]))
        t = time.perf_counter()
        torch.rand((n, 3, 32, 32), generator=torch.Generator().manual_seed(0))
        rows.append(("Random (measured)", time.perf_counter() - t, PAPER["Random"]))
        cw = cw_step_seconds(model, x0, j, args.k, lr, args.cw_steps)
        rows += [("CW-L2 9 x 1,000 steps (step time x 9,000)", cw * 9000, PAPER["CW-L2"]),
                 ("CW-L2 9 x 10,000 steps (authors' default)", cw * 90000, PAPER["CW-L2"])]
    print(f"\n{n} points, ResNet-20, 32x32x3, device {args.device} ({args.threads} thread(s)); per-point subset took the same "
          f"steps as in the batch: {same}")
    print(f"{'method':<44} {'seconds':>10} {'paper (GPU)':>12}")
    for name, sec, paper in rows:
        print(f"{name:<44} {sec:10.1f} {paper:12.1f}")
    print(f"\nspeed-up of batching: {by_count / t_batched:.1f}x (by point count), {by_steps / t_batched:.1f}x "
          f"(by Adam steps); CW-L2 / IPGuard batched: {cw * 9000 / t_batched:.0f}x")


if __name__ == "__main__":
    main()
