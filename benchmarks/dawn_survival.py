"""DAWN against label-only extraction, and a weight watermark against FTAL and pruning (``extraction_survival.py --dawn``).

The owner serves one model: LeNet-5 (or the Keras CNN) carrying a weight watermark (``--weight-method``,
default ``zhang-content``, chosen and calibrated as ``protect`` does), behind the DAWN answer rule
(:class:`~modelproof.protections.watermarks.dawn.DawnRule`, rate ``--dawn-rate``). Two threats:

- a thief who only has the API: label-only students of other architectures trained on ``--queries``
  answers to images of the attacker's split, each thief through its own API client (the victim is a
  :class:`~modelproof.protections.watermarks.dawn.DawnModel`, queried through the extraction attack's
  ``QueryCounter``); the owner builds each thief's key from its log
  (:func:`~modelproof.references.dawn_key.dawn_key`, calibrated on the population's calibration
  references) and verifies the student with it;
- a thief who holds the weights (FTAL, 50% pruning with retraining): never asks the API, so only the
  weight watermark can answer it.

One combined verdict per suspect over the two keys (its DAWN key, when the thief has a log, and the
weight key): Bonferroni, each key tested at alpha / 2 = 0.005, so the family-wise false-claim rate
stays at most 0.01. Every DAWN key and the weight key are verified against each held-out model
(``benchmarks/heldout.py``); a false claim is any of them saying "owned" at its level.

The owner's cost: the share of a normal client's answers altered and the API's test accuracy as
clients see it (the test split through the rule), against the model's own.
"""

from __future__ import annotations

import time

from modelproof.attacks.registry import make_attack
from modelproof.attacks.result import run_attack
from modelproof.models.modelfile import weights_digest
from modelproof.models.training import evaluate, predict
from modelproof.protections.base import make_protection
from modelproof.protections.watermarks.dawn import DawnModel, DawnRule, PairSink
from modelproof.protections.watermarks.dawn_log import log_pairs
from modelproof.references.dawn_key import dawn_key
from modelproof.references.protect import ReferenceOptions, protect_model
from modelproof.suspects.local import TorchSuspect
from modelproof.util.errors import ModelproofError
from modelproof.verification.verifier import verify

ALPHA = 0.01
LEVEL = ALPHA / 2  # Bonferroni over the two keys of one combined verdict
SECRET = "dawn-survival-benchmark-secret"  # a benchmark's secret (never used to serve anything)
WEIGHT_ATTACKS = (("FTAL", "ftal", {"epochs": 5}), ("prune 50% + retrain", "prune-weights", {"rate": 0.5, "retrain": True,
                                                                                            "epochs": 3}))


def cell(key, suspect) -> tuple[str, bool]:
    """'owned 12/25' style text for ``key`` on ``suspect`` at LEVEL, and whether it is owned."""
    if key is None:
        return "-", False
    v = verify(key, suspect, alpha=LEVEL)
    return f"{v.decision} {v.matches}/{v.queries}", v.decision == "owned"


def api_cost(model, rule: DawnRule, test) -> tuple[float, float, float]:
    """(share of answers altered, the model's test accuracy, the API's test accuracy) for a normal client."""
    served = DawnModel(model, rule)
    api = predict(served, test.images)
    own = predict(model, test.images)
    return (len(served.sink.pairs) / max(served.sink.answered, 1), float((own == test.labels).float().mean()),
            float((api == test.labels).float().mean()))


def dawn_block(args, splits, owner, arch: str, students: tuple[str, ...], refs, negs) -> None:
    """Print the DAWN table (see the module docstring)."""
    t0 = time.perf_counter()
    protection = make_protection(args.weight_method)
    protection.set_secret(f"{SECRET}/{args.weight_method}")
    outcome = protect_model(protection, owner, splits, seed=args.seed, dataset=args.dataset, owner_arch=arch,
                            options=ReferenceOptions())
    wkey, model = outcome.final.key, outcome.result.model
    digest, base = weights_digest(model), evaluate(model, splits.test)
    print(f"\nweight watermark {args.weight_method}: key of {len(wkey)}, null {wkey.null_match_prob:.3g}, "
          f"test accuracy {outcome.accuracy_before:.4f} -> {base:.4f} ({time.perf_counter() - t0:.0f} s)")
    print(f"verdicts at alpha {LEVEL:g} per key (Bonferroni over DAWN + weight key: family-wise {ALPHA:g})")
    for rate in args.dawn_rate:
        rule = DawnRule(SECRET, rate)
        share, own_acc, api_acc = api_cost(model, rule, splits.test)
        print(f"\n### DAWN rate {rate:g}: {share:.4f} of a normal client's answers altered (test split); accuracy "
              f"{own_acc:.4f} (model) -> {api_acc:.4f} (API)\n")
        print("| suspect | queries | test acc (loss) | DAWN pairs -> key | DAWN key | weight key | combined |")
        print("|---|---|---|---|---|---|---|")
        print(f"| protected model | 0 | {base:.4f} | - | - | {cell(wkey, TorchSuspect(model))[0]} | - |")
        dkeys = []
        for queries in args.queries:
            for student in students:
                t1 = time.perf_counter()
                sink = PairSink()
                attack = make_attack("extract", student=student, answers="labels", queries=queries,
                                     epochs=args.student_epochs)
                # perform, not run_attack: its accuracy check would ask the API too, into this thief's log
                result = attack.perform(DawnModel(model, rule, sink), splits.attacker, seed=args.seed)
                client = f"thief-{student}-{queries}"
                pairs = log_pairs(sink.pairs, client=client, classes=splits.num_classes, model=digest, rate=rate)
                try:
                    made = dawn_key(pairs, refs, client=client, alpha=LEVEL, served=TorchSuspect(model))
                    dkey, keynote = made.key, f"{len(pairs)} -> {len(made.key)}, null {made.key.null_match_prob:.3g}"
                    dkeys.append(dkey)
                except ModelproofError as exc:
                    dkey, keynote = None, f"{len(pairs)}: refused ({str(exc)[:90]})"
                suspect = TorchSuspect(result.model)
                dtext, downed = cell(dkey, suspect)
                wtext, wowned = cell(wkey, suspect)
                acc = evaluate(result.model, splits.test)
                print(f"| label-only student {student} | {result.queries} | {acc:.4f} ({100 * (base - acc):+.2f} pt) | "
                      f"{keynote} | {dtext} | {wtext} | {'OWNED' if downed or wowned else 'not owned'} "
                      f"({time.perf_counter() - t1:.0f} s) |", flush=True)
        for label, name, params in () if args.skip_weight_attacks else WEIGHT_ATTACKS:
            result = run_attack(make_attack(name, **params), model, splits, seed=args.seed)
            suspect = TorchSuspect(result.model)
            wtext, wowned = cell(wkey, suspect)
            dtexts = [cell(k, suspect) for k in dkeys]
            acc = result.accuracy_after
            print(f"| {label} (weights) | {result.queries} | {acc:.4f} ({100 * (base - acc):+.2f} pt) | no log | "
                  f"{sum(o for _, o in dtexts)}/{len(dtexts)} DAWN keys owned | {wtext} | "
                  f"{'OWNED' if wowned or any(o for _, o in dtexts) else 'not owned'} |", flush=True)
        claims, looks = 0, 0
        for neg in negs:
            owned = [cell(k, neg)[1] for k in [wkey, *dkeys]]
            looks += len(owned)
            claims += any(owned)
        kinds = sorted({n.identity.split()[1].rsplit("-", 2)[0] for n in negs})
        print(f"| held-out independent ({len(negs)}, {len(kinds)} kinds) | 0 | - | - | {len(dkeys)} DAWN keys | "
              f"weight key | {claims}/{len(negs)} falsely claimed ({looks} verdicts) |", flush=True)
    print(f"\n({time.perf_counter() - t0:.0f} s for the DAWN block)")
