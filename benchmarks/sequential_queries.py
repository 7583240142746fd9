"""Queries needed to decide "owned" in sequential mode, and the simulated false-claim rate.

For a 100-label key with null_match_prob 0.1 and 0.5, simulated suspects answer each key label
correctly with probability 0.95 (an owned, lightly attacked model); sequential verification
(``stats.simulate_sequential``, the exact rule ``verify(mode="sequential")`` applies) stops as soon
as the test martingale crosses 1/alpha. Independent suspects (match probability = the null) give
the false-claim rate, next to what re-testing the fixed-sample p-value after every batch would give.

Run: ``.venv/bin/python benchmarks/sequential_queries.py`` (under a minute on 2 CPU cores). The new-label
key under key selection (issue 22.4: 50 key samples, null bounded on other owners' new-label models at
tail 0.001): ``--nulls 0.362,0.475 --key-size 50 --match 1 --tail 0.001``.
"""

from __future__ import annotations

import argparse
import math
import time

import torch

from modelproof.verification.stats import decision_threshold, default_p1, simulate_sequential


def naive_rate(p0: float, key_size: int, batch_size: int, alpha: float, runs: int, seed: int) -> float:
    """False-claim rate of re-testing the fixed-sample binomial p-value after every batch (invalid)."""
    hits = torch.rand((runs, key_size), generator=torch.Generator().manual_seed(seed)) < p0
    checks = list(range(batch_size, key_size, batch_size)) + [key_size]
    need = torch.tensor([decision_threshold(t, p0, alpha) for t in checks])
    return float((hits.cumsum(1)[:, torch.tensor(checks) - 1] >= need).any(1).double().mean())


def main() -> None:
    """Print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20_000, help="simulated suspects per row")
    parser.add_argument("--null-runs", type=int, default=200_000, help="simulated independent suspects per row")
    parser.add_argument("--alpha", type=float, default=0.01)
    parser.add_argument("--nulls", default="0.1,0.5", help="comma-separated null match probabilities p0")
    parser.add_argument("--key-size", type=int, default=100)
    parser.add_argument("--match", type=float, default=0.95, help="owned suspects' match probability")
    parser.add_argument("--tail", type=float, default=0.0, help="the key's bound tail: the test runs at alpha - tail "
                        "(0.001 for a calibrated or new-label key bounded on other owners' models)")
    args = parser.parse_args()
    key_size, match, start = args.key_size, args.match, time.perf_counter()
    alpha = args.alpha - args.tail
    print(f"key length {key_size}; owned suspects match each label with probability {match}; alpha {alpha}, "
          f"beta 0.05; {args.runs:,} owned / {args.null_runs:,} independent simulated suspects per row\n")
    print(f"{'null p0':>7} {'p1':>5} {'batch':>5} | {'owned':>7} {'mean q':>6} {'median':>6} {'p95':>4} "
          f"{'max':>4} | {'false claims':>12} {'a+3 s.e.':>9} | {'naive re-test':>13} | fixed: need")
    for p0 in (float(v) for v in args.nulls.split(",")):
        for batch in (1, 10):
            gen = torch.Generator().manual_seed(int(p0 * 100) + batch)
            outcome, queries = simulate_sequential(match, key_size, p0, alpha=alpha, batch_size=batch,
                                                   runs=args.runs, generator=gen)
            owned = outcome == 1
            q = queries[owned].double()
            null_outcome, _ = simulate_sequential(p0, key_size, p0, alpha=alpha, batch_size=batch,
                                                  runs=args.null_runs, generator=gen)
            false_rate = float((null_outcome == 1).double().mean())
            se = math.sqrt(alpha * (1 - alpha) / args.null_runs)
            naive = naive_rate(p0, key_size, batch, alpha, args.runs, seed=batch)
            need = decision_threshold(key_size, p0, alpha)
            print(f"{p0:>7} {default_p1(p0):>5} {batch:>5} | {float(owned.double().mean()):>7.4f} "
                  f"{float(q.mean()):>6.1f} {float(q.median()):>6.0f} {float(q.quantile(0.95)):>4.0f} "
                  f"{int(q.max()):>4} | {false_rate:>12.5f} {alpha + 3 * se:>9.5f} | {naive:>13.4f} | "
                  f">= {need}/{key_size} matches, {key_size} queries")
    print(f"\nqueries: key inputs asked before the decision (owned runs only); the key holds {key_size}.")
    print("false claims: share of independent suspects declared owned; a+3 s.e.: alpha plus 3 standard errors.")
    print("naive re-test: stopping at the first fixed-sample p < alpha after each batch (not valid).")
    print(f"done in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
