"""The forgery table on MNIST (issue 15): how often a counterfeiter's key verifies "owned", per protection.

Usage: python benchmarks/forgery_mnist.py [--data-dir ../shared/data/mnist] [--seeds 5] [--json FILE]
       python benchmarks/forgery_mnist.py --dataset digits --size 16 --arch mlp --seeds 2   # a quick smoke run

The README's table was measured in four runs (20 minutes of one thread in all):

    python benchmarks/forgery_mnist.py --forgeries forge-pattern-reuse,forge-difference,forge-adversarial,\
        forge-boundary,forge-boundary-blackbox --protections adi,cw-l2-fingerprint,fgsm-fingerprint,\
        igsm-fingerprint,ipguard,new-label,random-fingerprint,zhang-content,zhang-noise,zhang-unrelated
    python benchmarks/forgery_mnist.py --protections blind,frontier-stitching --protection-seeds 5 --slow-seeds 5
    python benchmarks/forgery_mnist.py --protections adi,new-label,zhang-content,zhang-noise,zhang-unrelated \
        --forgeries forge-independent-encoder --slow-seeds 5
    python benchmarks/forgery_mnist.py --protections cw-l2-fingerprint,fgsm-fingerprint,igsm-fingerprint,ipguard,\
        random-fingerprint --forgeries forge-independent-encoder --slow-seeds 5

What runs (one torch thread; reduced so that the runs above fit 20 minutes on this 2-core CPU):

- owner model: LeNet-5 trained 2 epochs (Adam, lr 0.002, batch 128) on the first 10,000 owner
  images; the counterfeiter holds 5,000 images of the attacker split; a control LeNet-5 is trained
  the same way with seed 1 (unrelated to the owner's model).
- every registered protection protects the owner model once (seed 0; ``--protection-seeds K``: seeds
  0..K-1, counterfeiter seed s attacking protection seed s mod K; its default key sizes, fewer
  steps where a default would take long: named in PROTECTIONS_PARAMS below), plus
  "unprotected": the owner model itself, with the zhang-content key's inputs "intercepted"
  although the model never learnt them.
- every forgery runs with counterfeiter seeds 0..S-1 against the protected model (intercepted
  forgeries see 10 key inputs, a different 10 per seed, never the labels). Each forged key is
  verified (fixed mode, alpha = 0.01) against the protected model ("owned" counts) and against
  the control model (a forged key that claims an unrelated model too is a worse forgery still);
  then the forged key is calibrated (``calibration.calibrate``, the prediction bound) on three
  independent LeNet-5 (seeds 2-4) and a random forest, as the other side's expert would, and
  verified again.
- the independent-encoder forgery (Li et al.'s Figure 9) trains a blind watermark of its own on its
  5,000 images with the owner's recipe, so its seeds are ``--slow-seeds`` (default 3; the README's table: 5); its own
  host's accuracy on its own key (the diagonal) is reported beside its cost.
- reported: owned / tried per cell, the forged keys' mean match rate on the protected model
  (the pattern-reuse figure next to Li et al.'s 91%), and each forgery's mean cost (seconds,
  queries to the model).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from modelproof.attacks.forgery import FORGERIES, make_forgery
from modelproof.data.splits import load_splits
from modelproof.util.errors import ConfigError
from modelproof.protections.base import PROTECTIONS, make_protection
from modelproof.suspects.local import TorchSuspect, train_random_forest
from modelproof.models.training import TrainConfig, evaluate, train_new
from modelproof.references.calibration import Reference, calibrate
from modelproof.verification.verifier import verify
from modelproof.models.devices import configure

CONFIG = TrainConfig(epochs=2, batch_size=128, lr=0.002)
SECRET = "forgery-mnist"
WM = {"secret": SECRET, "epochs": 3}
# Parameters per protection: defaults, except fewer steps for the slow searches (time on the CPU).
PROTECTIONS_PARAMS: dict[str, dict] = {
    "zhang-content": WM, "zhang-noise": WM, "zhang-unrelated": WM, "adi": WM, "new-label": WM,
    # lr: the default 1e-4 and 2e-4 (a tenth of training) reached 91% and 98% of the key in 100 epochs on
    # this 2-epoch LeNet-5, not 100%; 1e-3 embeds it (17 s).
    "frontier-stitching": {"lr": 1e-3},
    "ipguard": {"max_iter": 300}, "random-fingerprint": {}, "fgsm-fingerprint": {},
    "igsm-fingerprint": {"max_iter": 300}, "cw-l2-fingerprint": {"points": 30, "binary_steps": 3, "max_iter": 200},
}
# The blind watermark fine-tunes the owner model (4 epochs of Algorithm 1; the host term weighted 1,
# as the project's demo does, so that few epochs embed the key, and the adversarial term 0.1, the
# weights the README's table was measured with; the paper: 100 epochs).
PROTECTIONS_PARAMS["blind"] = {"secret": SECRET, "mode": "finetune", "epochs": 4, "gamma": 0.1, "delta": 1.0}
# The independent-encoder counterfeiter repeats the owner's recipe on its own images (Figure 9).
FORGERY_PARAMS: dict[str, dict] = {"forge-independent-encoder": {"mode": "finetune", "epochs": 4, "gamma": 0.1,
                                                                  "delta": 1.0}}
SLOW = ("forge-independent-encoder",)  # run with --slow-seeds seeds
INTERCEPTED = 10


def subset(data, n: int):
    """The first ``n`` images of ``data`` (or all of them)."""
    return data.subset(torch.arange(min(n, len(data))), name=data.name)


def protect_all(base, owner, test, only: list[str] | None = None, protection_seeds: int = 1) -> dict[str, list[dict]]:
    """Per protection (every registered one, or those in ``only``), its protected model and key for each of
    ``protection_seeds`` seeds; and the unprotected model."""
    make_protection("zhang-content", **WM)  # imports every protection module into the registry
    out: dict[str, list[dict]] = {}
    for name in only or sorted(PROTECTIONS):
        params = PROTECTIONS_PARAMS.get(name, {})
        for pseed in range(protection_seeds):
            start = time.perf_counter()
            try:
                result = make_protection(name, **params).protect(base, owner, seed=pseed, test=test)
            except ConfigError as exc:  # a protection this model or data cannot carry: say so, go on
                print(f"  skipped {name}: {exc}", flush=True)
                break
            owned = verify(result.key, TorchSuspect(result.model)).decision
            entry = {"model": result.model, "key": result.key, "seconds": time.perf_counter() - start,
                     "self_check": owned, "accuracy": evaluate(result.model, test)}
            out.setdefault(name, []).append(entry)
            print(f"  protected with {name} (seed {pseed}): {entry['seconds']:.0f} s, own key {owned}, "
                  f"key of {len(result.key)}, null {result.key.null_match_prob:.3g}", flush=True)
    if "zhang-content" in out:
        out["unprotected"] = [{"model": base, "key": entry["key"], "seconds": 0.0, "self_check": "-",
                               "accuracy": evaluate(base, test)} for entry in out["zhang-content"]]
    return out


def forge_table(protected: dict[str, list[dict]], attacker, control, references, seeds: int, names: list[str],
                slow_seeds: int) -> list[dict]:
    """One row per (protection, forgery): owned / tried, control claims, after calibration, match rate, cost.

    Counterfeiter seed ``s`` attacks the model protected with seed ``s`` modulo the protection seeds."""
    rows = []
    for pname, entries in protected.items():
        for fname in names:
            cls, tries = FORGERIES[fname], slow_seeds if fname in SLOW else seeds
            owned = claimed = calibrated = 0
            rates, seconds, queries, own = [], [], [], []
            for seed in range(tries):
                entry = entries[seed % len(entries)]
                order = torch.randperm(len(entry["key"]), generator=torch.Generator().manual_seed(seed))
                seen = entry["key"].inputs[order[:INTERCEPTED]] if cls.access == "intercepted" else None
                outcome = make_forgery(fname, **FORGERY_PARAMS.get(fname, {})).perform(entry["model"], attacker, seen,
                                                                                       seed=seed)
                verdict = verify(outcome.key, TorchSuspect(entry["model"]))
                owned += verdict.decision == "owned"
                claimed += verify(outcome.key, control).decision == "owned"
                checked = calibrate(outcome.key, references)  # what the other side's expert would do
                calibrated += verify(checked, TorchSuspect(entry["model"])).decision == "owned"
                rates.append(verdict.match_rate)
                seconds.append(outcome.seconds)
                queries.append(outcome.queries)
                if "own_key_accuracy" in outcome.details:  # the counterfeiter's own host on its own key
                    own.append(float(outcome.details["own_key_accuracy"]))
            rows.append({"protection": pname, "forgery": fname, "access": cls.access, "owned": owned,
                         "tried": tries, "control_owned": claimed, "owned_calibrated": calibrated,
                         "match_rate": sum(rates) / tries, "seconds": sum(seconds) / tries,
                         "queries": sum(queries) / tries,
                         "own_key_accuracy": sum(own) / len(own) if own else None})
        print(f"  forged against {pname}", flush=True)
    return rows


def markdown(rows: list[dict], protected: dict[str, dict], names: list[str]) -> str:
    """The forgery table (owned/tried, control claims in brackets) and the cost of each forgery."""
    lines = ["| protection | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    cell = {(r["protection"], r["forgery"]): r for r in rows}
    for pname in protected:
        parts = [f"{cell[pname, f]['owned']}/{cell[pname, f]['tried']} ({cell[pname, f]['control_owned']}; "
                 f"{cell[pname, f]['owned_calibrated']}; {cell[pname, f]['match_rate']:.2f})" for f in names]
        lines.append(f"| {pname} | " + " | ".join(parts) + " |")
    lines += ["", "cell: forged keys verified owned / tried (control model claimed; owned after calibrating the "
              "forged key on the independent references; mean match rate on the model)",
              "", "| forgery | access | seconds (mean) | queries (mean) |", "|---|---|---|---|"]
    for f in names:
        cost = [r for r in rows if r["forgery"] == f]
        own = [r["own_key_accuracy"] for r in cost if r["own_key_accuracy"] is not None]
        lines.append(f"| {f} | {cost[0]['access']} | {sum(r['seconds'] for r in cost) / len(cost):.2f} | "
                     f"{sum(r['queries'] for r in cost) / len(cost):.0f} |"
                     + (f" its own host answers its own key: {sum(own) / len(own):.2f}" if own else ""))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="mnist")
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/data/mnist"))
    parser.add_argument("--size", type=int, default=None)
    parser.add_argument("--arch", default="lenet5")
    parser.add_argument("--owner-images", type=int, default=10_000)
    parser.add_argument("--attacker-images", type=int, default=5_000)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--forgeries", default=None, help="comma-separated subset (default: all)")
    parser.add_argument("--slow-seeds", type=int, default=3, help="seeds of the slow forgeries (training their own)")
    parser.add_argument("--protection-seeds", type=int, default=1,
                        help="protect each protection with this many seeds (counterfeiter seed s attacks seed s mod K)")
    parser.add_argument("--protections", default=None, help="comma-separated subset (default: every registered one)")
    parser.add_argument("--param", action="append", default=[], metavar="PROTECTION:KEY=VALUE",
                        help="override a protection parameter (a number or text), e.g. frontier-stitching:lr=1e-3")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--device", default="cpu", help="cpu, cuda, mps or auto (cuda when available)")
    args = parser.parse_args()
    if args.protection_seeds < 1:
        parser.error(f"--protection-seeds must be at least 1, got {args.protection_seeds}")
    configure(args.device, args.threads)  # models are built and loaded on the device
    start = time.perf_counter()
    splits = load_splits(args.dataset, None if args.dataset == "digits" else args.data_dir, size=args.size, seed=0)
    owner, attacker = subset(splits.owner, args.owner_images), subset(splits.attacker, args.attacker_images)
    print(f"{args.dataset}: {len(owner)} owner, {len(attacker)} attacker, {len(splits.test)} test images; "
          f"{args.arch}; {args.seeds} seeds; torch threads {torch.get_num_threads()}", flush=True)
    base, _ = train_new(args.arch, owner, CONFIG, seed=0)
    control = TorchSuspect(train_new(args.arch, owner, CONFIG, seed=1)[0])
    references = [Reference(TorchSuspect(train_new(args.arch, owner, CONFIG, seed=s)[0]), f"{args.arch} seed {s}", args.arch)
                  for s in (2, 3, 4)] + [Reference(train_random_forest(owner, seed=5), "random forest", "random-forest")]
    print(f"owner model test accuracy {evaluate(base, splits.test):.4f}", flush=True)
    for item in args.param:
        name, _, pair = item.partition(":")
        key, _, value = pair.partition("=")
        try:
            parsed: object = float(value) if any(ch in value for ch in ".e") else int(value)
        except ValueError:
            parsed = value
        PROTECTIONS_PARAMS[name] = {**PROTECTIONS_PARAMS.get(name, {}), key: parsed}
    only = args.protections.split(",") if args.protections else None
    protected = protect_all(base, owner, splits.test, only, args.protection_seeds)
    names = args.forgeries.split(",") if args.forgeries else list(FORGERIES)
    rows = forge_table(protected, attacker, control, references, args.seeds, names, args.slow_seeds)
    table = markdown(rows, protected, names)
    print(table)
    print(f"total {time.perf_counter() - start:.0f} s")
    if args.json is not None:
        setup = {k: [{"seconds": v["seconds"], "self_check": v["self_check"], "accuracy": v["accuracy"],
                      "key_size": len(v["key"]), "null_match_prob": v["key"].null_match_prob} for v in entries]
                 for k, entries in protected.items()}
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "protections": setup,
                                         "rows": rows, "table": table}, indent=2))


if __name__ == "__main__":
    main()
