"""The embedding loop that trigger-set watermarks share, parameter checks, and the null-rate probe.

Two ways to embed a key (a small labelled dataset) into a model:

- ``scratch``: train the given (untrained) model for ``epochs`` on the owner's data with key
  inputs mixed into every batch (``mix_per_batch`` of them, in rotating order), or, with
  ``mix_per_batch=0``, with the key concatenated into the training set (the new-label paper's
  TrEmb, where the key is a fraction alpha of the data).
- ``finetune``: fine-tune an already trained model the same way, checking after every epoch the
  accuracy on the verification key and the accuracy on a held-out 10% of the owner's data that
  fine-tuning never sees (never on the test split, which is only reported); it stops as
  soon as key accuracy reaches its target while held-out accuracy is within ``max_drop`` of where it
  started, with a tolerance for the sampling noise of that slice (:func:`within_budget`: on the
  digits the slice is 89 images, one of which is 1.1 points; the model was trained on them, so
  what it measures is what fine-tuning makes the model forget), or after ``epochs`` epochs, and then keeps the best epoch seen (target reached and
  highest test accuracy, else highest key accuracy). It does not fail when the target is missed:
  the result says so (``reached``), and the protection reports a warning.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field

import torch
from torch import nn

from ...data.splits import Dataset, concat
from ...util.errors import ConfigError
from ...keys.nulls import clopper_pearson_upper
from ...models.training import TrainConfig, fit, predict

MODES = ("finetune", "scratch")
VALIDATION_FRACTION, VALIDATION_MAX = 0.1, 1000
NOISE_Z = 1.645  # the accuracy budget refuses only a drop significantly (one-sided 5%) above it


def check_number(name: str, value: object, low: float, high: float, *, low_open: bool = True,
                 high_open: bool = False) -> float:
    """``value`` as a float if it is a finite number in the interval, else ConfigError."""
    ok = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
    if ok:
        v = float(value)  # type: ignore[arg-type]
        ok = (v > low if low_open else v >= low) and (v < high if high_open else v <= high)
    if not ok:
        lo, hi = "(" if low_open else "[", ")" if high_open else "]"
        raise ConfigError(f"{name} must be a number in {lo}{low:g}, {high:g}{hi}, got {value!r}")
    return float(value)  # type: ignore[arg-type]


def check_mode(mode: object) -> str:
    """``mode`` if it is ``finetune`` or ``scratch``, else ConfigError."""
    if mode not in MODES:
        raise ConfigError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    return str(mode)


def key_accuracy(model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of ``inputs`` the model (full argmax) labels as ``labels``."""
    return float((predict(model, inputs) == labels).float().mean())


def hold_out(data: Dataset, seed: int) -> tuple[Dataset, Dataset]:
    """(training part, held-out slice of 10%, at most 1,000 images) of the owner's data, by ``seed``."""
    perm = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))
    n_val = min(VALIDATION_MAX, max(1, int(len(data) * VALIDATION_FRACTION)))
    if len(data) - n_val < 1:
        raise ConfigError(f"the owner's data ({len(data)} images) is too small to hold out a validation slice")
    return data.subset(perm[n_val:], f"{data.name}/embed"), data.subset(perm[:n_val], f"{data.name}/held-out")


def correct(model: nn.Module, data: Dataset) -> torch.Tensor:
    """Per image of ``data``: whether ``model`` answers its label (bool)."""
    return predict(model, data.images) == data.labels


def within_budget(before: torch.Tensor, after: torch.Tensor, max_drop: float, z: float = NOISE_Z) -> bool:
    """Whether the accuracy drop from ``before`` to ``after`` (per-image correctness on one check set) is not
    significantly larger than ``max_drop``: the paired count ``lost - gained <= max_drop * n + z * sqrt(lost +
    gained)`` (a one-sided test at ``z`` standard errors on the images that changed, as McNemar's; the
    budget is never finer than the check set can measure, e.g. one image of 89 is 1.1 points)."""
    lost, gained = int((before & ~after).sum()), int((~before & after).sum())
    return lost - gained <= max_drop * len(before) + z * math.sqrt(lost + gained)


@dataclass(frozen=True)
class EmbedResult:
    """What embedding did: epochs, final key and held-out accuracies, whether the target was reached."""

    mode: str
    epochs: int
    key_accuracy: float
    reached: bool
    seconds: float
    check_before: float | None = None
    check_after: float | None = None
    history: list[dict] = field(default_factory=list)
    kept_epoch: int | None = None

    def as_report(self) -> dict:
        """JSON-ready fields for a Protected report."""
        return {"mode": self.mode, "epochs": self.epochs, "kept_epoch": self.kept_epoch,
                "key_accuracy": self.key_accuracy, "key_target_reached": self.reached,
                "embed_seconds": self.seconds, "history": self.history}


def embed(model: nn.Module, data: Dataset, key_train: Dataset, check: tuple[torch.Tensor, torch.Tensor], *,
          mode: str, epochs: int, lr: float, batch_size: int, mix_per_batch: int, target_accuracy: float,
          max_drop: float, seed: int) -> EmbedResult:
    """Embed ``key_train`` into ``model`` in place (see the module docstring); ``check`` is the
    verification key (inputs, labels) whose accuracy decides when fine-tuning stops."""
    start = time.perf_counter()
    config = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr)
    mix = key_train if mix_per_batch > 0 else None
    if mode == "scratch":
        train = data if mix is not None else concat([data, key_train], name=f"{data.name}+key")
        fit(model, train, config, seed=seed, mix=mix, mix_per_batch=mix_per_batch, description="embedding")
        acc = key_accuracy(model, *check)
        return EmbedResult(mode, epochs, acc, acc >= target_accuracy, time.perf_counter() - start)
    # Every choice fine-tuning makes (when to stop, which epoch to keep) is made on a held-out part of
    # the owner's data, never on the test split, which the protections only report.
    train, heldout = hold_out(data, seed)
    right = correct(model, heldout)
    before = float(right.float().mean())
    history: list[dict] = []
    best: dict = {}

    def until(m: nn.Module) -> bool:
        acc, now = key_accuracy(m, *check), correct(m, heldout)
        held = float(now.float().mean())
        history.append({"epoch": len(history) + 1, "key_accuracy": acc, "test_accuracy": held})
        score = (acc >= target_accuracy, held if acc >= target_accuracy else acc, held)
        if not best or score > best["score"]:
            best.update(score=score, epoch=len(history), state=copy.deepcopy(m.state_dict()))
        return acc >= target_accuracy and within_budget(right, now, max_drop)

    if mix is None:
        train = concat([train, key_train], name=f"{train.name}+key")
    fit(model, train, config, seed=seed, mix=mix, mix_per_batch=mix_per_batch, until=until, description="embedding")
    model.load_state_dict(best["state"])
    kept = history[best["epoch"] - 1]
    return EmbedResult(mode, len(history), kept["key_accuracy"], kept["key_accuracy"] >= target_accuracy,
                       time.perf_counter() - start, before, kept["test_accuracy"], history, best["epoch"])


def probe_null(model: nn.Module, probes: torch.Tensor, target: int | torch.Tensor, floor: float,
               confidence: float = 0.99) -> tuple[float, str, dict]:
    """Null match probability: ``max(floor, upper)``, where ``upper`` is the one-sided Clopper-Pearson
    bound at ``confidence`` on how often the unprotected ``model`` answers ``target`` on ``probes``
    (fresh triggers made by the key's recipe, disjoint from the key). ``target`` is one label for
    every probe (single-target keys) or a tensor of one label per probe (drawn by the key's recipe)."""
    hits = int((predict(model, probes) == target).sum())
    upper = clopper_pearson_upper(hits, len(probes), confidence)
    p0 = max(floor, upper)
    what = "the target label" if isinstance(target, int) else "their targets (drawn by the key's recipe)"
    source = (f"max(floor {floor:g}, {confidence:g} Clopper-Pearson upper bound {upper:.4f} on the unprotected "
              f"model answering {what} on {len(probes)} fresh triggers of the same recipe: "
              f"{hits}/{len(probes)}); independent models trained on the same data share such biases only "
              "roughly, hence the floor; re-estimate with `modelproof calibrate`")
    return p0, source, {"probe_hits": hits, "probes": len(probes), "probe_upper": upper, "floor": floor}
