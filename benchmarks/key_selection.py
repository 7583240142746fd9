"""Key selection measured (issue 22.2): candidates tried/kept and the null before vs after selection.

On the bundled digits (16x16, the README's example model: the demo MLP), every method protects the
owner's model without selection and with a :class:`Selection` of judges trained here (MLPs, a CNN,
LeNet-5, LeNet-1, a random forest), at each oversampling factor asked for. The *null* is the match
rate of independent models that are NOT judges (other seeds of the same families, LeNet-3, a random
forest, extra-trees, logistic regression): mean and max over them. ``own`` is the protected model's
match rate on its key, ``ftal`` that of a copy a thief fine-tuned (all layers, 5 epochs on the
attacker's split). ``--judges 24`` uses a population as large as ``modelproof protect``'s default. ``--surrogates`` makes fingerprints keep only points a fine-tuned and a pruned
copy of the owner's model still answer with its label.

Run: ``OMP_NUM_THREADS=1 .venv/bin/python benchmarks/key_selection.py [--methods ipguard,adi] [--oversample 4,16]``
(a few minutes on 2 CPU cores for the default set).
"""

from __future__ import annotations

import argparse
import copy
import json
import time

import torch

from modelproof.data.splits import load_splits
from modelproof.experiments.demo import DEMO_CONFIG
from modelproof.models.modelfile import weights_digest
from modelproof.models.training import TrainConfig, fit, train_new
from modelproof.protections.base import make_protection
from modelproof.protections.selection import Judge, Selection, make_surrogates
from modelproof.suspects.local import SklearnSuspect, TorchSuspect, train_random_forest
from modelproof.util.errors import ConfigError

NETS = TrainConfig(epochs=15, batch_size=32, lr=0.002, optimizer="adam")
JUDGE_FAMILIES = ("mlp", "mlp", "cnn", "lenet5", "lenet1", "forest", "lenet3", "mlp")  # cycled, seeds 101, 102, ...
NULLS = (("mlp", 201), ("mlp", 202), ("cnn", 203), ("lenet5", 204), ("lenet1", 205), ("lenet3", 206))
# Small settings per method, so that the whole table takes minutes (the defaults otherwise).
PARAMS = {"ipguard": {"max_iter": 300}, "cw-l2-fingerprint": {"points": 50, "binary_steps": 4, "max_iter": 200},
          "igsm-fingerprint": {"max_iter": 300}, "frontier-stitching": {"lr": 1e-3, "key_per_batch": 5},
          "zhang-content": {"epochs": 15}, "zhang-noise": {"epochs": 15}, "zhang-unrelated": {"epochs": 15},
          "adi": {"epochs": 15}}


def sklearn_models(data, seed: int) -> list:
    """Extra-trees and logistic regression on flattened pixels (non-neural independent models)."""
    from sklearn.ensemble import ExtraTreesClassifier
    from sklearn.linear_model import LogisticRegression

    x, y = data.images.reshape(len(data), -1).numpy(), data.labels.numpy()
    out = []
    for est in (ExtraTreesClassifier(n_estimators=50, random_state=seed), LogisticRegression(max_iter=500)):
        out.append(SklearnSuspect(est.fit(x, y), data.input_shape, data.num_classes))
    return out


def match(suspect, key) -> float:
    """Share of key inputs the suspect answers with the key label."""
    return float((torch.as_tensor(suspect.predict(key.inputs)).long() == key.labels).float().mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default="ipguard,random-fingerprint,fgsm-fingerprint,igsm-fingerprint,"
                        "cw-l2-fingerprint,frontier-stitching,zhang-content,zhang-noise,zhang-unrelated,adi")
    parser.add_argument("--oversample", default="", help="comma-separated factors (default: each method's own)")
    parser.add_argument("--secret", default="bench")
    parser.add_argument("--judges", type=int, default=6, help="selection references (families cycled: MLP, MLP, "
                        "CNN, LeNet-5, LeNet-1, random forest, LeNet-3, MLP)")
    parser.add_argument("--surrogates", action="store_true", help="fingerprints: a fine-tuned and a pruned copy "
                        "of the owner's model must agree (protections.selection.make_surrogates)")
    parser.add_argument("--params", default="{}", help='JSON of extra parameters for every method, e.g. \'{"init": "RL"}\'')
    args = parser.parse_args()
    torch.set_num_threads(1)
    extra = json.loads(args.params)
    start = time.perf_counter()
    splits = load_splits("digits", size=16, seed=0)
    owner = train_new("mlp", splits.owner, DEMO_CONFIG, seed=0)[0]
    judges = []
    for i in range(args.judges):
        arch, seed = JUDGE_FAMILIES[i % len(JUDGE_FAMILIES)], 101 + i
        if arch == "forest":
            judges.append(Judge(f"forest/{seed}", None, train_random_forest(splits.owner, seed=seed)))
            continue
        model = train_new(arch, splits.owner, NETS, seed=seed)[0]
        judges.append(Judge(f"{arch}/{seed}", weights_digest(model), TorchSuspect(model), model))
    nulls = [TorchSuspect(train_new(arch, splits.owner, NETS, seed=seed)[0]) for arch, seed in NULLS]
    nulls += [train_random_forest(splits.owner, seed=207)] + sklearn_models(splits.owner, 208)
    print(f"owner mlp 16x16; {len(judges)} judges, {len(nulls)} independent non-judges; "
          f"trained in {time.perf_counter() - start:.0f} s (1 thread)\n")
    surrogates = make_surrogates(owner, splits.owner, seed=0) if args.surrogates else ()
    factors = [int(f) for f in args.oversample.split(",") if f] or [None]
    print(f"{'method':<20} {'oversample':>10} {'tried':>6} {'kept':>5} {'key':>4} {'own':>5} {'ftal':>5} "
          f"{'null mean':>9} {'null max':>8} {'key null':>8} {'s':>5}")
    for method in args.methods.split(","):
        for factor in [0] + factors:
            t0 = time.perf_counter()
            protection = make_protection(method, secret=args.secret, **{**PARAMS.get(method, {}), **extra})
            selection = None if factor == 0 else Selection(tuple(judges), oversample=factor, surrogates=surrogates)
            try:
                result = protection.protect(owner, splits.owner, seed=0, selection=selection)
            except ConfigError as exc:
                print(f"{method:<20} {factor if factor else '-':>10}  refused: {exc}")
                continue
            key = result.key
            rates = [match(s, key) for s in nulls]
            record = key.params.get("selection", {})
            own = match(TorchSuspect(result.model), key)
            stolen = copy.deepcopy(result.model)  # FTAL by a thief: all layers, 5 epochs on the attacker's data
            fit(stolen, splits.attacker, TrainConfig(epochs=5, lr=1e-3), seed=9)
            ftal = match(TorchSuspect(stolen.eval()), key)
            print(f"{method:<20} {(record.get('oversample') if factor else '-'):>10} {record.get('tried', '-'):>6} "
                  f"{record.get('kept', '-'):>5} {len(key):>4} {own:>5.2f} {ftal:>5.2f} {sum(rates) / len(rates):>9.3f} "
                  f"{max(rates):>8.3f} {key.null_match_prob:>8.3f} {time.perf_counter() - t0:>5.0f}", flush=True)


if __name__ == "__main__":
    main()
