"""Trigger-set watermarks: Zhang et al. (AsiaCCS 2018) content / noise / unrelated, and Adi et al. (USENIX 2018).

Zhang et al.: key inputs are owner training images of classes other than the target, with white
round blocks (the piracy paper's setting: 4 blocks of radius 3, at random positions per image)
or a logo stamped on them (``zhang-content``), with the secret's Gaussian pattern added
(``zhang-noise``), or images the model was never trained on (``zhang-unrelated``: crops of
scikit-learn's bundled photographs, or a dataset you name); all get one target label.
Adi et al.: abstract images generated from the secret, each with a uniformly random label.

All randomness of a key comes from ``secret`` (:func:`patterns.secret_generator`): the same secret
and data regenerate the same key. The key records neither the secret nor a hash of it (a hash of a
short secret could be brute-forced from the key's public metadata, then the key regenerated).

Null match probability (what an independent model matches per key input):

- Adi: exact. Fine-tuning, each label is drawn uniformly from the C - 1 classes the unprotected
  model does NOT answer for that input (so models that share its biases rarely match, which is
  what Adi et al.'s random labels are for); whatever an independent suspect answers, it equals
  the label with probability 1/(C-1) or 0, independently per input, so p0 = 1/(C-1) bounds it.
  From scratch, labels are uniform over C classes and p0 = 1/C. (Plain uniform labels leave a
  fixed key exposed to shared biases: our 16x16-digit models answered "7" or "4" to most abstract
  images, and a key that happened to hold many 4s was matched by independent models.)
- Zhang (one target for every input): NOT 1/C; independent models answer a trigger type with
  strongly skewed classes (on 16x16 digits we measured up to 47% of block triggers going to "4"
  and 40% of photo crops to "0", varying 4x between seeds). The default is ``max(null_floor,
  U)``, with ``null_floor = 0.5`` and ``U`` the 0.99 Clopper-Pearson upper bound on the unprotected
  model's rate of answering the target on 200 fresh triggers (fine-tune mode only; from scratch
  there is no unprotected model and the floor alone is used). The default target is the class
  the unprotected model answers least on a separate set of 200 triggers (fine-tune) or a class
  drawn from the secret (scratch). With p0 = 0.5 a key of 30 inputs reaches p ~ 1e-9 when all
  match, which is why the default key is 30 inputs and not the piracy paper's 15. ``protect`` then
  calibrates p0 against reference models (:mod:`modelproof.references.calibration`): independent models answer
  blocks or unrelated images with one class unevenly, so calibrated nulls of 0.7-1 are common on
  small models, and the self-check then refuses the key (on the 16x16 digits MLP, a key of 100
  content triggers fared no better than 30: null 0.93).
"""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import nn

from ...data.splits import Dataset, load_dataset
from ...util.errors import ConfigError
from ...keys.key import OwnershipKey
from ...models.modelfile import weights_digest
from ..base import Protected, Protection, register_protection
from ...models.training import evaluate, predict
from . import patterns
from ...util.checks import check_int
from .embedding import check_mode, check_number, embed, probe_null
from .trigger_selection import select_adi, select_zhang
from ..selection import Selection

PROBES, MIN_PROBES = 200, 20


@dataclass(frozen=True)
class KeyPlan:
    """A key before embedding: inputs, labels, null probability and its provenance, extras to record."""

    inputs: torch.Tensor
    labels: torch.Tensor
    null_match_prob: float
    null_source: str
    params: dict = field(default_factory=dict)
    report: dict = field(default_factory=dict)


def keep_learnt(plan: KeyPlan, model: nn.Module, name: str, *, hint: str, limit: int | None = None) -> KeyPlan:
    """``plan`` with only the key inputs the protected ``model`` answers with their labels (the first ``limit``
    of them when given), its selection record counting them; ConfigError naming ``hint`` when none is."""
    learnt = (predict(model, plan.inputs) == plan.labels).nonzero().flatten()[:limit]
    if len(learnt) == 0:
        raise ConfigError(f"{name}: the protected model answers none of the {len(plan.inputs)} selected key "
                          f"inputs with their labels; {hint}")
    record = {**plan.params["selection"], "learnt": len(learnt)}
    return KeyPlan(plan.inputs[learnt], plan.labels[learnt], plan.null_match_prob, plan.null_source,
                   {**plan.params, "selection": record}, {**plan.report, "selection": record})


class TriggerSet(Protection):
    """Shared constructor checks and the protect flow: plan the key, embed it, build the OwnershipKey."""

    kind = "watermark"

    def __init__(self, secret: int | str | None = None, key_size: int = 30, mode: str = "finetune",
                 epochs: int = 10, key_accuracy: float = 1.0, lr: float = 0.001, batch_size: int = 64,
                 key_ratio: float = 0.1, max_drop: float = 0.005) -> None:
        self.set_secret(secret)
        self.key_size = check_int("key_size", key_size, 1)
        self.mode = check_mode(mode)
        self.epochs = check_int("epochs", epochs, 1)
        self.key_accuracy = check_number("key_accuracy", key_accuracy, 0.0, 1.0)
        self.lr = check_number("lr", lr, 0.0, 1.0)
        self.batch_size = check_int("batch_size", batch_size, 1)
        self.key_ratio = check_number("key_ratio", key_ratio, 0.0, 1.0, low_open=False, high_open=True)
        self.max_drop = check_number("max_drop", max_drop, 0.0, 1.0, low_open=False)

    @abstractmethod
    def plan(self, model: nn.Module, data: Dataset, num_classes: int) -> KeyPlan:
        """The key for ``data``, using ``model`` (unprotected, untouched) only to measure the null."""

    @abstractmethod
    def plan_selected(self, model: nn.Module, data: Dataset, num_classes: int, selection: Selection) -> KeyPlan:
        """As :meth:`plan`, with the key chosen against ``selection``'s judges (:mod:`.trigger_selection`);
        ``params["selection"]`` holds the selection record."""

    def _protect(self, model: nn.Module, data: Dataset, *, seed: int, test: Dataset | None,
                 selection: Selection | None = None) -> Protected:
        num_classes = int(getattr(model, "num_classes", data.num_classes))
        before = evaluate(model, test) if test is not None else None
        plan = self.plan(model, data, num_classes) if selection is None else \
            self.plan_selected(model, data, num_classes, selection)
        key_train = Dataset(plan.inputs, plan.labels, tuple(map(str, range(num_classes))), f"{self.name}-key")
        per_batch = max(1, round(self.batch_size * self.key_ratio)) if self.key_ratio > 0 else 0
        result = embed(model, data, key_train, (plan.inputs, plan.labels), mode=self.mode, epochs=self.epochs,
                       lr=self.lr, batch_size=self.batch_size, mix_per_batch=per_batch,
                       target_accuracy=self.key_accuracy, max_drop=self.max_drop, seed=seed)
        if selection is not None:  # keep what the protected model learnt (the judges were asked before)
            plan = keep_learnt(plan, model, self.name, hint="raise epochs or lr")
        key = OwnershipKey(inputs=plan.inputs, labels=plan.labels, method=self.name,
                           params={**self.params(), **plan.params}, num_classes=num_classes,
                           input_shape=data.input_shape, null_match_prob=plan.null_match_prob,
                           null_source=plan.null_source, model_digest=weights_digest(model))
        report = {**result.as_report(), **plan.report, "key_size": len(key), "null_match_prob": key.null_match_prob}
        if self.mode == "finetune" and not result.reached:
            report["warning"] = (f"key accuracy {result.key_accuracy:.3f} is below the target {self.key_accuracy:g} "
                                 f"after {result.epochs} epochs; raise epochs or lr")
        if test is not None:
            report.update(accuracy_before=before, accuracy_after=evaluate(model, test))
        return Protected(model, key, report)


class ZhangTrigger(TriggerSet):
    """Zhang et al.: triggers made from non-target owner images (or unrelated images), one target label."""

    def __init__(self, *, target: int | None = None, null_floor: float = 0.5, **common) -> None:
        super().__init__(**common)
        self.target = None if target is None else check_int("target", target, 0)
        self.null_floor = check_number("null_floor", null_floor, 0.0, 1.0)

    def params(self) -> dict:
        """The constructor parameters, less the target label (the key's secret: its labels hold it)."""
        return {k: v for k, v in super().params().items() if k != "target"}

    @abstractmethod
    def triggers(self, sources: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """One trigger per source image (float32 NCHW in [0,1])."""

    def plan(self, model: nn.Module, data: Dataset, num_classes: int) -> KeyPlan:
        if self.target is not None and self.target >= num_classes:
            raise ConfigError(f"target must be a class of the model, in [0, {num_classes}), got {self.target}")
        order = torch.randperm(len(data), generator=self.gen("sources"))
        probe_gen, report = self.gen("probes"), {}
        finetune = self.mode == "finetune"
        if self.target is not None:
            target, used = self.target, torch.zeros(0, dtype=torch.int64)
        elif finetune:  # the class the unprotected model answers least on triggers (from other classes)
            used = order[:PROBES]
            answers = predict(model, self.triggers(data.images[used], probe_gen))
            src = data.labels[used]
            rates = torch.stack([((answers == c) & (src != c)).sum() / (src != c).sum().clamp(min=1)
                                 for c in range(num_classes)])
            target = int(rates.argmin())
        else:
            target = int(torch.randint(0, num_classes, (1,), generator=self.gen("target")))
            used = torch.zeros(0, dtype=torch.int64)
        rest = order[len(used):]
        pool = rest[data.labels[rest] != target]
        need = self.key_size + (MIN_PROBES if finetune else 0)
        if len(pool) < need:
            raise ConfigError(f"{data.name} has only {len(pool)} unused images outside the target class {target}; "
                              f"need {need} (key_size={self.key_size}"
                              + (f" + {MIN_PROBES} probes)" if finetune else ")"))
        inputs = self.triggers(data.images[pool[:self.key_size]], self.gen("key"))
        labels = torch.full((self.key_size,), target, dtype=torch.int64)
        if finetune:
            probes = self.triggers(data.images[pool[self.key_size:self.key_size + PROBES]], probe_gen)
            p0, source, details = probe_null(model, probes, target, self.null_floor)
            report.update(details)
        else:
            p0 = self.null_floor
            source = (f"floor {self.null_floor:g} for a single-target trigger key (trained from scratch, so no "
                      "unprotected model to probe); re-estimate with `modelproof calibrate`")
        # The target label is the key's secret (its labels hold it): neither params nor report name it.
        return KeyPlan(inputs, labels, p0, source, {}, report)

    def plan_selected(self, model: nn.Module, data: Dataset, num_classes: int, selection: Selection) -> KeyPlan:
        if self.target is not None and self.target >= num_classes:
            raise ConfigError(f"target must be a class of the model, in [0, {num_classes}), got {self.target}")
        finetune = self.mode == "finetune"
        inputs, target, probes, record = select_zhang(model, data, num_classes, selection, triggers=self.triggers,
                                                      gen=self.gen, key_size=self.key_size, target=self.target,
                                                      finetune=finetune, probes=PROBES)
        labels = torch.full((len(inputs),), target, dtype=torch.int64)
        if finetune:
            p0, source, details = probe_null(model, self.triggers(probes, self.gen("probes/null")), target,
                                             self.null_floor)
        else:
            p0, source, details = self.null_floor, f"floor {self.null_floor:g} for a single-target trigger key", {}
        return KeyPlan(inputs, labels, p0, source, {"selection": record}, {**details, "selection": record})


@register_protection
class ZhangContent(ZhangTrigger):
    """Zhang et al. content trigger: white round blocks (or a logo) stamped on non-target images."""

    name = "zhang-content"
    description = "Zhang et al.: white round blocks (or a logo) on owner images, one target label"
    demo_params: ClassVar[dict] = {"secret": "demo", "key_size": 30, "epochs": 15}

    def __init__(self, *, count: int = 4, radius: int = 3, logo: str | None = None, logo_size: float = 0.4,
                 **common) -> None:
        super().__init__(**common)
        self.count = check_int("count", count, 1)
        self.radius = check_int("radius", radius, 1)
        if logo is not None and (not isinstance(logo, str) or not logo):
            raise ConfigError(f"logo must be the path of an image file, got {logo!r}")
        self.logo = logo
        self.logo_size = check_number("logo_size", logo_size, 0.0, 1.0)

    def triggers(self, sources: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        if self.logo is None:
            return patterns.white_blocks(sources, gen, count=self.count, radius=self.radius)
        c, h, w = sources.shape[1:]
        logo, alpha = patterns.load_logo(self.logo, c, max(1, round(self.logo_size * min(h, w))))
        return patterns.stamp_logo(sources, logo, alpha, self.gen("logo-position"))


@register_protection
class ZhangNoise(ZhangTrigger):
    """Zhang et al. noise trigger: the secret's Gaussian pattern added to non-target images."""

    name = "zhang-noise"
    description = "Zhang et al.: the secret's Gaussian noise pattern on owner images, one target label"
    demo_params: ClassVar[dict] = {"secret": "demo", "key_size": 30, "strength": 0.3, "epochs": 15}

    def __init__(self, *, strength: float = 0.3, cells: int | None = None, **common) -> None:
        super().__init__(**common)
        self.strength = check_number("strength", strength, 0.0, 10.0)
        self.cells = None if cells is None else check_int("cells", cells, 1)

    def triggers(self, sources: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        # One pattern per secret (white noise by default, as Zhang et al.); the new-label watermark
        # draws the same pattern for the same secret and cells, so the two compare like for like.
        gen = patterns.secret_generator(self.secret, "noise-pattern")
        pattern = patterns.noise_pattern(tuple(sources.shape[1:]), gen, self.cells)  # type: ignore[arg-type]
        return patterns.add_pattern(sources, pattern, self.strength)


@register_protection
class ZhangUnrelated(ZhangTrigger):
    """Zhang et al. unrelated trigger: images from outside the task, all labelled with the target."""

    name = "zhang-unrelated"
    description = "Zhang et al.: unrelated images (photo crops or a dataset you name), one target label"
    demo_params: ClassVar[dict] = {"secret": "demo", "key_size": 30, "epochs": 15}

    def __init__(self, *, source: str = "photos", **common) -> None:
        super().__init__(**common)
        if not isinstance(source, str) or not (source == "photos" or source.split(":", 1)[0]):
            raise ConfigError(f"source must be 'photos' or 'DATASET[:DIR]' (e.g. fashion-mnist:data/fmnist), "
                              f"got {source!r}")
        self.source = source
        self._pool: torch.Tensor | None = None

    def _dataset_pool(self, shape: tuple[int, ...]) -> torch.Tensor:
        if self._pool is None or tuple(self._pool.shape[1:]) != shape:
            name, _, root = self.source.partition(":")
            images = load_dataset(name, root or None, split="train", size=shape[-1]).images
            self._pool = patterns.match_channels(images, shape[0])
        return self._pool

    def triggers(self, sources: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        shape = tuple(sources.shape[1:])
        if self.source == "photos":
            return patterns.photo_patches(len(sources), shape, gen)  # type: ignore[arg-type]
        pool = self._dataset_pool(shape)
        return pool[torch.randint(0, len(pool), (len(sources),), generator=gen)].clone()


@register_protection
class Adi(TriggerSet):
    """Adi et al.: abstract images generated from the secret, each with a random label."""

    name = "adi"
    exact_null = True
    description = "Adi et al.: procedurally generated abstract images with random labels (exact null)"
    demo_params: ClassVar[dict] = {"secret": "demo", "key_size": 30, "epochs": 15}

    def plan(self, model: nn.Module, data: Dataset, num_classes: int) -> KeyPlan:
        inputs = patterns.abstract_images(self.key_size, data.input_shape, self.gen("images"))
        draw = torch.randint(0, num_classes - (self.mode == "finetune"), (self.key_size,), generator=self.gen("labels"))
        if self.mode == "scratch":
            source = (f"exact: labels drawn uniformly from {num_classes} classes by the secret alone, so an "
                      f"independent suspect matches each with probability 1/{num_classes}, independently")
            return KeyPlan(inputs, draw, 1.0 / num_classes, source)
        unprotected = predict(model, inputs)
        labels = (unprotected + 1 + draw) % num_classes  # uniform over the classes the model does not answer
        source = (f"exact bound: each label drawn by the secret uniformly from the {num_classes - 1} classes the "
                  f"unprotected model does not answer, so an independent suspect matches it with probability "
                  f"1/{num_classes - 1} or 0, independently per input")
        agree = float((unprotected == labels).float().mean())
        return KeyPlan(inputs, labels, 1.0 / (num_classes - 1), source, report={"key_accuracy_before": agree})

    def plan_selected(self, model: nn.Module, data: Dataset, num_classes: int, selection: Selection) -> KeyPlan:
        inputs, labels, p0, record = select_adi(model, data.input_shape, num_classes, selection, gen=self.gen,
                                                key_size=self.key_size, finetune=self.mode == "finetune")
        source = (f"exact bound: each label drawn by the secret uniformly from the classes that no selection "
                  f"reference{' nor the unprotected model' if self.mode == 'finetune' else ''} answers for its "
                  f"input, at least {record['free_classes_min']} of them, so an independent suspect matches it "
                  f"with probability at most 1/{record['free_classes_min']}, independently per input")
        return KeyPlan(inputs, labels, p0, source, {"selection": record}, {"selection": record})
