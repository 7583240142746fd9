"""Ray et al.'s pirate and Li et al.'s key-sample detectors on MNIST / Fashion-MNIST (Tables I, II, IV, V,
Li §6.3 AUCs, and the evasion matrix of every registered protection).

Target (Ray et al. §V-A2): trained with Adam, lr 1e-4, batch 128. On this shared CPU the host is
LeNet-5 (not ResNet-34) trained on ``--train-size`` owner images for ``--epochs`` epochs, and the
Zhang watermark (four white round blocks of radius 3 on 15 training inputs, one trigger label) is
embedded by fine-tuning that clean model (modelproof's ``zhang-content``, mode ``finetune``),
not by training from scratch with the triggers. The surrogate set is a stratified 5% of the test
split; FPR is measured on the other 95%. The DCGANs are the reference's with a channel
multiplier ``--width`` (1 = reference), batch ``--gan-batch`` (reference 64: with 50 heatmaps per class
that is one update per epoch) and ``--gan-epochs`` epochs per class.

    OMP_NUM_THREADS=1 python benchmarks/evasion_mnist.py --part tables --datasets mnist --labels 0 1 2
    OMP_NUM_THREADS=1 python benchmarks/evasion_mnist.py --part li
    OMP_NUM_THREADS=1 python benchmarks/evasion_mnist.py --part matrix --methods zhang-content adi ipguard

Prints one JSON line per result and writes all results to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from modelproof.attacks.evasion import build_pirate
from modelproof.attacks.evasion.attack import TAU
from modelproof.attacks.evasion.detectors import detectability
from modelproof.attacks.evasion.metrics import time_ratio
from modelproof.attacks.evasion.pirate import surrogate_split
from modelproof.data.splits import load_splits
from modelproof.experiments.evasion import evasion_matrix, quick_params
from modelproof.models.modelfile import load_model, save_model
from modelproof.protections.base import make_protection
from modelproof.models.training import TrainConfig, evaluate, predict, train_new
from modelproof.models.devices import configure

TAUS = (0.0, 0.1, 0.3, 0.5, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20)
LI_METHODS = ("zhang-content", "zhang-noise", "zhang-unrelated", "adi", "new-label", "frontier-stitching")


def json_object(text: str) -> dict:
    """--li-params: a JSON object of objects, or a one-line usage error."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not JSON ({exc.msg}): {text!r}") from None
    if not isinstance(value, dict) or not all(isinstance(v, dict) for v in value.values()):
        raise argparse.ArgumentTypeError(f'want {{"method": {{"param": value}}}}, got {text!r}')
    return value


def emit(results: list, row: dict) -> None:
    results.append(row)
    print(json.dumps(row, default=float), flush=True)


def rates(pirate, clean, key_inputs, taus) -> dict:
    """FPR / FNR for every tau from one pass of the detector (the scores do not depend on tau)."""
    c, k = pirate.detect(clean), pirate.detect(key_inputs)
    out = {}
    for tau in taus:
        fc, fk = pirate.flagged_at(c, tau), pirate.flagged_at(k, tau)
        out[float(tau)] = (float(fc.float().mean()), 1.0 - float(fk.float().mean()))
    return out


def tables(args, ds, splits, base, surrogate, rest, results) -> None:
    tau = TAU[ds]
    runs = [(label, 4) for label in args.labels]
    if ds == "mnist" and 0 in args.labels and args.blocks:
        runs += [(0, b) for b in (1, 2, 3)]
    for label, blocks in runs:
        start = time.perf_counter()
        prot = make_protection("zhang-content", secret=f"ray-{label}-{blocks}", key_size=15, count=blocks,
                               radius=3, target=label, epochs=15, lr=1e-3).protect(base, splits.owner, seed=0)
        pirate, details = build_pirate(prot.model, surrogate, tau=tau, epochs=args.gan_epochs, width=args.width,
                                       batch_size=args.gan_batch, seed=0, quiet=True)
        sweep = rates(pirate, rest.images, prot.key.inputs, TAUS if (label, blocks) == (0, 4) and ds == "mnist"
                      else (tau, 0.0))
        row = {"table": "I" if ds == "mnist" else "II", "dataset": ds, "label": label, "blocks": blocks,
               "test_accuracy": evaluate(prot.model, splits.test),
               "trigger_accuracy": float((predict(prot.model, prot.key.inputs) == prot.key.labels).float().mean()),
               "tau": tau, "fpr": sweep[float(tau)][0], "fnr": sweep[float(tau)][1],
               "fpr_tau0": sweep[0.0][0], "fnr_tau0": sweep[0.0][1], "alphas": details["alphas"],
               "pirate_accuracy": evaluate(pirate, rest), "stolen_accuracy_rest": evaluate(prot.model, rest),
               **time_ratio(pirate, prot.model, rest.images[:256]), "seconds": time.perf_counter() - start}
        if blocks != 4:
            row["table"] = "IV"
        emit(results, row)
        if len(sweep) > 2:
            emit(results, {"table": "V", "dataset": ds, "label": label,
                           "sweep": {str(t): {"fpr": f, "fnr": n} for t, (f, n) in sweep.items()}})


def li(args, ds, splits, base, results) -> None:
    attacker = splits.attacker.subset(torch.arange(min(len(splits.attacker), round(0.1 * 60000))))
    held_out = splits.test.subset(torch.arange(len(splits.test) - 1000, len(splits.test)))
    for name in args.li_methods:
        start = time.perf_counter()
        params = args.li_params.get(name, quick_params(name))
        prot = make_protection(name, **params).protect(base, splits.owner, seed=0)
        if name == "blind":  # how well the watermark was embedded, and how visible its key samples are
            emit(results, {"table": "Li", "method": name, "params": params,
                           "key_accuracy": prot.report["key_accuracy_trained"],
                           "imperceptibility": prot.report["imperceptibility"]})
        for kind in ("mlp", "features"):
            r = detectability(prot.key, prot.model, attacker, held_out, kind=kind, max_samples=args.li_samples, seed=1)
            emit(results, {"table": "Li", "dataset": ds, "method": name, "detector": kind, "auc": r["auc"],
                           "owner_keys": r["owner_keys"], "attacker_keys": r["attacker_keys"],
                           "attacker_clean": r["attacker_clean"], "seconds": time.perf_counter() - start})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default="/work/shared/data")
    parser.add_argument("--part", choices=("tables", "li", "matrix"), default="tables")
    parser.add_argument("--datasets", nargs="+", default=["mnist"], choices=("mnist", "fashion-mnist"))
    parser.add_argument("--labels", nargs="+", type=int, default=list(range(10)))
    parser.add_argument("--blocks", action="store_true", help="also Table IV (1-3 blocks; MNIST, label 0)")
    parser.add_argument("--methods", nargs="*", default=None, help="matrix: protections (default: all)")
    parser.add_argument("--li-methods", nargs="*", default=list(LI_METHODS))
    parser.add_argument("--li-samples", type=int, default=1000)
    parser.add_argument("--li-params", type=json_object, default={}, metavar="JSON",
                        help='li: parameters per method instead of its demo settings, e.g. '
                             '\'{"blind": {"mode": "scratch", "epochs": 15}}\' (the paper\'s loss weights)')
    parser.add_argument("--train-size", type=int, default=20000)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--gan-epochs", type=int, default=100)
    parser.add_argument("--width", type=float, default=0.125)
    parser.add_argument("--gan-batch", type=int, default=8, help="DCGAN batch size (reference: 64)")
    parser.add_argument("--tau", type=float, default=None, help="matrix: tau (default: the dataset's)")
    parser.add_argument("--no-calibration", action="store_true",
                        help="matrix: keep each method's own null (default: calibrate every key on the default "
                             "reference population and self-check it, as `modelproof protect` does)")
    parser.add_argument("--out", default="/tmp/evasion_mnist.json")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, mps or auto (cuda when available)")
    args = parser.parse_args()
    configure(args.device, 1)  # models are built and loaded on the device
    print(json.dumps({"threads": torch.get_num_threads(), **vars(args)}), flush=True)
    results: list = []
    for ds in args.datasets:
        splits = load_splits(ds, Path(args.data_dir) / ds, seed=0)
        owner = splits.owner.subset(torch.arange(min(args.train_size, len(splits.owner))), name=f"{ds}/owner")
        splits = type(splits)(owner, splits.attacker, splits.test)
        start = time.perf_counter()
        cached = Path(args.out).with_name(f"base_{ds}_{len(owner)}_{args.epochs}.safetensors")
        if cached.is_file():  # the same seeded training, written by an earlier run
            base = load_model(cached)
        else:
            base, _ = train_new("lenet5", owner, TrainConfig(epochs=args.epochs, batch_size=128, lr=1e-4), seed=0)
            save_model(base, cached, dataset=ds)
        emit(results, {"dataset": ds, "base_test_accuracy": evaluate(base, splits.test),
                       "train_images": len(owner), "train_seconds": time.perf_counter() - start})
        surrogate, rest = surrogate_split(splits.test, 0.05, seed=0)
        if args.part == "tables":
            tables(args, ds, splits, base, surrogate, rest, results)
        elif args.part == "li":
            li(args, ds, splits, base, results)
        else:
            kwargs = {"tau": TAU[ds] if args.tau is None else args.tau, "epochs": args.gan_epochs,
                      "width": args.width, "batch_size": args.gan_batch, "quiet": True}
            references = None
            if not args.no_calibration:  # the default population, as `modelproof protect` calibrates
                from modelproof.references.population import train_references

                references, seconds = train_references(splits.owner, owner_arch="lenet5", seed=0, quiet=False)
                emit(results, {"table": "references", "dataset": ds, "count": len(references), "seconds": seconds})
            evasion_matrix(base, splits.owner, surrogate, rest, names=args.methods, pirate_kwargs=kwargs,
                           references=references,
                           log=lambda row: emit(results, {"table": "matrix", "dataset": ds, **row}))
        Path(args.out).write_text(json.dumps(results, indent=1, default=float))


if __name__ == "__main__":
    main()
