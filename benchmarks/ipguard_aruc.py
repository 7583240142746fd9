"""IPGuard's Tables 4 and 5 on MNIST and Fashion-MNIST: ARUC of IPGuard and its baselines.

Usage: nohup python benchmarks/ipguard_aruc.py [--datasets mnist fashion-mnist] [--data ../shared/data]
                                               [--cache benchmarks/.cache/ipguard] [--arch lenet5]
                                               [--methods Random FGSM IGSM CW-L2 IPGuard] > aruc.log &
       python benchmarks/ipguard_aruc.py --datasets digits --size 16 --epochs 20 --selection both

Per dataset (CPU stand-ins for the paper's CIFAR-10 / CIFAR-100): a LeNet-5 target trained on a
subset of the owner split; positive suspects from the removal attack suite on the attacker's split
(FTLL, FTAL, RTLL, RTAL, WP p = 0.1, 0.2, ... and FP c = 1/16, 2/16, ... while the test accuracy
loss stays within 3 points); negative suspects: LeNet-5 from 10 other seeds, MLPs and LeNet-3s, and
5 random forests of 20 trees, all trained on the owner's data. Then every method's parameter grid
(each with the four initialisations TR/TL/RR/RL) makes a 100-point fingerprint of the target,
every suspect's matching rate is measured, and ARUC (Eq. 7, r = 100) is computed.

``--selection on`` (or ``both``) chooses every key against the selection references of the
data's reference population (``modelproof.references``: the general selection members plus
``--owner-share`` of the target's architecture, built into ``--references-dir`` on first use, the
same models ``modelproof protect`` selects against). Those judges are trained with the population's
own seeds (from 1,000,000 on), never the negatives' seeds; the run stops if any judge's weights
equal a negative's. Selected keys draw ``oversample`` x the candidates (the method's default), so a
setting costs that much more; a setting whose selection is refused is reported as refused. ``both``
prints the tables for keys without and with selection and a side-by-side ARUC table.

Printed: the ARUC table (Table 4), each method's best parameters, the IPGuard grid (k x init), a
Table-5-like matching-rate table for each method's best setting, the largest negative matching
rate seen (which backs the default null_match_prob), and the robustness-uniqueness curves are
written as PNG. Models and per-setting matching rates are cached, so an interrupted run resumes.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path

import torch

from modelproof.data.splits import Splits, load_splits
from modelproof.experiments.populations import LabelledSuspect, matching_rates, negative_suspects, positive_suspects
from modelproof.experiments.metrics import aruc, separation_gap
from modelproof.models.modelfile import load_model, save_model
from modelproof.protections.base import make_protection
from modelproof.models.training import TrainConfig, evaluate, train_new
from modelproof.models.devices import configure
from modelproof.models.modelfile import weights_digest
from modelproof.protections.selection import Selection
from modelproof.util.errors import ConfigError

INITS = ("TR", "TL", "RR", "RL")
GRIDS: dict[str, tuple[str, str, tuple[float, ...]]] = {  # method -> (protection, parameter, values)
    "Random": ("random-fingerprint", "", (0.0,)),
    "FGSM": ("fgsm-fingerprint", "eps", (0.05, 0.1, 0.2, 0.3)),
    "IGSM": ("igsm-fingerprint", "eps", (0.05, 0.1, 0.2, 0.3)),
    "CW-L2": ("cw-l2-fingerprint", "k", (3.0, 5.0, 8.0, 12.0)),
    "IPGuard": ("ipguard", "k", (1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0)),
}
CW_INITS = ("TL",)  # CW-L2 costs minutes per setting on this CPU: the paper's best initialisation only


def population(name: str, splits: Splits, cache: Path, log: Callable[[str], None],
               args: argparse.Namespace) -> tuple[torch.nn.Module, list[LabelledSuspect], list[LabelledSuspect]]:
    """The target and its positive and negative suspects (cached under ``cache``)."""
    config = TrainConfig(epochs=args.epochs, batch_size=64, lr=0.002)
    path = cache / "target.safetensors"
    if path.is_file():
        target = load_model(path)
    else:
        target, rep = train_new(args.arch, splits.owner, config, seed=0)
        save_model(target, path, dataset=name)
        log(f"target {args.arch} trained in {rep.seconds:.0f} s")
    log(f"target {args.arch}: test accuracy {evaluate(target, splits.test):.4f}")
    t = time.perf_counter()
    pos = positive_suspects(target, splits, cache=cache / "positive", finetune_epochs=args.finetune_epochs,
                            prune_epochs=args.prune_epochs, log=log)
    log(f"{len(pos)} positive suspects ({time.perf_counter() - t:.0f} s)")
    t = time.perf_counter()
    others = {a: list(range(1, int(n) + 1)) for a, n in (part.split(":") for part in args.other_archs.split(",") if part)}
    neg = negative_suspects(splits, arch=args.arch, seeds=range(1, args.seeds + 1), other_archs=others,
                            forest_seeds=range(args.forests), config=config, cache=cache / "negative", log=log)
    log(f"{len(neg)} negative suspects ({time.perf_counter() - t:.0f} s)")
    return target, pos, neg


def settings(methods: list[str], inits_allowed: tuple[str, ...] = INITS) -> list[tuple[str, str, dict]]:
    """(method, label, protection parameters) for every point of the grids of ``methods``."""
    out = []
    for method in methods:
        _, param, values = GRIDS[method]
        inits = ("",) if method == "Random" else (CW_INITS if method == "CW-L2" else INITS)
        inits = tuple(i for i in inits if not i or i in inits_allowed) or inits
        for init in inits:
            for value in values:
                params = {param: value, "init": init} if param else {}
                label = f"{method}-{init} {param}={value:g}" if param else method
                out.append((method, label, params))
    return out


def evaluate_grid(target: torch.nn.Module, splits: Splits, suspects: list[LabelledSuspect], cache: Path,
                  log: Callable[[str], None], methods: list[str], inits: tuple[str, ...] = INITS,
                  selection: Selection | None = None) -> dict[str, dict]:
    """Matching rates of every suspect for every setting (cached in ``cache/rates.json``, or
    ``cache/rates-selected.json`` for keys chosen against ``selection``). A setting whose key
    selection is refused is recorded with the refusal and left out of the tables."""
    store = cache / ("rates.json" if selection is None else "rates-selected.json")
    done: dict[str, dict] = json.loads(store.read_text()) if store.is_file() else {}
    for method, label, params in settings(methods, inits):
        if label in done:
            continue
        protection = make_protection(GRIDS[method][0], points=100, **params)
        start = time.perf_counter()
        try:
            result = protection.protect(target, splits.owner, seed=0, selection=selection)
        except ConfigError as exc:
            done[label] = {"method": method, "params": params, "refused": str(exc),
                           "seconds": time.perf_counter() - start}
            store.write_text(json.dumps(done, indent=1))
            log(f"  {label:<28} refused: {exc}")
            continue
        seconds = time.perf_counter() - start
        rates = matching_rates(suspects, result.key.inputs, result.key.labels)
        record = result.key.params.get("selection") if selection is not None else None
        done[label] = {"method": method, "params": params, "rates": rates, "seconds": seconds,
                       "report": {k: v for k, v in result.report.items() if isinstance(v, (int, float))},
                       "selection": {k: v for k, v in (record or {}).items() if k != "references"} or None}
        store.write_text(json.dumps(done, indent=1))
        pos = [r for s, r in rates.items() if _kind(suspects, s) == "positive"]
        neg = [r for s, r in rates.items() if _kind(suspects, s) == "negative"]
        kept = f", kept {record['kept']}/{record['tried']}" if record else ""
        log(f"  {label:<28} ARUC {aruc(pos, neg):.3f}  ({seconds:.1f} s{kept})")
    return done


def selection_judges(name: str, splits: Splits, negatives: list[LabelledSuspect], args: argparse.Namespace,
                     log: Callable[[str], None]) -> Selection:
    """The population's selection references for the target's architecture (built on first use), checked
    to share no weights with any negative suspect."""
    from modelproof.references.build import build_population
    from modelproof.references.mix import SELECTION
    from modelproof.references.sets import selection_of

    folder = Path(args.references_dir) / name if args.references_dir else Path(args.cache) / "references" / name
    t = time.perf_counter()
    pop, trained, _ = build_population(folder, splits, dataset=name, calibration=0, selection=args.judges,
                                       owner_archs=(args.arch,), owner_share=args.owner_share, log=log)
    refs = pop.references(SELECTION, args.arch)
    log(f"{len(refs)} selection references from {folder} ({len(trained)} trained now, "
        f"{time.perf_counter() - t:.0f} s)")
    check_apart([r.digest for r in refs], [r.name for r in refs], negatives)
    return selection_of(refs, args.oversample)


def check_apart(digests: list[str | None], names: list[str], negatives: list[LabelledSuspect]) -> None:
    """Stop when a selection reference is one of the negatives (same weights, or same name)."""
    scored = {weights_digest(s.model): s.name for s in negatives if s.model is not None}
    for digest, ref in zip(digests, names):
        if digest in scored or ref in {s.name for s in negatives}:
            raise SystemExit(f"selection reference {ref} is the negative suspect {scored.get(digest, ref)}: "
                             "selection must not use the models it is scored against")


def _kind(suspects: list[LabelledSuspect], name: str) -> str:
    return next(s.kind for s in suspects if s.name == name)


def report(name: str, suspects: list[LabelledSuspect], done: dict[str, dict], out: Path,
           methods: list[str]) -> dict[str, float]:
    """Print the tables for one dataset; return each method's best ARUC."""
    refused = {label: d["refused"] for label, d in done.items() if "refused" in d and d["method"] in methods}
    for label, why in refused.items():
        print(f"refused: {label}: {why}")
    done = {label: d for label, d in done.items() if d["method"] in methods and "refused" not in d}
    methods = [m for m in methods if any(d["method"] == m for d in done.values())]
    pos = [s for s in suspects if s.kind == "positive"]
    neg = [s for s in suspects if s.kind == "negative"]
    scores = {label: aruc([d["rates"][s.name] for s in pos], [d["rates"][s.name] for s in neg])
              for label, d in done.items()}
    best = {m: max((lab for lab, d in done.items() if d["method"] == m), key=lambda lab: scores[lab])
            for m in methods}
    print(f"\n=== {name}: {len(pos)} positive and {len(neg)} negative suspects ===")
    print(f"{'method':<9} {'ARUC':>6} {'gap':>6} {'seconds':>8}  best setting")
    for m, lab in best.items():
        d = done[lab]
        gap = separation_gap([d["rates"][s.name] for s in pos], [d["rates"][s.name] for s in neg])
        print(f"{m:<9} {scores[lab]:6.3f} {gap:6.2f} {d['seconds']:8.1f}  {lab}")
    if "IPGuard" in methods:
        print("\nIPGuard ARUC by k (rows) and initialisation (columns)")
        print("k     " + "".join(f"{i:>7}" for i in INITS))
        for k in GRIDS["IPGuard"][2]:
            print(f"{k:<5g} " + "".join(f"{scores.get(f'IPGuard-{i} k={k:g}', float('nan')):7.3f}" for i in INITS))
    print(f"\nmatching rates at each method's best setting (Table 5)\n{'suspect':<26} {'acc':>9}"
          + "".join(f"{m:>11}" for m in best))
    for s in pos:
        print(f"{s.name:<26} {s.accuracy:9.3f}" + "".join(f"{done[lab]['rates'][s.name]:11.2f}" for lab in best.values()))
    for group in dict.fromkeys(s.group for s in neg):
        members = [s for s in neg if s.group == group]
        accs = [s.accuracy for s in members]
        cells = []
        for lab in best.values():
            r = [done[lab]["rates"][s.name] for s in members]
            cells.append(f"{min(r):.2f}-{max(r):.2f}")
        print(f"{group + f' (x{len(members)})':<26} {min(accs):.2f}-{max(accs):.2f}" + "".join(f"{c:>11}" for c in cells))
    for m in methods:
        top = max(max(d["rates"][s.name] for s in neg) for d in done.values() if d["method"] == m)
        print(f"largest negative matching rate over the {m} grid: {top:.2f}")
    from modelproof.experiments.plots import plot_curves

    curves = {f"{m}\n{lab.split(' ', 1)[-1] if ' ' in lab else ''}":
              ([done[lab]["rates"][s.name] for s in pos], [done[lab]["rates"][s.name] for s in neg])
              for m, lab in best.items()}
    print(f"curves: {plot_curves(curves, out / f'ipguard_curves_{name}.png', title=name)}")
    return {m: scores[lab] for m, lab in best.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=["mnist", "fashion-mnist"])
    parser.add_argument("--data", default="../shared/data")
    parser.add_argument("--cache", default="benchmarks/.cache/ipguard")
    parser.add_argument("--arch", default="lenet5")
    parser.add_argument("--owner", type=int, default=10000)
    parser.add_argument("--attacker", type=int, default=8000)
    parser.add_argument("--test", type=int, default=3000)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--finetune-epochs", type=int, default=2)
    parser.add_argument("--prune-epochs", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--methods", nargs="+", default=list(GRIDS), choices=list(GRIDS))
    parser.add_argument("--seeds", type=int, default=10, help="negatives: the target's architecture from seeds 1..N")
    parser.add_argument("--other-archs", default="mlp:4,lenet3:3",
                        help="negatives: ARCH:N,... other architectures, N seeds each (e.g. vgg11:2,resnet18:2,"
                             "mobilenetv2:2,wrn-22-4:2 on CIFAR-10)")
    parser.add_argument("--forests", type=int, default=5, help="negatives: random forests of 20 trees")
    parser.add_argument("--inits", nargs="+", default=list(INITS), choices=list(INITS),
                        help="IPGuard's initialisations to try (each method's grid runs once per init)")
    parser.add_argument("--values", nargs="+", type=float, default=None,
                        help="sweep these values (eps, or k) instead of each method's own grid")
    parser.add_argument("--json", default=None, help="also write the ARUC table and timings as JSON to this file")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, mps or auto (cuda when available)")
    parser.add_argument("--size", type=int, default=None, help="resize images to SIZE x SIZE (digits: 16 for LeNet-5)")
    parser.add_argument("--selection", choices=("off", "on", "both"), default="off",
                        help="keys without selection (off), chosen against the population's selection references "
                             "(on), or both side by side")
    parser.add_argument("--references-dir", default=None,
                        help="the population folder's parent (default CACHE/references); one folder per dataset")
    parser.add_argument("--judges", type=int, default=24, help="general selection references of the population "
                        "(protect's default 24; --owner-share of them are the target's architecture)")
    parser.add_argument("--owner-share", type=int, default=8, help="selection references of the target's architecture")
    parser.add_argument("--oversample", type=int, default=None, help="candidates per key point (default: the method's)")
    args = parser.parse_args()
    configure(args.device, args.threads)  # models are built and loaded on the device
    if args.values:
        GRIDS.update({m: (p, param, tuple(args.values)) for m, (p, param, _) in GRIDS.items() if param})
    start = time.perf_counter()

    def log(text: str) -> None:
        print(f"[{time.perf_counter() - start:7.0f} s] {text}", flush=True)

    summary, timings = {}, {}
    for name in args.datasets:
        full = load_splits(name, Path(args.data) / name, size=args.size, seed=0)
        splits = Splits(*(part.subset(range(min(n, len(part)))) for part, n in
                          ((full.owner, args.owner), (full.attacker, args.attacker), (full.test, args.test))))
        cache = Path(args.cache) / ((name if args.arch == "lenet5" else f"{name}-{args.arch}")
                                    + (f"-{args.size}px" if args.size else ""))
        log(f"{name}: owner {len(splits.owner)}, attacker {len(splits.attacker)}, test {len(splits.test)} images")
        target, pos, neg = population(name, splits, cache, log, args)
        modes = {"off": (None,), "on": ("selected",), "both": (None, "selected")}[args.selection]
        for mode in modes:
            selection = selection_judges(name, splits, neg, args, log) if mode else None
            done = evaluate_grid(target, splits, pos + neg, cache, log, args.methods, tuple(args.inits), selection)
            column = f"{name} {mode}" if mode else name
            summary[column] = report(column.replace(" ", "-"), pos + neg, done, cache, args.methods)
        log(f"{name} done")
        timings[name] = {"seconds": time.perf_counter() - start, "positives": len(pos), "negatives": len(neg),
                         "target_accuracy": evaluate(target, splits.test), "device": args.device,
                         "threads": torch.get_num_threads()}
    print("\nARUC (Table 4)\n" + f"{'method':<9}" + "".join(f"{n:>15}" for n in summary))
    for m in args.methods:
        print(f"{m:<9}" + "".join(f"{summary[n].get(m, float('nan')):15.3f}" for n in summary))
    print("paper (CIFAR-10 / CIFAR-100): Random 0.35/0.52, FGSM 0.63/0.58, IGSM 0.59/0.65, CW-L2 0.95/1.00, "
          "IPGuard 0.94/1.00")
    if args.json:
        Path(args.json).write_text(json.dumps({"aruc": summary, "runs": timings, "args": vars(args)}, indent=1) + "\n")


if __name__ == "__main__":
    main()
