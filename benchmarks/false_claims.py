"""False-claim rates of modelproof's verdicts, simulated: every row must stay at or below alpha.

Rows (a 100-input key, alpha 0.01, --nulls independent suspects per row):

1. one-shot fixed test against an exact null;
2. the raise-the-budget workflow (fixed mode at budgets 10, 20, ..., 100 on one query log, stopping at
   the first "owned"), as it was (every look decided) and as modelproof runs it (the log's decision
   record refuses the second fixed look: ``verification.check_new_look``);
3. sequential verification continuing one log over the same budgets (the test martingale);
4. calibrated nulls: match rates of independent models drawn from Beta populations with means 0.1-0.9
   and standard deviations 0.05-0.2; the key is calibrated on ``calibration.DEFAULT_REFERENCES``
   references drawn from the same population (``stats.prediction_upper_bound``, tail
   ``calibration.TAIL``) and a fresh independent suspect is verified at alpha - tail, fixed and
   sequential. Beside it: the share of marked models (match rate 0.95 and 0.99) still "owned", and
   the share of keys that cannot prove anything at all (the population's spread is too wide: the
   answer is then "inconclusive", and ``protect``'s self-check refuses such a key), and the bound's
   realised tail, P(an independent model's true rate q > p0), computed exactly (the Beta population's
   mass above each bound, averaged over the reference draws), over all keys and over the keys that can
   prove anything, beside the quantile's tail and what verify is charged (``calibration.skew_tail``);
   the fixed false-claim rate is also given exactly (beta-binomial tail beyond each key's threshold);
5. the same with the exact rank bound (``calibration.rank_bound``) on ``--rank-references`` (199 by
   default: its tail 1 / (R + 1) = 0.005 leaves alpha - tail = 0.005 to test at).

Run: ``.venv/bin/python benchmarks/false_claims.py`` (a few minutes; numpy and scipy only).
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
from scipy import stats

from modelproof.references.calibration import DEFAULT_REFERENCES, TAIL, rank_bound, skew_tail
from modelproof.verification.stats import key_p1
from modelproof.keys.nulls import prediction_upper_bound
from modelproof.verification.verifier import check_new_look


def thresholds(n: int, p0: np.ndarray, level: float) -> np.ndarray:
    """Smallest match count m with P[Binomial(n, p0) >= m] < level, per p0 (n + 1 when none)."""
    m = np.arange(n + 2)
    tail = stats.binom.sf(m[None, :] - 1, n, np.asarray(p0, dtype=float)[:, None])
    ok = tail < level
    return np.where(ok.any(1), ok.argmax(1), n + 1)


def sequential_owned(hits: np.ndarray, p0: np.ndarray, level: float, beta: float = 0.05, batch: int = 10) -> np.ndarray:
    """Whether the test martingale (p1 = key_p1(p0, n, level), as verify sets it) reaches 1/level at a batch end
    before beta."""
    p0 = np.asarray(p0, dtype=float)
    n = hits.shape[1]
    p1 = np.array([key_p1(q, n, level) if q < 1 else 1 - 1e-12 for q in p0])  # a null of 1 (rank bound): no claim
    up, down = np.log(p1 / np.maximum(p0, 1e-300)), np.log1p(-p1) - np.log1p(-np.minimum(p0, 1 - 1e-12))
    checks = np.arange(batch, hits.shape[1] + 1, batch)
    m = hits.cumsum(1)[:, checks - 1]
    value = m * up[:, None] + (checks[None, :] - m) * down[:, None]
    owned, dismissed = value >= -math.log(level), value <= math.log(beta)
    first_owned = np.where(owned.any(1), owned.argmax(1), 10 ** 6)
    first_dismissed = np.where(dismissed.any(1), dismissed.argmax(1), 10 ** 6)
    return owned.any(1) & (first_owned < first_dismissed)


def budget_workflow(rng: np.random.Generator, p0: float, n: int, alpha: float, nulls: int, refuse: bool) -> float:
    """False claims of 'fixed mode, raise the budget, run again on the same log' (refused when ``refuse``)."""
    budgets = list(range(n // 10, n + 1, n // 10))
    need = {b: int(thresholds(b, np.array([p0]), alpha)[0]) for b in budgets}
    hits = rng.random((nulls, n)) < p0
    counts = hits.cumsum(1)
    claims = 0
    for row in counts:
        decisions: list[dict] = []
        for b in budgets:
            look = {"key_digest": "k", "mode": "fixed", "budget": b, "alpha": alpha, "p1": None, "beta": None}
            if refuse:
                try:
                    check_new_look(decisions, look)
                except Exception:
                    break
            if row[b - 1] >= need[b]:
                claims += 1
                break
            decisions.append(look)
    return claims / nulls


def beta_params(mean: float, sd: float) -> tuple[float, float] | None:
    """(a, b) of the Beta with this mean and sd, or None when no Beta has them."""
    var = sd * sd
    if var >= mean * (1 - mean):
        return None
    total = mean * (1 - mean) / var - 1
    return mean * total, (1 - mean) * total


def calibrated_row(rng: np.random.Generator, mean: float, sd: float, n: int, alpha: float, nulls: int,
                   refs: int, rank: bool = False) -> dict | None:
    """One population: false claims (fixed, sequential), marked models owned, share of useless keys and the
    bound's realised tail (``rank``: the exact rank bound, tail 1 / (refs + 1), instead of Student-t)."""
    ab = beta_params(mean, sd)
    if ab is None:
        return None
    a, b = ab
    counts = rng.binomial(n, rng.beta(a, b, (nulls, refs)))
    tail = 1.0 / (refs + 1) if rank else TAIL
    charged = tail if rank else skew_tail(refs)  # what calibrate() records and verify subtracts
    if rank:
        bounds = np.array([rank_bound([int(c) for c in row], n, tail) for row in counts])
    else:
        bounds = np.array([min(1.0, prediction_upper_bound([int(c) for c in row], n, TAIL)) for row in counts])
    level = alpha - charged
    need = thresholds(n, bounds, level)
    q = rng.beta(a, b, nulls)
    suspects = rng.binomial(n, q)
    hits = rng.random((nulls, n)) < rng.beta(a, b, nulls)[:, None]
    usable = need <= n
    # the realised tail exactly: the population's mass above each bound (scipy), averaged over the draws;
    # "usable": only where the key can prove anything at this level (what the accounting needs)
    exact = stats.beta.sf(bounds, a, b)
    out = {"mean": mean, "sd": sd, "fixed": float((suspects >= need).mean()),
           "fixed_exact": float(np.where(usable, stats.betabinom.sf(need - 1, n, a, b), 0.0).mean()),
           "sequential": float(sequential_owned(hits, bounds, level).mean()),
           "useless": float((~usable).mean()), "median_null": float(np.median(bounds)),
           "tail": float(exact.mean()), "tail_usable": float((exact * usable).mean()),
           "nominal_tail": tail, "charged": charged}
    for rate in (0.95, 0.99):
        out[f"owned_{rate}"] = float((rng.binomial(n, rate, nulls) >= need).mean())
    return out


def main() -> None:
    """Print the tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nulls", type=int, default=10_000, help="simulated independent suspects per row")
    parser.add_argument("--alpha", type=float, default=0.01)
    parser.add_argument("--references", type=int, default=DEFAULT_REFERENCES)
    parser.add_argument("--rank-references", type=int, default=199, help="references of the exact rank bound's "
                        "table (0: skip it)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--key-size", type=int, default=100)
    args = parser.parse_args()
    rng, n, alpha, start = np.random.default_rng(args.seed), args.key_size, args.alpha, time.perf_counter()
    se = math.sqrt(alpha * (1 - alpha) / args.nulls)
    print(f"key of {n} inputs, alpha {alpha}, {args.nulls:,} independent suspects per row "
          f"(alpha + 3 s.e. = {alpha + 3 * se:.4f})\n")
    print("| row | null | false claims |\n|---|---|---|")
    for p0 in (0.1, 0.5):
        one = float((rng.binomial(n, p0, args.nulls) >= thresholds(n, np.array([p0]), alpha)[0]).mean())
        print(f"| one-shot fixed | {p0} exact | {one:.4f} |")
        print(f"| raise the budget 10..100 on one log, every look decided (before) | {p0} exact | "
              f"{budget_workflow(rng, p0, n, alpha, args.nulls, refuse=False):.4f} |")
        print(f"| raise the budget 10..100 on one log, second fixed look refused (now) | {p0} exact | "
              f"{budget_workflow(rng, p0, n, alpha, args.nulls, refuse=True):.4f} |")
        hits = rng.random((args.nulls, n)) < p0
        seq = float(sequential_owned(hits, np.full(args.nulls, p0), alpha).mean())
        print(f"| sequential continuing one log, 10..100 | {p0} exact (p1 {key_p1(p0, n, alpha):g}) | {seq:.4f} |")
    tables = [(f"calibrated nulls: {args.references} references from the population, Student-t bound at tail "
               f"{TAIL:g}, verify charged {skew_tail(args.references):g} (calibration.skew_tail), tested at alpha - "
               f"{skew_tail(args.references):g} = {alpha - skew_tail(args.references):g}", args.references, False)]
    if args.rank_references:
        tables.append((f"exact rank bound on {args.rank_references} references (tail {1 / (args.rank_references + 1):.4g})"
                       f", tested at alpha - tail = {alpha - 1 / (args.rank_references + 1):.4g}",
                       args.rank_references, True))
    for title, refs, rank in tables:
        print(f"\n{title}\n")
        print("| population mean | sd | false claims fixed (exact) | sequential | realised tail: all keys / usable keys "
              "(quantile tail; charged) | marked 0.95 owned | marked 0.99 owned | keys that cannot prove (inconclusive) "
              "| median null |\n|---|---|---|---|---|---|---|---|---|")
        for mean in (0.1, 0.3, 0.5, 0.7, 0.9):
            for sd in (0.05, 0.1, 0.2):
                row = calibrated_row(rng, mean, sd, n, alpha, args.nulls, refs, rank)
                if row is None:
                    print(f"| {mean} | {sd} | no Beta population has this mean and sd | | | | | | |")
                    continue
                flag = " **over alpha**" if row["fixed"] > alpha + 3 * se or row["sequential"] > alpha + 3 * se else ""
                over = " **over the charge**" if row["tail"] > row["charged"] else ""
                print(f"| {mean} | {sd} | {row['fixed']:.4f} ({row['fixed_exact']:.1e}){flag} | {row['sequential']:.4f} | "
                      f"{row['tail']:.1e} / {row['tail_usable']:.1e} ({row['nominal_tail']:.4g}; {row['charged']:.4g}){over} | "
                      f"{row['owned_0.95']:.3f} | {row['owned_0.99']:.3f} | {row['useless']:.3f} | {row['median_null']:.3f} |")
    print(f"\n{time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
