"""IGSM with and without stopping the points caught in a cycle: same points, how much faster.

Usage: python benchmarks/igsm_speed.py [--dataset mnist --data-dir ../shared/data/mnist] [--owner lenet5]
                                       [--points 400] [--eps 0.1] [--init TL] [--threads 1]

The owner is ``sound_verdicts.py``'s (trained once, cached under ``--cache``). Both searches start
from the same ``--points`` starts of the owner's split with the same target labels, IGSM's defaults
(steps of 1/255, up to 1,000): first the plain loop (``stop_cycles=False``: a point steps until it
reaches its target or 1,000 steps), then the default (a point back in an earlier state stops where
1,000 steps would leave it). Prints both times, their ratio, and whether points and step counts are
identical.
"""

from __future__ import annotations

import time

import torch

from modelproof.protections.adversarial import targeted_igsm
from modelproof.protections.fingerprints.ipguard import frozen, initial_points

from sound_verdicts import load_owner, owner_parser


def main() -> None:
    """Print the comparison."""
    parser = owner_parser(__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=400)
    parser.add_argument("--eps", type=float, default=0.1)
    parser.add_argument("--init", default="TL")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    arch, splits, owner, _ = load_owner(args)
    with frozen(owner):
        x0, _, j = initial_points(owner, splits.owner, args.points, args.init, torch.Generator().manual_seed(args.seed))
        seconds, results = {}, {}
        for name, stop in (("plain loop", False), ("cycles stopped", True)):
            start = time.perf_counter()
            results[name] = targeted_igsm(owner, x0, j, args.eps, stop_cycles=stop)
            seconds[name] = time.perf_counter() - start
        (plain, plain_steps), (fast, fast_steps) = results.values()
        reached = float((owner(fast).argmax(1) == j).float().mean())
    print(f"{args.dataset} {arch}, {args.points} {args.init} starts, eps {args.eps}, {args.threads} thread(s); "
          f"{reached:.1%} reach their target")
    for name, value in seconds.items():
        print(f"  {name}: {value:.1f} s")
    print(f"  speed-up {seconds['plain loop'] / seconds['cycles stopped']:.2f}x; points identical: "
          f"{torch.equal(plain, fast)}; step counts identical: {torch.equal(plain_steps, fast_steps)}")


if __name__ == "__main__":
    main()
