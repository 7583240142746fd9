"""Key selection for the trigger-set watermarks (issue 22.2): triggers and labels the judges do not answer.

- Zhang et al. (one target for every trigger): the target is the class the judges (and, fine-tuning,
  the unprotected model) answer least on probe triggers made from images of the other classes;
  then ``oversample`` x the key's triggers are drawn and those no judge answers with the target (and
  the unprotected model does not either) are kept, in the secret's order.
- Adi et al. (abstract images, one label each): each candidate's label is drawn by the secret
  uniformly from the classes that no judge (and, fine-tuning, not the unprotected model) answers
  for it; a candidate survives when at least :data:`MIN_FREE` classes are left, and the key takes
  the survivors with the most classes left. The null stays exact: whatever an independent suspect
  answers, it equals a label drawn uniformly from m classes with probability at most 1/m,
  independently per input, so p0 = 1 / (the smallest m in the key).

The pure planning lives here; :mod:`.trigger_set` turns the result into a key plan.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ...data.splits import Dataset
from ...models.training import predict
from ...util.errors import ConfigError
from ..selection import Selection
from . import patterns

ZHANG_OVERSAMPLE, ADI_OVERSAMPLE = 4, 8  # measured: benchmarks/key_selection.py
MIN_FREE = 5  # Adi: classes left for a label after removing the judges' answers (exact null <= 1/5)


def least_answered(answers: list[torch.Tensor], sources: torch.Tensor, num_classes: int) -> int:
    """The class the answer vectors give least often, as a rate over probes whose source is another class."""
    rates = torch.zeros(num_classes)
    for a in answers:
        for c in range(num_classes):
            other = sources != c
            rates[c] += float(((a == c) & other).sum()) / max(int(other.sum()), 1)
    return int(rates.argmin())


def select_zhang(model: nn.Module, data: Dataset, num_classes: int, selection: Selection, *,
                 triggers: Callable[[torch.Tensor, torch.Generator], torch.Tensor],
                 gen: Callable[[str], torch.Generator], key_size: int, target: int | None, finetune: bool,
                 probes: int, oversample: int = ZHANG_OVERSAMPLE) -> tuple[torch.Tensor, int, torch.Tensor, dict]:
    """(key triggers, target, probe images for the null (fine-tune; else empty), selection record)."""
    order = torch.randperm(len(data), generator=gen("sources"))
    used = order[:probes]
    if target is None:
        probe = triggers(data.images[used], gen("probes"))
        answers = [j.predict(probe) for j in selection.judges] + ([predict(model, probe)] if finetune else [])
        target = least_answered(answers, data.labels[used], num_classes)
    rest = order[probes:]
    pool = rest[data.labels[rest] != target]
    held = probes if finetune else 0
    if len(pool) < key_size + held:
        raise ConfigError(f"{data.name} has only {len(pool)} unused images outside the target class {target}; "
                          f"need {key_size + held} (key_size={key_size} + {held} probes)")
    probe_images = data.images[pool[len(pool) - held:]] if held else torch.empty(0, *data.input_shape)
    candidates, cursor = pool[:len(pool) - held], 0

    def draw(round_: int, count: int) -> dict:
        nonlocal cursor
        idx = candidates[cursor:cursor + count]
        cursor += len(idx)
        x = triggers(data.images[idx], gen(f"key/select/{round_}"))
        labels = torch.full((len(idx),), target, dtype=torch.int64)
        out = {"inputs": x, "labels": labels}
        if finetune:
            out["own"] = predict(model, x) != target if len(idx) else torch.zeros(0, dtype=torch.bool)
        return out

    chosen, record = selection.choose("the trigger set", key_size, draw, default_oversample=oversample,
                                      rule="one target, the class the judges answer least; triggers no judge "
                                           "(nor the unprotected model) answers with it",
                                      hint="another trigger (--count, --radius, --strength or --source)")
    return chosen["inputs"], target, probe_images, record


def select_adi(model: nn.Module, shape: tuple[int, int, int], num_classes: int, selection: Selection, *,
               gen: Callable[[str], torch.Generator], key_size: int, finetune: bool,
               oversample: int = ADI_OVERSAMPLE) -> tuple[torch.Tensor, torch.Tensor, float, dict]:
    """(abstract images, labels, exact null 1/min m, selection record) for Adi et al. under selection."""
    if num_classes < MIN_FREE:
        raise ConfigError(f"Adi key selection needs at least {MIN_FREE} classes, got {num_classes}")
    label_gen = gen("labels/select")

    def draw(round_: int, count: int) -> dict:
        x = patterns.abstract_images(count, shape, gen(f"images/select/{round_}"))
        free = torch.ones(count, num_classes, dtype=torch.bool)
        rows = torch.arange(count)
        for judge in selection.judges:
            free[rows, judge.predict(x)] = False
        if finetune:
            free[rows, predict(model, x)] = False
        m = free.sum(1)
        pick = (torch.rand(count, generator=label_gen) * m.clamp(min=1)).long()  # the pick-th free class
        labels = (free.long().cumsum(1) <= pick[:, None]).sum(1).clamp(max=num_classes - 1)
        return {"inputs": x, "labels": labels, "own": m >= MIN_FREE, "free": m}

    chosen, record = selection.choose("adi", key_size, draw, default_oversample=oversample,
                                      rule=f"labels drawn from the classes no judge answers, at least {MIN_FREE} "
                                           "left, most left first", prefer="free")
    smallest = int(chosen["free"].min())
    return chosen["inputs"], chosen["labels"], 1.0 / smallest, {**record, "free_classes_min": smallest}
