"""The table of docs/guides/sok-attacks.md from a finished run of experiments/sok_attacks_mnist.toml.

Usage:
    OMP_NUM_THREADS=1 modelproof experiment run experiments/sok_attacks_mnist.toml --out runs/sok
    python benchmarks/sok_attacks_table.py runs/sok/results.csv

For every protection and attack: test accuracy before (the protected model) and after the attack, the
share of the key the model answers as the owner's before (the unattacked row) and after, the verdict of
the fixed binomial test (alpha from the config), whether the attack stayed plausible, the attack's
seconds and the victim queries it made, and the false claims over the negative suspects.
"""

from __future__ import annotations

import csv
import sys
from collections import defaultdict


def main(path: str) -> None:
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    positives = [r for r in rows if r["role"] == "positive"]
    before = {r["protection"]: r for r in positives if r["attack"] == "none"}
    claims: dict[str, list[str]] = defaultdict(list)
    for r in rows:
        if r["role"] == "negative":
            claims[r["protection"]].append(r["decision"])
    for prot, decisions in claims.items():
        print(f"{prot}: {sum(d == 'owned' for d in decisions)} false claims over {len(decisions)} negative verdicts")
    print()
    print("| protection | attack | accuracy before -> after | key match before -> after | verdict | plausible "
          "| attack s | victim queries |")
    print("|---|---|---|---|---|---|---|---|")
    for r in positives:
        if r["attack"] == "none":
            continue
        if r["status"] != "ok":
            print(f"| {r['protection']} | {r['attack_label']} | failed: {r['error'][:60]} | | | | | |")
            continue
        base = before.get(r["protection"], {})
        key_before = f"{float(base['key_accuracy']):.2f}" if base.get("key_accuracy") else "?"
        print(f"| {r['protection']} | {r['attack_label']} | {float(r['accuracy_before']):.4f} -> "
              f"{float(r['accuracy_after']):.4f} | {key_before} -> {float(r['key_accuracy']):.2f} | "
              f"{r['decision']} | {'yes' if r['plausible'] == 'True' else 'no'} | "
              f"{float(r['attack_seconds'] or 0):.0f} | {int(float(r['attack_queries'] or 0)):,} |")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "runs/sok/results.csv")
