"""Suspect populations for fingerprint and watermark experiments (IPGuard §5.1.2).

Positive suspects are post-processed copies of the target, made with the removal attack suite on
the attacker's split: FTLL, FTAL, RTLL, RTAL, weight pruning at p = 0.1, 0.2, ... and filter
pruning at c = 1/16, 2/16, ..., both retrained, each sweep stopping at the first rate whose test
accuracy loss exceeds ``max_drop`` (3 points; that rate is not a suspect). Negative suspects are
independent models: the target's architecture trained from other seeds, other architectures, and
random forests (scikit-learn, 20 trees).

Every neural suspect can be cached in a folder as a safetensors model file whose record carries
its name, kind, group, test accuracy and the digest of the target it came from, so a benchmark
that is interrupted resumes where it stopped. A filter-pruned model has smaller layers than its
architecture: it is rebuilt by pruning the target again at the same rate (deterministic), then
loading the cached weights strictly. Random forests are refitted (seconds; nothing is pickled).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import torch
from torch import nn

from ..data.splits import Dataset, Splits
from ..models.modelfile import META_KEY, ModelRecord, save_model, weights_digest
from ..models import build_model
from ..suspects.local import SklearnSuspect, TorchSuspect, train_random_forest
from ..models.training import TrainConfig, evaluate, fit

POSITIVE, NEGATIVE = "positive", "negative"
WEIGHT_RATES = tuple(round(0.1 * i, 1) for i in range(1, 10))
FILTER_RATES = tuple(Fraction(i, 16) for i in range(1, 16))


@dataclass(frozen=True)
class LabelledSuspect:
    """One suspect of a population: its name, positive/negative, group, the suspect and its accuracy."""

    name: str
    kind: str
    group: str
    suspect: TorchSuspect | SklearnSuspect
    accuracy: float
    model: nn.Module | None = None
    details: dict = field(default_factory=dict)

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """The suspect's labels for ``images``."""
        return self.suspect.predict(images)


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9.]+", "-", name.lower()).strip("-")


class ModelCache:
    """Cached suspect models in ``root`` (safetensors + record); ``None`` root means no caching."""

    def __init__(self, root: str | Path | None) -> None:
        self.root = None if root is None else Path(root)

    def get(self, name: str, origin: str, rebuild: Callable[[dict], nn.Module] | None = None) -> tuple[nn.Module, dict] | None:
        """The cached model ``name`` made from ``origin`` (a digest), or None when absent or stale."""
        if self.root is None or not (self.root / f"{_slug(name)}.safetensors").is_file():
            return None
        record, state = _read(self.root / f"{_slug(name)}.safetensors")
        info = dict(record.extra)
        if info.get("name") != name or info.get("origin") != origin:
            return None
        model = rebuild(info) if rebuild is not None else build_model(
            record.arch, record.num_classes, record.input_shape, mean=record.mean, std=record.std,
            **record.arch_kwargs)
        model.load_state_dict(state, strict=True)
        return model.eval(), info

    def put(self, name: str, origin: str, model: nn.Module, info: dict) -> None:
        """Cache ``model`` with ``info`` (JSON) under ``name``."""
        if self.root is not None:
            save_model(model, self.root / f"{_slug(name)}.safetensors", extra=dict(info, name=name, origin=origin))


def _read(path: Path) -> tuple[ModelRecord, dict[str, torch.Tensor]]:
    """Record and weights of a cached file, read with safetensors alone (which never unpickles).

    ``modelfile.read_model_file`` refuses files whose first byte is 0x80 as pickles, but a
    safetensors header of 1,408 + 256 n bytes starts with that byte too; our cache reads directly.
    """
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(path), framework="pt") as fh:
        meta = fh.metadata() or {}
    return ModelRecord.from_json(meta.get(META_KEY, "{}"), str(path)), load_file(str(path))


def _neural(name: str, kind: str, group: str, model: nn.Module, info: dict) -> LabelledSuspect:
    return LabelledSuspect(name, kind, group, TorchSuspect(model, identity=name), float(info["accuracy"]),
                           model, {k: v for k, v in info.items() if k not in ("name", "origin", "accuracy")})


def _attacked(cache: ModelCache, name: str, group: str, target: nn.Module, splits: Splits, attack: str,
              params: dict, seed: int, rebuild: Callable[[dict], nn.Module] | None = None,
              log: Callable[[str], None] | None = None) -> LabelledSuspect:
    from ..attacks import make_attack, run_attack

    origin = weights_digest(target)
    hit = cache.get(name, origin, rebuild)
    if hit is None:
        result = run_attack(make_attack(attack, **params), target, splits, seed=seed)
        info = {"accuracy": result.accuracy_after, "attack": attack, "params": {k: str(v) for k, v in params.items()},
                "seconds": result.seconds, "kind": POSITIVE, "group": group}
        cache.put(name, origin, result.model, info)
        hit = (result.model, info)
        if log:
            log(f"  {name}: test accuracy {result.accuracy_after:.4f} ({result.seconds:.1f} s)")
    return _neural(name, POSITIVE, group, *hit)


def positive_suspects(target: nn.Module, splits: Splits, *, seed: int = 0, cache: str | Path | None = None,
                      finetune_epochs: int = 10, prune_epochs: int = 3, max_drop: float = 0.03,
                      weight_rates: Sequence[float] = WEIGHT_RATES, filter_rates: Sequence[float] = FILTER_RATES,
                      log: Callable[[str], None] | None = None) -> list[LabelledSuspect]:
    """FTLL, FTAL, RTLL, RTAL and the WP/FP sweeps within ``max_drop`` of the target's test accuracy."""
    store = ModelCache(cache)
    base = evaluate(target, splits.test)
    out = [_attacked(store, name.upper(), name.upper(), target, splits, name, {"epochs": finetune_epochs}, seed,
                     log=log) for name in ("ftll", "ftal", "rtll", "rtal")]
    example = splits.attacker.images[:2]

    def refiltered(info: dict) -> nn.Module:
        from ..attacks.filters import prune_filters

        pruned = copy.deepcopy(target)
        prune_filters(pruned, float(Fraction(info["params"]["rate"])), example)
        return pruned

    sweeps = (("WP", "prune-weights", weight_rates, None, "p"), ("FP", "prune-filters", filter_rates, refiltered, "c"))
    for group, attack, rates, rebuild, letter in sweeps:
        for rate in rates:
            shown = str(Fraction(rate).limit_denominator(64)) if group == "FP" else f"{float(rate):g}"
            params = {"rate": float(rate), "retrain": True, "epochs": prune_epochs}
            suspect = _attacked(store, f"{group} {letter}={shown}", group, target, splits, attack, params, seed,
                                rebuild, log)
            if base - suspect.accuracy > max_drop + 1e-9:
                break
            out.append(suspect)
    return out


def negative_suspects(splits: Splits, *, arch: str, seeds: Sequence[int], other_archs: Mapping[str, Sequence[int]],
                      forest_seeds: Sequence[int], config: TrainConfig = TrainConfig(), train_data: Dataset | None = None,
                      cache: str | Path | None = None, n_trees: int = 20,
                      log: Callable[[str], None] | None = None) -> list[LabelledSuspect]:
    """Independent models: ``arch`` from ``seeds``, each of ``other_archs`` from its seeds, random forests.

    All are trained on ``train_data`` (default: the owner's split, the hardest case: the same data
    as the target) with ``config``; none of them ever sees the target.
    """
    data = train_data if train_data is not None else splits.owner
    store = ModelCache(cache)
    origin = f"{data.name}:{len(data)}:{config}"
    jobs = [(arch, s, "same architecture") for s in seeds]
    jobs += [(a, s, "other architecture") for a, ss in other_archs.items() for s in ss]
    out = []
    for name_arch, s, group in jobs:
        name = f"{name_arch} seed={s}"
        hit = store.get(name, origin)
        if hit is None:
            model = build_model(name_arch, data.num_classes, data.input_shape, seed=s)
            report = fit(model, data, config, seed=s)
            info = {"accuracy": evaluate(model, splits.test), "seconds": report.seconds, "group": group,
                    "kind": NEGATIVE}
            store.put(name, origin, model, info)
            hit = (model, info)
            if log:
                log(f"  {name}: test accuracy {info['accuracy']:.4f} ({report.seconds:.1f} s)")
        out.append(_neural(name, NEGATIVE, group, *hit))
    for s in forest_seeds:
        forest = train_random_forest(data, n_trees=n_trees, seed=s)
        acc = float((forest.predict(splits.test.images) == splits.test.labels).float().mean())
        out.append(LabelledSuspect(f"RF seed={s}", NEGATIVE, "random forest", forest, acc, None, {"trees": n_trees}))
    return out


def matching_rates(population: Sequence[LabelledSuspect], inputs: torch.Tensor,
                   labels: torch.Tensor) -> dict[str, float]:
    """Each suspect's matching rate on a fingerprint (``inputs`` with the target's ``labels``)."""
    return {s.name: float((s.predict(inputs) == labels).float().mean()) for s in population}
