"""The null of a new-label key: how often another owner's new-label model answers the new label on it.

The method and its reasoning are in :mod:`.new_label`'s docstring. This mixin measures it two ways: on the
protected model itself by symmetry (:meth:`ForeignNull.foreign_null`: owner images carrying foreign
patterns), and, under key selection, on other owners' new-label models made from the selection references
(:meth:`ForeignNull.foreign_owners`; made once per population, owner data and recipe, and kept in the
population folder), each answering our key and :data:`SWEEP_PATTERNS` random patterns
(:meth:`ForeignNull.owners_null`). The host class provides ``_order``, ``params``, ``gen``, ``cells``,
``beta`` and ``key_size`` (:class:`.new_label.NewLabel`).
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import torch
from torch import nn

from ...data.splits import Dataset
from ...keys.nulls import clopper_pearson_upper
from ...models.modelfile import weights_digest
from ...models.training import predict
from ...util.errors import ConfigError
from ..derived import kept
from ..selection import Selection
from . import patterns

FOREIGN_PATTERNS, FOREIGN_IMAGES = 20, 400  # foreign patterns, owner images in all
# Under key selection: other owners' new-label models made from the judges (FOREIGN_ROUNDS secrets per
# judge, at most FOREIGN_OWNERS, at least MIN_FOREIGN that learnt FOREIGN_LEARNT of their own key) bound
# the null at tail FOREIGN_TAIL. Twelve owners, not six: the models' own spread (their largest rates on random
# patterns were 0.16-0.48 on a digits CNN) is sampled by them, the patterns' by the sweep.
FOREIGN_ROUNDS, FOREIGN_OWNERS, MIN_FOREIGN, FOREIGN_LEARNT, FOREIGN_TAIL = 2, 12, 5, 0.25, 0.001
# Random patterns each foreign owner answers (forward passes of key_size images each): with the minimum of 5 owners
# 1,500 rates, enough for an order statistic at tail 0.001 (it needs 999); with 12, 3,600 (the third largest).
SWEEP_PATTERNS = 300
# The recipes foreign owners are marked with, in turn: ours, and Zhong et al.'s plain version (white noise, no
# decoys), whose models answer the new label for noise beyond their own pattern and so for our key too. Our
# smooth pattern without decoys is left out: judges marked so answered the new label on 90-98% of the images
# carrying some random smooth patterns, which pushed the null to 0.90-0.98 and refused every key, while held-out
# owners of that recipe matched our keys at most 0.64, below their nulls of 0.72-0.78
# (benchmarks/new_label_owners.py; docs/methods/key-selection.md).
FOREIGN_RECIPES = ({}, {"cells": None, "decoys": 0})
# Raise when a foreign owner is made otherwise than its recipe's parameters say (new code, same parameters): the
# kept ones (:func:`..derived.kept`) are then made again instead of standing for the new recipe.
FOREIGN_VERSION = 1


class ForeignNull:
    """The new-label null's measurements (a mixin of :class:`.new_label.NewLabel`)."""

    def foreign_owners(self, data: Dataset, num_classes: int, selection: Selection) -> tuple[list[nn.Module], int]:
        """Other owners' new-label models and how many were made: each judge with a C-class torch module is
        copied and marked by this recipe with a secret of its own, up to :data:`FOREIGN_ROUNDS` times; those
        that learnt their own key (accuracy >= :data:`FOREIGN_LEARNT`) are kept, at most
        :data:`FOREIGN_OWNERS`. They depend on the judges, the owner's data and the recipe, not on our
        secret, so they are kept in ``selection.store`` and the next key on the same population and data
        trains none (:meth:`foreign_owner`)."""
        bases = [j for j in selection.judges
                 if j.model is not None and int(getattr(j.model, "num_classes", -1)) == num_classes]
        folder = selection.store / "new-label-owners" if selection.store is not None else None
        data_id = data.digest() if folder is not None else ""
        owners, made = [], 0
        for i in range(FOREIGN_ROUNDS * len(bases)):
            if len(owners) == FOREIGN_OWNERS:
                break
            judge = bases[i % len(bases)]
            recipe = {**self.params(), **FOREIGN_RECIPES[i % len(FOREIGN_RECIPES)], "null_prob": 1.0}
            model, learnt = self.foreign_owner(judge.model, judge.digest or weights_digest(judge.model), data,
                                               recipe, i, folder, data_id)
            made += 1
            if learnt >= FOREIGN_LEARNT:
                owners.append(model)
        return owners, made

    def foreign_owner(self, base: nn.Module, base_id: str, data: Dataset, recipe: dict, index: int,
                      folder: Path | None, data_id: str) -> tuple[nn.Module, float]:
        """The ``index``-th other owner's new-label model (``base`` marked by ``recipe``) and its key accuracy.

        Its secret comes from ``base_id`` and ``index``, never from ours: the other owners stand for the
        population, like the calibration references, so every key on it meets the same ones. With a
        ``folder`` it is made once (:func:`..derived.kept`, named by the recipe, base, data and index)."""
        def make() -> tuple[nn.Module, dict]:
            seed = hashlib.sha256(f"modelproof/new-label/foreign-owner/{index}/{base_id}".encode()).digest()
            marked = type(self)(**recipe, secret=int.from_bytes(seed[:8], "little") >> 2).protect(base, data,
                                                                                                 seed=index)
            return marked.model, {"key_accuracy": float(marked.report["key_accuracy"]), "foreign_owner": index}

        spec = {"kind": "new-label foreign owner", "version": FOREIGN_VERSION, "recipe": recipe, "base": base_id,
                "data": data_id, "index": index}
        model, extra = kept(folder, spec, make)
        return model, float(extra["key_accuracy"])

    def sweep_images(self, data: Dataset, candidates: int) -> torch.Tensor:
        """``key_size`` owner images for the pattern sweep: after D1, D2 and the foreign-pattern probes
        (wrapping to the start of the order when the data run out)."""
        order, n1, n2 = self._order(data, candidates)
        start = (n1 + n2 + FOREIGN_IMAGES) % len(data)
        return data.images[order.roll(-start)[:self.key_size]]

    def owners_null(self, owners: list[nn.Module], key_inputs: torch.Tensor, images: torch.Tensor, num_classes: int,
                    symmetric: tuple[float, str, dict]) -> tuple[float, str, dict]:
        """``max(1/(C+1), U, S)``: U the symmetric pooled bound of :meth:`foreign_null`, S the upper order
        statistic at tail :data:`FOREIGN_TAIL` of other owners' new-label answer rates, to our key and to
        ``images`` carrying each of :data:`SWEEP_PATTERNS` random patterns (see the module docstring)."""
        counts = [int((predict(m, key_inputs) == num_classes).sum()) for m in owners]
        gen, shape = self.gen("foreign-sweep"), tuple(images.shape[1:])
        sweep = torch.stack([patterns.noise_pattern(shape, gen, self.cells) for _ in range(SWEEP_PATTERNS)])
        rates = [c / len(key_inputs) for c in counts]
        for model in owners:
            for chunk in sweep.split(max(1, 4096 // len(images))):
                probes = patterns.add_pattern(images.unsqueeze(0), chunk.unsqueeze(1), self.beta).flatten(0, 1)
                hit = (predict(model, probes) == num_classes).view(len(chunk), len(images))
                rates.extend(hit.double().mean(dim=1).tolist())
        rank = math.floor(FOREIGN_TAIL * (len(rates) + 1))
        if rank < 1:
            raise ConfigError(f"{len(rates)} foreign rates cannot resolve a tail of {FOREIGN_TAIL:g}")
        bound = sorted(rates, reverse=True)[rank - 1]
        upper = symmetric[2].get("foreign_upper", 1.0)
        p0 = max(1.0 / (num_classes + 1), upper, bound)
        source = (f"max(1/{num_classes + 1}; 0.99 Clopper-Pearson bound {upper:.4f} on the protected model's new-label "
                  f"answers to owner images carrying foreign patterns; {bound:.4f}, the rate exceeded by {rank - 1} of "
                  f"{len(rates)} new-label answer rates (tail {FOREIGN_TAIL:g}) of {len(owners)} other owners' new-label "
                  f"models (the selection references, marked with secrets of their own by this recipe and by the paper's "
                  f"plain one) to our key (they answered "
                  f"{counts} of its {len(key_inputs)} samples) and to {len(images)} owner images carrying each of "
                  f"{SWEEP_PATTERNS} random patterns): how often another owner's new-label model answers {num_classes} "
                  f"on our key; an independent {num_classes}-class model never does")
        record = {"models": len(owners), "counts": counts, "n": len(key_inputs), "patterns": SWEEP_PATTERNS,
                  "images": len(images), "rates": len(rates), "rank": rank, "bound": bound, "tail": FOREIGN_TAIL}
        return p0, source, {**symmetric[2], "foreign_owners": record}

    def foreign_null(self, model: nn.Module, data: Dataset, num_classes: int,
                     candidates: int | None = None) -> tuple[float, str, dict]:
        """``max(1/(C+1), U, R)`` from the protected model's answers to owner images carrying foreign
        patterns (see the module docstring): U bounds the pooled rate of Delta answers, R is the largest
        rate for any one of the foreign patterns."""
        order, n1, n2 = self._order(data, candidates)
        start = n1 + n2
        images = data.images[order[start:start + FOREIGN_IMAGES]]
        per = len(images) // FOREIGN_PATTERNS
        if per < 1:
            return 1.0, "no owner images left to probe foreign patterns: the most conservative value, 1", {}
        gen, shape = self.gen("foreign-patterns"), data.input_shape
        foreign = torch.cat([patterns.noise_pattern(shape, gen, self.cells).expand(per, *shape)
                             for _ in range(FOREIGN_PATTERNS)])
        answers = predict(model, patterns.add_pattern(images[:len(foreign)], foreign, self.beta))
        hit = (answers == num_classes).view(FOREIGN_PATTERNS, per)
        hits, worst = int(hit.sum()), int(hit.sum(dim=1).max())
        upper = clopper_pearson_upper(hits, hit.numel(), 0.99)
        p0 = max(1.0 / (num_classes + 1), upper, worst / per)
        source = (f"max(1/{num_classes + 1}; 0.99 Clopper-Pearson bound {upper:.4f} on {hits}/{hit.numel()} new-label "
                  f"answers of the protected model to owner images carrying {FOREIGN_PATTERNS} foreign patterns of "
                  f"strength {self.beta:g}; the worst single pattern's rate {worst}/{per}): by symmetry, how often "
                  f"another owner's new-label model answers its new label {num_classes} on our key; an independent "
                  f"{num_classes}-class model never does (probability 0); re-estimate with `modelproof calibrate`")
        return p0, source, {"foreign_hits": hits, "foreign_probes": hit.numel(), "foreign_upper": upper,
                            "foreign_worst_pattern": worst / per}
