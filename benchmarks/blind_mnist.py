"""The blind watermark (Li et al., ACSAC 2019) on MNIST: the acceptance run of issue 13 (CPU, 1 thread).

Usage: python benchmarks/blind_mnist.py [MNIST_DIR] [--epochs E] [--matrix-epochs M] [--json FILE]
       python benchmarks/blind_mnist.py [MNIST_DIR] --finetune-only F [--json FILE]   (mode="finetune")

What runs (reduced from the paper's 100 epochs to fit about 75 minutes of one thread):

- hosts LeNet-1, LeNet-3, LeNet-5 on the owner split (42,000 images; 18,000 are the attacker's),
  watermarked from scratch by Algorithm 1 for E epochs (default 30; the paper's optimisers, loss
  weights 3/5/0.1/0.01, key = 1% of the owner images = 420 key samples; the host rate /10 after E/3
  and 2E/3 epochs, the paper's 40 and 80 of 100 compressed), and the same host trained clean for E
  epochs with the same SGD and schedule (lr 0.1, momentum 0.9, wd 5e-4, batch 100): fidelity,
  curves per epoch, wall time of both (cost ratio), key accuracy before/after.
- independent models: the three clean hosts, LeNet-5 with seeds 1 and 2, a random forest (20 trees,
  first 10,000 owner images); each key verified against each (fixed test, alpha 0.01).
- robustness (LeNet-5 host): fine-tuning on 80% of the test set for 100 epochs (Adam 1e-4, batch 64,
  the finetune-small attack's settings), key accuracy every 10 epochs, test accuracy on the other
  20%; removal attacks from modelproof.attacks on the attacker's split: prune-weights and
  prune-filters (auto: strongest rate within 3 points, 1 retraining epoch per rate, for time), FTAL
  and RTAL (10 epochs, lr 1e-3), extract (same architecture on the victim's labels, 10 epochs).
- unforgeability: (a) each key sample's difference x_key - x added to other owner images, asked of
  the LeNet-5 host, beside Zhang content and noise triggers (fine-tuned into the clean LeNet-5)
  applied to new images; (b) five LeNet-5 watermarked with secrets s0..s4 and seeds 0..4 (same
  logo, M epochs): accuracy of host j on encoder i's key (its own targets), and on encoder i applied
  to host j's own sources with host j's targets (a forger who knows sources and targets).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import torch

from modelproof.attacks import make_attack, run_attack
from modelproof.data.splits import load_splits
from modelproof.models import build_model
from modelproof.protections.base import make_protection
from modelproof.suspects.local import TorchSuspect, train_random_forest
from modelproof.models.training import TrainConfig, evaluate, fit, predict
from modelproof.verification.verifier import verify
from modelproof.protections.watermarks import patterns
from modelproof.protections.watermarks.blind import BlindWatermark
from modelproof.protections.watermarks.blind.imperceptibility import grid_png
from modelproof.protections.watermarks.blind.joint import LossWeights
from modelproof.models.devices import configure

ARCHS = ("lenet1", "lenet3", "lenet5")
SECRET = "blind-mnist"


def acc_on(model, inputs, labels) -> float:
    return float((predict(model, inputs) == labels).float().mean())


def lr_step(epochs: int) -> int:
    """Epochs between the host's /10 rate drops: the paper's 40 and 80 of 100 epochs, compressed to a
    third and two thirds of ``epochs`` so that the clean host's ``step`` schedule drops at the same steps."""
    return epochs // 3 if epochs >= 3 else epochs


def clean_host(arch: str, splits, epochs: int, seed: int) -> tuple[torch.nn.Module, float, list[float]]:
    """The host trained without the watermark, same SGD and schedule as Algorithm 1; (model, seconds, curve)."""
    model = build_model(arch, 10, splits.input_shape, seed=seed)
    curve, paused = [], [0.0]

    def record(m) -> bool:
        tick = time.perf_counter()
        curve.append(round(evaluate(m, splits.test), 4))
        paused[0] += time.perf_counter() - tick
        return False

    # "step": /10 after a third and two thirds of the steps, as lr_step(epochs) for Algorithm 1 when
    # epochs is a multiple of 3
    config = TrainConfig(epochs=epochs, batch_size=100, lr=0.1, optimizer="sgd", momentum=0.9, weight_decay=5e-4,
                         schedule="step" if epochs >= 3 else "none")
    report = fit(model, splits.owner, config, seed=seed, until=record)
    return model, report.seconds - paused[0], curve


WEIGHTS = {"paper": {"alpha": 3.0, "beta": 5.0, "gamma": 0.1, "delta": 0.01},  # section 5.1
           "authors": dataclasses.asdict(LossWeights())}  # the authors' released script: the default


def watermark(arch: str, splits, epochs: int, seed: int, secret: str = SECRET, weights: str = "authors"):
    model = build_model(arch, 10, splits.input_shape, seed=seed)
    return make_protection("blind", secret=secret, mode="scratch", epochs=epochs, lr_step=lr_step(epochs),
                           **WEIGHTS[weights]).protect(
        model, splits.owner, seed=seed, test=splits.test)


def verdict_row(key, suspect) -> dict:
    v = verify(key, suspect)
    return {"matches": v.matches, "queries": v.queries, "p_value": v.p_value, "decision": v.decision}


def robustness(result, splits, out: dict) -> None:
    key, host = result.key, result.model
    n = int(len(splits.test) * 0.8)
    perm = torch.randperm(len(splits.test), generator=torch.Generator().manual_seed(0))
    small, held = splits.test.subset(perm[:n]), splits.test.subset(perm[n:])
    model = __import__("copy").deepcopy(host)
    table = [{"epochs": 0, "key_accuracy": acc_on(model, key.inputs, key.labels), "test_accuracy": evaluate(model, held)}]

    def record(m) -> bool:
        if (len(table)) * 10 == record.epoch + 1:
            table.append({"epochs": record.epoch + 1, "key_accuracy": acc_on(m, key.inputs, key.labels),
                          "test_accuracy": evaluate(m, held)})
        record.epoch += 1
        return False

    record.epoch = 0
    fit(model, small, TrainConfig(epochs=100, batch_size=64, lr=1e-4, optimizer="adam"), seed=0, until=record)
    out["finetune_small"] = table
    print("  finetune-small done", flush=True)
    attacks = [("prune-weights", {"epochs": 1}), ("prune-filters", {"epochs": 1}), ("ftal", {"lr": 1e-3}),
               ("rtal", {"lr": 1e-3}), ("extract", {"epochs": 10})]
    rows = []
    for name, params in attacks:
        res = run_attack(make_attack(name, **params), host, splits, seed=0)
        rows.append({"attack": name, "params": params, "accuracy_before": res.accuracy_before,
                     "accuracy_after": res.accuracy_after, "plausible": res.plausible,
                     "key_accuracy": acc_on(res.model, key.inputs, key.labels),
                     **verdict_row(key, TorchSuspect(res.model)), "seconds": res.seconds,
                     "strength": {k: v for k, v in res.details.items() if isinstance(v, (int, float, str))}})
        print(f"  {name}: key acc {rows[-1]['key_accuracy']:.3f}", flush=True)
    out["removal"] = rows


def difference_transfer(result, splits, clean5, out: dict) -> None:
    key, host = result.key, result.model
    secret = result.secret
    diffs = key.inputs - secret.sources
    used = {x.numpy().tobytes() for x in secret.sources}
    pool = torch.randperm(len(splits.owner), generator=torch.Generator().manual_seed(7))
    others = [i for i in pool.tolist() if splits.owner.images[i].numpy().tobytes() not in used][:len(key)]
    new = (splits.owner.images[others] + diffs).clamp(0, 1)
    transfer = acc_on(host, new, key.labels)
    row = {"blind_difference_transfer": transfer, "blind_key_accuracy": acc_on(host, key.inputs, key.labels),
           "blind_sources_answered_target": acc_on(host, secret.sources, key.labels)}
    for name in ("zhang-content", "zhang-noise"):
        z = make_protection(name, secret=SECRET, epochs=3).protect(clean5, splits.owner, seed=0, test=splits.test)
        target = int(z.key.labels[0])
        fresh = splits.test.images[splits.test.labels != target][:500]
        prot = make_protection(name, secret=SECRET)
        trig = prot.triggers(fresh, patterns.secret_generator("forger", "blocks"))
        row[f"{name}_key_accuracy"] = acc_on(z.model, z.key.inputs, z.key.labels)
        row[f"{name}_new_images_answered_target"] = float((predict(z.model, trig) == target).float().mean())
    out["difference_images"] = row
    print("  difference images done", flush=True)


def encoder_matrix(splits, epochs: int, out: dict) -> None:
    runs = [watermark("lenet5", splits, epochs, seed=i, secret=f"s{i}") for i in range(5)]
    own = [[acc_on(runs[j].model, runs[i].key.inputs, runs[i].key.labels) for j in range(5)] for i in range(5)]
    forged = [[acc_on(runs[j].model, runs[i].secret.encode(runs[j].secret.sources), runs[j].key.labels)
               for j in range(5)] for i in range(5)]
    out["encoder_matrix"] = {"epochs": epochs, "own_keys": own, "forger_knows_sources_and_targets": forged,
                             "test_accuracy": [evaluate(r.model, splits.test) for r in runs]}


def finetune_mode(splits, epochs: int, finetune_epochs: int) -> dict:
    """mode="finetune": a clean LeNet-5 (E epochs) marked in F more epochs (host rate 0.01)."""
    clean, _, _ = clean_host("lenet5", splits, epochs, seed=0)
    res = make_protection("blind", secret=SECRET, mode="finetune", epochs=finetune_epochs,
                          lr_step=lr_step(finetune_epochs)).protect(
        clean, splits.owner, seed=0, test=splits.test)
    r = res.report
    return {"arch": "lenet5", "clean_epochs": epochs, "finetune_epochs": finetune_epochs,
            "accuracy_before": evaluate(clean, splits.test), "accuracy_after": evaluate(res.model, splits.test),
            "key_accuracy": r["key_accuracy_trained"], "key_accuracy_unprotected": r["key_accuracy_unprotected"],
            "key_curve": [round(h["key_accuracy"], 4) for h in r["history"]], "null_match_prob": res.key.null_match_prob,
            "probe_hits": r["probe_hits"], "imperceptibility": r["imperceptibility"], "seconds": r["embed_seconds"],
            **verdict_row(res.key, TorchSuspect(res.model))}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("mnist", nargs="?", default="../shared/data/mnist")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--matrix-epochs", type=int, default=9)
    ap.add_argument("--json", default="runs/blind_mnist.json")
    ap.add_argument("--png", default="runs/blind_mnist_fig8.png")
    ap.add_argument("--archs", nargs="+", default=list(ARCHS), choices=ARCHS,
                    help="hosts of the fidelity table (the rest needs lenet5)")
    ap.add_argument("--weights", default="authors", choices=list(WEIGHTS),
                    help="Eq. 15's weights: the paper's 3/5/0.1/0.01 or the authors' script's 3/5/1/0.1")
    ap.add_argument("--hosts-only", action="store_true", help="stop after the fidelity table")
    ap.add_argument("--limit", type=int, default=0, help="smoke test: keep only this many images per split")
    ap.add_argument("--finetune-only", type=int, default=0, metavar="F",
                    help="only the finetune-mode run: mark a clean LeNet-5 in F epochs")
    ap.add_argument("--device", default="cpu", help="cpu, cuda, mps or auto (cuda when available)")
    args = ap.parse_args()
    configure(args.device, 1)  # models are built and loaded on the device
    print("torch threads: 1", flush=True)
    start = time.perf_counter()
    splits = load_splits("mnist", args.mnist, seed=0)
    if args.limit:
        from modelproof.data.splits import Splits

        splits = Splits(*(part.subset(torch.arange(min(args.limit, len(part)))) for part in
                          (splits.owner, splits.attacker, splits.test)))
    out: dict = {"epochs": args.epochs, "weights": WEIGHTS[args.weights], "threads": 1, "owner": len(splits.owner), "test": len(splits.test)}
    if args.finetune_only:
        out["finetune_mode"] = finetune_mode(splits, args.epochs, args.finetune_only)
        return write(out, args.json, start)
    hosts, cleans, rows = {}, {}, []
    for arch in args.archs:
        clean, clean_s, curve = clean_host(arch, splits, args.epochs, seed=0)
        res = watermark(arch, splits, args.epochs, seed=0, weights=args.weights)
        hosts[arch], cleans[arch] = res, clean
        r = res.report
        rows.append({"arch": arch, "clean_accuracy": evaluate(clean, splits.test),
                     "watermarked_accuracy": evaluate(res.model, splits.test), "clean_curve": curve,
                     "watermarked_curve": [round(h["test_accuracy"], 4) for h in r["history"]],
                     "key_curve": [round(h["key_accuracy"], 4) for h in r["history"]],
                     "history": r["history"], "key_accuracy": r["key_accuracy_trained"], "key_size": len(res.key),
                     "fresh_key_accuracy": r.get("fresh_key_accuracy"), "fresh_true_label_rate": r.get("fresh_true_label_rate"),
                     "imperceptibility": r["imperceptibility"], "clean_seconds": clean_s,
                     "watermark_seconds": r["embed_seconds"], "cost_ratio": r["embed_seconds"] / clean_s,
                     "encoder_parameters": r["encoder_parameters"], "null_match_prob": res.key.null_match_prob,
                     "sequential_queries": verify(res.key, TorchSuspect(res.model), mode="sequential").queries,
                     **{f"own_{k}": v for k, v in verdict_row(res.key, TorchSuspect(res.model)).items()}})
        rows[-1]["drop_points"] = 100 * (rows[-1]["clean_accuracy"] - rows[-1]["watermarked_accuracy"])
        print(f"  {arch} ({time.perf_counter() - start:.0f} s): {json.dumps({k: v for k, v in rows[-1].items() if not k.endswith('curve') and k != 'history'})}", flush=True)
    out["hosts"] = rows
    if args.hosts_only or "lenet5" not in hosts:
        return write(out, args.json, start)
    grid_png(hosts["lenet5"].secret.sources, hosts["lenet5"].key.inputs, Path(args.png), rows=8)
    negatives = {f"{a} clean seed 0": TorchSuspect(cleans[a]) for a in cleans}
    for s in (1, 2):
        negatives[f"lenet5 clean seed {s}"] = TorchSuspect(clean_host("lenet5", splits, args.epochs, seed=s)[0])
    negatives["random forest"] = train_random_forest(splits.owner.subset(torch.arange(min(10000, len(splits.owner)))), seed=0)
    out["integrity"] = {arch: {name: {"key_accuracy": acc_on_suspect(hosts[arch].key, sus),
                                      **verdict_row(hosts[arch].key, sus)} for name, sus in negatives.items()}
                        for arch in hosts}
    print("  integrity done", flush=True)
    robustness(hosts["lenet5"], splits, out)
    difference_transfer(hosts["lenet5"], splits, cleans["lenet5"], out)
    encoder_matrix(splits, args.matrix_epochs, out)
    write(out, args.json, start)


def write(out: dict, path: str, start: float) -> None:
    out["seconds"] = time.perf_counter() - start
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(out, indent=1, default=str))
    print(json.dumps(out, indent=1, default=str))


def acc_on_suspect(key, suspect) -> float:
    return float((suspect.predict(key.inputs) == key.labels).float().mean())


if __name__ == "__main__":
    main()
