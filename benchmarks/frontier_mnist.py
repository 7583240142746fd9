"""Frontier stitching on MNIST (Le Merrer et al. 2020, §4): fidelity, false positives, pruning, SVD,
adversarial overwriting and cost, printed next to the paper's numbers.

    .venv/bin/python benchmarks/frontier_mnist.py --data-dir /work/shared/data/mnist [--quick] [--archs cnn,mlp,irnn]

Every trained, unmarked and marked model (with its key) and every measurement is cached under
``benchmarks/.cache/<tag>/`` so an interrupted run resumes where it stopped. Choices where the paper
is silent or where CPU time forced them are printed at the end of the run (see ``NOTES``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from modelproof.attacks import make_attack
from modelproof.attacks.result import Plausibility
from modelproof.data.splits import load_splits
from modelproof.util.errors import ConfigError
from modelproof.keys.key import OwnershipKey
from modelproof.keys.container import load_key, save_key
from modelproof.models.modelfile import load_model, save_model
from modelproof.suspects.local import TorchSuspect
from modelproof.models.training import TrainConfig, evaluate, train_new
from modelproof.references.calibration import Reference, calibrate, match_count
from modelproof.models.modelfile import weights_digest
from modelproof.verification.stats import binomial_p_value, decision_threshold
from modelproof.verification.verifier import verify
from modelproof.protections.watermarks.frontier import NULL_MATCH_PROB, NULL_SOURCE, FrontierStitching, build_key
from modelproof.models.devices import configure

ALPHA = 0.05
FP_EPS = (0.025, 0.1, 0.25, 0.5)
PLAUSIBLE = Plausibility(max_drop=None, min_accuracy=0.95)  # the paper's §4.4 bound
PAPER_FIDELITY = {"cnn": "<= 0.4 (issue bound)", "mlp": "0.8", "irnn": "~0"}
PAPER_FP = {0.025: "some", 0.1: "some", 0.25: "not stated", 0.5: "none"}
# Table 1 / Table 2: rate -> (K elements removed, stdev, extraction rate, accuracy after)
PAPER_PRUNE = {"cnn": {0.25: (0.053, 0.229, 1.0, 0.983), 0.5: (0.263, 0.562, 1.0, 0.984),
                       0.75: (3.579, 2.479, 1.0, 0.983), 0.85: (34.0, 9.298, 0.789, 0.936)},
               "mlp": {0.25: (0.360, 0.700, 1.0, 0.951), 0.5: (0.704, 0.724, 1.0, 0.947),
                       0.75: (9.615, 4.392, 1.0, 0.915), 0.8: (24.438, 5.501, 1.0, 0.877)}}
PAPER_SVD = {"cnn": {0.25: (1.867, 1.457, 1.0, 0.987), 0.5: (20.143, 4.721, 1.0, 0.885),
                     0.75: (69.643, 3.296, 0.0, 0.426), 0.9: (83.714, 3.989, 0.0, 0.255)},
             "mlp": {0.25: (0.385, 0.898, 1.0, 0.973), 0.5: (5.760, 2.697, 1.0, 0.966),
                     0.75: (48.423, 5.742, 0.077, 0.953), 0.9: (83.760, 6.346, 0.0, 0.157)}}
PAPER_OVERWRITE = {"cnn": (17.842, 3.594, 1.0, 0.983), "irnn": (37.423, 3.931, 0.884, 0.989),
                   "mlp": (27.741, 5.749, 1.0, 0.972)}
NOTES = [
    "models: the Keras mnist_cnn / mnist_mlp (and row-IRNN) of modelproof.models, trained with Adam (lr 1e-3, "
    "batch 128) for --epochs epochs on the 42,000-image owner split (the paper: 60,000 images, 10 epochs)",
    "unmarked models: same recipe and data, other seeds (initialisation and batch order)",
    "marking: FrontierStitching(eps=0.25, linf, |K|=100, Adam lr 1e-4 = a tenth of training, 10 key inputs + "
    "--embed-batch training images per step, an epoch = one pass over the key, cap 100 epochs); key sources are "
    "owner (training) images, so the test set is untouched",
    "false positives: keys at eps != 0.25 are built from the unmarked base model (Algorithm 1, seeds of the "
    "markings) but not embedded; their labels are the true labels, so embedding would not change the distance",
    "attacks: modelproof.attacks (prune-weights: global magnitude over conv+linear weights, no retraining; "
    "svd: rank removed per layer, head kept exact, no retraining; overwrite: 1,000 FGSM (eps 0.25) adversaries "
    "of attacker images, true labels, 5 epochs Adam 1e-4). IRNN: pruning/SVD skipped (its recurrent weights "
    "are not Linear/Conv layers, and the paper ran SVD on CNN and MLP only)",
    f"extraction = the paper's exact binomial test on null 1/2 at alpha={ALPHA}",
    "calibration: modelproof.references.calibration.calibrate (prediction bound) on the first half (rounded up) of the "
    "unmarked nets of every architecture; a suspect is then claimed with at least the 'claim if' matches of 100",
]


def log(msg: str) -> None:
    print(time.strftime("%H:%M:%S"), msg, file=sys.stderr, flush=True)


class Store:
    """Measurements persisted to a JSON file after each new one (so a killed run resumes)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data: dict = json.loads(path.read_text()) if path.is_file() else {}

    def get(self, name: str, compute: Callable[[], dict]) -> dict:
        if name not in self.data:
            self.data[name] = compute()
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps(self.data, indent=1, sort_keys=True))
            tmp.replace(self.path)
        return self.data[name]


def trained(arch: str, seed: int, splits, args, store: Store, cache: Path):
    """A model trained on the owner split with ``seed`` (cached), and its training record."""
    path = cache / f"{arch}-s{seed}.safetensors"

    def train() -> dict:
        log(f"training {arch} seed {seed} ({args.epochs} epochs)")
        config = TrainConfig(epochs=args.epochs, batch_size=128, lr=1e-3, optimizer="adam")
        model, rep = train_new(arch, splits.owner, config, seed=seed)
        save_model(model, path, dataset=args.dataset)
        return {"seconds": rep.seconds, "accuracy": evaluate(model, splits.test)}

    info = store.get(f"train/{arch}/{seed}", train)
    return load_model(path), info


def marked(arch: str, i: int, base, splits, args, store: Store, cache: Path) -> tuple:
    """Marking ``i`` of the base model: (protected model, key, report), cached."""
    folder = cache / f"{arch}-mark{i}"

    def mark() -> dict:
        log(f"marking {arch} #{i}")
        fs = FrontierStitching(eps=args.eps, norm="linf", key_size=100, lr=1e-4, batch_size=args.embed_batch,
                               key_per_batch=10, max_epochs=100)
        result = fs.protect(base, splits.owner, seed=i, test=splits.test)
        folder.mkdir(parents=True, exist_ok=True)
        save_model(result.model, folder / "model.safetensors", dataset=args.dataset)
        save_key(result.key, folder / "key.mpkey")
        log(f"  {result.report['epochs']} epochs, accuracy {result.report['accuracy_before']:.4f} -> "
            f"{result.report['accuracy_after']:.4f}")
        return dict(result.report)

    report = store.get(f"mark/{arch}/{i}", mark)
    return load_model(folder / "model.safetensors"), load_key(folder / "key.mpkey"), report


def paper_test(key: OwnershipKey, suspect) -> tuple[int, float]:
    """The paper's Algorithm 2 on the key's own null (1/2): matches and the exact binomial p-value.

    ``verify`` never claims ownership with an uncalibrated frontier key; the paper's test is applied
    directly here to reproduce its figures.
    """
    matches = match_count(key, suspect)
    return matches, binomial_p_value(matches, len(key), key.null_match_prob)


def check(key: OwnershipKey, model) -> dict:
    """Matches, key elements lost and the paper's verdict at ALPHA for one suspect model."""
    matches, p = paper_test(key, TorchSuspect(model))
    return {"matches": matches, "lost": len(key) - matches, "owned": p < ALPHA, "p": p}


def mean_sd(xs: list[float]) -> tuple[float, float]:
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def table(title: str, headers: list[str], rows: list[list]) -> None:
    cells = [[str(c) for c in r] for r in [headers, *rows]]
    widths = [max(len(r[j]) for r in cells) for j in range(len(headers))]
    print(f"\n{title}")
    for n, r in enumerate(cells):
        print("  " + " | ".join(c.ljust(w) for c, w in zip(r, widths)))
        if n == 0:
            print("  " + "-+-".join("-" * w for w in widths))


def fp_key(base, arch: str, eps: float, i: int, splits, store: Store, cache: Path) -> OwnershipKey | None:
    """The unembedded Algorithm-1 key of marking seed ``i`` at ``eps`` (None if eps cannot supply one)."""
    path = cache / f"{arch}-fpkey-eps{eps}-{i}.mpkey"

    def build() -> dict:
        try:
            draw = build_key(base, splits.owner, key_size=100, eps=eps, gen=torch.Generator().manual_seed(i))
        except ConfigError as exc:
            return {"error": str(exc)}
        key = OwnershipKey(inputs=draw.inputs, labels=draw.labels, method="frontier-stitching",
                           params={"eps": eps, "key_size": 100}, num_classes=splits.num_classes,
                           input_shape=splits.input_shape,
                           null_match_prob=NULL_MATCH_PROB, null_source=NULL_SOURCE, model_digest="0" * 64)
        save_key(key, path)
        return {"seconds": draw.seconds}

    info = store.get(f"fpkey/{arch}/{eps}/{i}", build)
    return None if "error" in info else load_key(path)


def robustness(kind: str, rates: dict, arch: str, marks: list, splits, store: Store, seed: int = 0) -> list[list]:
    """Rows of a pruning / SVD table for ``arch``: ours beside the paper's."""
    rows = []
    for rate, paper in rates.items():
        res = []
        for i, (model, key, _) in enumerate(marks):
            def run(model=model, key=key) -> dict:
                attack = make_attack("prune-weights", rate=rate, retrain=False) if kind == "prune" \
                    else make_attack("svd", rate=rate)
                out = attack.attack(model, splits.attacker, seed=seed)
                return {**check(key, out), "accuracy": evaluate(out, splits.test)}
            res.append(store.get(f"{kind}/{arch}/{rate}/{i}", run))
        lost_m, lost_sd = mean_sd([r["lost"] for r in res])
        acc = statistics.fmean(r["accuracy"] for r in res)
        rate_ok = statistics.fmean(r["owned"] for r in res)
        rows.append([arch.upper(), rate, f"{lost_m:.2f}/100", f"{lost_sd:.2f}", f"{rate_ok:.3f}", f"{acc:.4f}",
                     "yes" if PLAUSIBLE(1.0, acc) else "no",
                     f"{paper[0]:.3f}/100", f"{paper[1]:.3f}", f"{paper[2]:.3f}", f"{paper[3]:.3f}"])
    return rows


def calibration(archs: list[str], marks: dict, unmarked: dict, references: int) -> list[list]:
    """The paper's 1/2 null against one calibrated on ``references`` unmarked nets of every architecture.

    The remaining unmarked nets are held out: they are the independent suspects that must not be
    claimed. The marked model must still be.
    """
    refs = [Reference(TorchSuspect(u[0]), f"{a} ref {j}", a, weights_digest(u[0]))
            for a in archs for j, u in enumerate(unmarked[a][:references])]
    held = [TorchSuspect(u[0], identity=f"{a} held {j}") for a in archs for j, u in enumerate(unmarked[a][references:])]
    rows = []
    for arch in archs:
        nulls, need, paper_claims, claims, owned = [], [], 0, 0, 0
        for model, key, _ in marks[arch]:
            cal = calibrate(key, refs)
            nulls.append(cal.null_match_prob)
            need.append(decision_threshold(len(cal), cal.null_match_prob, ALPHA))
            paper_claims += sum(paper_test(key, h)[1] < ALPHA for h in held)
            claims += sum(verify(cal, h, alpha=ALPHA).decision == "owned" for h in held)
            owned += verify(cal, TorchSuspect(model), alpha=ALPHA).decision == "owned"
        trials = len(marks[arch]) * len(held)
        rows.append([arch.upper(), len(refs), f"{min(nulls):.3f}-{max(nulls):.3f}", f">= {min(need)}-{max(need)}",
                     f"{paper_claims}/{trials}", f"{claims}/{trials}", f"{owned}/{len(marks[arch])}"])
    return rows


def overwrite(model, key: OwnershipKey, splits, seed: int) -> dict:
    """Table 3: fine-tune on 1,000 fresh FGSM adversaries of the attacker's images; measure the key."""
    out = make_attack("overwrite", n=1000, eps=0.25).attack(model, splits.attacker, seed=seed)
    return {**check(key, out), "accuracy": evaluate(out, splits.test)}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", type=Path, default=Path("/work/shared/data/mnist"))
    ap.add_argument("--dataset", default="mnist", help="mnist; digits (with --size 28) for a smoke test")
    ap.add_argument("--size", type=int, default=None)
    ap.add_argument("--eps", type=float, default=0.25, help="FGSM step of the markings (the paper: 0.25)")
    ap.add_argument("--archs", default="cnn,mlp")
    ap.add_argument("--markings", type=int, default=5)
    ap.add_argument("--unmarked", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=2, help="training epochs of every model")
    ap.add_argument("--embed-batch", type=int, default=64, help="training images per embedding step")
    ap.add_argument("--cache", type=Path, default=Path(__file__).parent / ".cache")
    ap.add_argument("--quick", action="store_true", help="2 markings, 2 unmarked models, 1 epoch, CNN and MLP")
    ap.add_argument("--device", default="cpu", help="cpu, cuda, mps or auto (cuda when available)")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    args = ap.parse_args(argv)
    configure(args.device, args.threads or torch.get_num_threads())  # models are built and loaded on the device
    if args.quick:
        args.markings, args.unmarked, args.epochs = 2, 2, 1
    archs = [a.strip() for a in args.archs.split(",") if a.strip()]
    tag = f"{args.dataset}-e{args.epochs}-b{args.embed_batch}" + ("" if args.eps == 0.25 else f"-eps{args.eps:g}")
    cache = args.cache / tag
    cache.mkdir(parents=True, exist_ok=True)
    store = Store(cache / "results.json")
    start = time.perf_counter()
    splits = load_splits(args.dataset, args.data_dir, size=args.size, seed=0)
    log(f"{args.dataset}: {len(splits.owner)} owner / {len(splits.attacker)} attacker / {len(splits.test)} test; cache {cache}")

    bases, unmarked, marks = {}, {}, {}
    for arch in archs:
        bases[arch] = trained(arch, 0, splits, args, store, cache)
        unmarked[arch] = [trained(arch, 100 + j, splits, args, store, cache) for j in range(args.unmarked)]
        marks[arch] = [marked(arch, i, bases[arch][0], splits, args, store, cache) for i in range(args.markings)]

    rows = []
    for arch in archs:
        before = bases[arch][1]["accuracy"]
        drops = [100 * (before - m[2]["accuracy_after"]) for m in marks[arch]]
        epochs = [m[2]["epochs"] for m in marks[arch]]
        d_m, d_sd = mean_sd(drops)
        rows.append([arch.upper(), f"{before:.4f}", f"{d_m:+.2f} +- {d_sd:.2f}", f"{max(drops):+.2f}",
                     f"{statistics.fmean(epochs):.0f} ({min(epochs)}-{max(epochs)})",
                     sum(m[2]["attempts"] > 1 for m in marks[arch]), PAPER_FIDELITY[arch]])
    table(f"Fidelity (Fig. 4): |K|=100, eps={args.eps:g}, {args.markings} markings; drop = points of test accuracy lost",
          ["net", "acc before", "drop mean +- sd", "worst", "embed epochs", "re-drawn", "paper drop"], rows)

    rows = []
    for arch in archs:
        for eps in FP_EPS:
            keys = [fp_key(bases[arch][0], arch, eps, i, splits, store, cache) for i in range(args.markings)]
            if any(k is None for k in keys):
                why = "true" if any("increase eps" in store.data[f"fpkey/{arch}/{eps}/{i}"].get("error", "")
                                    for i in range(args.markings)) else "false"
                rows.append([arch.upper(), "*", eps, f"no key: too few {why} adversaries", "", "", PAPER_FP[eps]])
                continue
            for other in archs:
                res = [store.get(f"fp/{arch}/{eps}/{i}/{other}/{j}", lambda k=k, u=u: check(k, u[0]))
                       for i, k in enumerate(keys) for j, u in enumerate(unmarked[other])]
                dist = sorted(r["lost"] / 100 for r in res)
                rows.append([arch.upper(), other.upper(), eps, f"{dist[0]:.2f} / {statistics.median(dist):.2f} / "
                             f"{dist[-1]:.2f}", f"{sum(r['owned'] for r in res)}/{len(res)}", "< 0.42",
                             PAPER_FP[eps]])
    table(f"False positives (Fig. 6): keys of the marked net vs {args.unmarked} unmarked nets each, "
          f"{args.markings} keys per eps", ["key from", "unmarked", "eps", "Hamming min / median / max",
                                            "false claims p<.05", "claim if", "paper FPs"], rows)

    references = (args.unmarked + 1) // 2
    if args.unmarked - references > 0:
        table(f"Calibration: null = the prediction bound (modelproof.references.calibration) of {references} unmarked net(s) of each "
              f"architecture, the other {args.unmarked - references} of each held out; keys of the {args.markings} "
              "markings",
              ["key from", "references", "calibrated null", "claim if matches", "held-out claims, null 1/2",
               "held-out claims, calibrated", "marked owned"], calibration(archs, marks, unmarked, references))

    prune_rows, svd_rows = [], []
    for arch in archs:
        if arch in PAPER_PRUNE:
            prune_rows += robustness("prune", PAPER_PRUNE[arch], arch, marks[arch], splits, store)
            svd_rows += robustness("svd", PAPER_SVD[arch], arch, marks[arch], splits, store)
    heads = ["net", "rate", "K lost", "sd", "extraction", "acc after", "plausible", "paper lost", "paper sd",
             "paper extr.", "paper acc"]
    table("Pruning (Table 1): magnitude pruning, no retraining", heads, prune_rows)
    table("SVD compression (Table 2)", heads, svd_rows)

    rows = []
    for arch in archs:
        res = [store.get(f"overwrite/{arch}/{i}", lambda m=m, i=i: overwrite(m[0], m[1], splits, i))
               for i, m in enumerate(marks[arch])]
        lost_m, lost_sd = mean_sd([r["lost"] for r in res])
        paper = PAPER_OVERWRITE[arch]
        rows.append([arch.upper(), f"{lost_m:.2f}", f"{lost_sd:.2f}", f"{statistics.fmean(r['owned'] for r in res):.3f}",
                     f"{statistics.fmean(r['accuracy'] for r in res):.4f}",
                     f"{paper[0]:.3f}", f"{paper[1]:.3f}", f"{paper[2]:.3f}", f"{paper[3]:.3f}"])
    table("Adversarial fine-tuning with 1,000 new adversaries (Table 3)",
          ["net", "K lost", "sd", "extraction", "acc after", "paper lost", "paper sd", "paper extr.", "paper acc"], rows)

    rows = []
    for arch in archs:
        reps = [m[2] for m in marks[arch]]
        rows.append([arch.upper(), f"{bases[arch][1]['seconds']:.0f} ({args.epochs} ep)",
                     f"{statistics.fmean(r['key_seconds'] for r in reps):.1f}",
                     f"{statistics.fmean(r['embed_seconds'] for r in reps):.1f}",
                     f"{statistics.fmean(r['embed_seconds'] for r in reps) / bases[arch][1]['seconds']:.2f}"])
    table("Cost (seconds, this machine; the paper: embedding 'as complex as fine-tuning on K', no figures)",
          ["net", "training", "key generation", "embedding", "embedding / training"], rows)
    print("\nChoices:\n" + "\n".join(f"  - {n}" for n in NOTES))
    log(f"done in {time.perf_counter() - start:.0f} s (cached steps not counted)")


if __name__ == "__main__":
    main()
