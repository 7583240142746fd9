"""Neural Cleanse (Wang et al., IEEE S&P 2019): reverse-engineer a trigger for every label, then unlearn it.

A backdoor (a trigger-set watermark) is a shortcut: a small patch that sends any image to one label.
For each label t, Neural Cleanse searches the smallest mask m (one value per pixel, in [0, 1]) and
pattern p (in [0, 1]) such that ``x' = (1 - m) x + m p`` is classified as t for images x of the other
labels: Adam (lr 0.1, betas 0.5 / 0.9) on ``CE(f(x'), t) + cost * |m|_1``, with m and p parametrised
as ``tanh(.) / 2 + 0.5``. The cost starts at 1e-3 and adapts as in the authors' code: after
``patience`` (5) epochs with the attack success rate at or above 99% it is multiplied by 1.5, after
``patience`` epochs below it divided by 1.5^1.5; the smallest mask reaching 99% is kept, and the search
stops early once that mask has not shrunk by 1% for 10 epochs (the authors' early stop). A label whose
mask norm is an outlier below the median (anomaly index ``|norm - median| / (1.4826 * MAD)`` above 2)
is flagged as infected.

Unlearning (the paper's mitigation): the attacker's images, plus a copy of a random 20% of them stamped
with the reversed trigger and keeping their correct label, fine-tune the model, so that the trigger stops
working. The triggers of the flagged labels are used; when no label is flagged, the one with the
smallest mask (the most suspicious). Budget: the paper runs long optimisations; here at most
``reverse_epochs`` passes over ``images`` (default 1,000) attacker images per label, batch 32.
Fine-tuning: 5 epochs as WRT's ``neural_cleanse_unlearning``, with Adam at the package's training rate
1e-3 (at the fine-tuning rate 1e-4 a toy backdoor's success only fell from 98% to 78%; at 1e-3, to 19%).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..data.splits import Dataset, concat
from ..models.devices import model_device
from ..util.progress import phase, report
from .base import Attack, AttackLog, Param, check_positive, check_rate
from .tuning import labelled, set_training, train_layers

MAD_CONSISTENCY = 1.4826  # MAD of a normal distribution x this = its standard deviation
ANOMALY_THRESHOLD = 2.0
SUCCESS = 0.99
COST_UP, COST_DOWN = 1.5, 1.5 ** 1.5


@dataclass(frozen=True)
class Trigger:
    """A reverse-engineered trigger for ``target``: mask [1, H, W] and pattern [C, H, W] in [0, 1]."""

    target: int
    mask: torch.Tensor
    pattern: torch.Tensor
    success: float

    @property
    def norm(self) -> float:
        """L1 norm of the mask (the paper's measure of the trigger's size)."""
        return float(self.mask.abs().sum())

    def apply(self, images: torch.Tensor) -> torch.Tensor:
        """``(1 - m) x + m p`` for a batch ``images`` (on their device)."""
        m, p = self.mask.to(images.device), self.pattern.to(images.device)
        return (1 - m) * images + m * p


def reverse_engineer(model: nn.Module, images: torch.Tensor, target: int, *, epochs: int, gen: torch.Generator,
                     init_cost: float = 1e-3, lr: float = 0.1, batch_size: int = 32, patience: int = 5,
                     early_stop: int = 10) -> Trigger:
    """The smallest trigger found that sends ``images`` (of other labels) to ``target`` (see the module doc)."""
    device = model_device(model)
    c, h, w = images.shape[1:]
    mask_raw = torch.atanh((torch.rand(1, h, w, generator=gen) * 2 - 1) * 0.99).to(device).requires_grad_(True)
    pattern_raw = torch.atanh((torch.rand(c, h, w, generator=gen) * 2 - 1) * 0.99).to(device).requires_grad_(True)
    opt = torch.optim.Adam([mask_raw, pattern_raw], lr=lr, betas=(0.5, 0.9))
    cost, up, down, stale = init_cost, 0, 0, 0
    best: tuple[float, torch.Tensor, torch.Tensor, float] | None = None
    last = (0.0, torch.empty(0), torch.empty(0))
    frozen = [p.requires_grad for p in model.parameters()]
    for p in model.parameters():
        p.requires_grad_(False)
    model.eval()
    try:
        for _ in range(epochs):
            hits = 0
            order = torch.randperm(len(images), generator=gen)
            for start in range(0, len(order), batch_size):
                x = images[order[start:start + batch_size]].to(device)
                mask, pattern = torch.tanh(mask_raw) / 2 + 0.5, torch.tanh(pattern_raw) / 2 + 0.5
                out = model((1 - mask) * x + mask * pattern)
                labels = torch.full((len(x),), target, dtype=torch.int64, device=device)
                loss = F.cross_entropy(out, labels) + cost * mask.abs().sum()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                hits += int((out.argmax(1) == target).sum())
            success = hits / len(images)
            with torch.no_grad():
                mask, pattern = torch.tanh(mask_raw) / 2 + 0.5, torch.tanh(pattern_raw) / 2 + 0.5
            norm = float(mask.sum())
            last = (success, mask.detach().cpu(), pattern.detach().cpu())
            if success >= SUCCESS and (best is None or norm < 0.99 * best[0]):
                best, stale = (norm, last[1], last[2], success), 0
            elif best is not None:
                stale += 1
            up, down = (up + 1, 0) if success >= SUCCESS else (0, down + 1)
            if up >= patience:
                cost, up = cost * COST_UP, 0
            elif down >= patience:
                cost, down = cost / COST_DOWN, 0
            report(1, label=target, success=success, mask_l1=norm)
            if stale >= early_stop:
                break
    finally:
        for p, flag in zip(model.parameters(), frozen):
            p.requires_grad_(flag)
    if best is not None:
        return Trigger(target, best[1], best[2], best[3])
    return Trigger(target, last[1], last[2], last[0])


def anomaly_indices(norms: torch.Tensor) -> torch.Tensor:
    """``|norm - median| / (1.4826 * MAD)`` per label (0 everywhere when the MAD is 0)."""
    norms = norms.double()
    median = norms.median()
    mad = MAD_CONSISTENCY * (norms - median).abs().median()
    if float(mad) == 0.0:
        return torch.zeros_like(norms)
    return (norms - median).abs() / mad


def reverse_all(model: nn.Module, data: Dataset, *, images: int, epochs: int, seed: int,
                batch_size: int = 32) -> tuple[list[Trigger], list[int], torch.Tensor]:
    """A trigger per label of the model, the flagged (infected) labels, and every label's anomaly index.

    For label t the optimisation uses up to ``images`` attacker images whose label is not t."""
    gen = torch.Generator().manual_seed(seed)
    classes = int(getattr(model, "num_classes", None) or data.num_classes)
    phase("neural cleanse: reverse-engineering a trigger per label", classes * epochs)
    triggers = []
    for target in range(classes):
        pool = data.images[data.labels != target]
        pool = pool[torch.randperm(len(pool), generator=gen)[:images]]
        triggers.append(reverse_engineer(model, pool, target, epochs=epochs, gen=gen, batch_size=batch_size))
    norms = torch.tensor([t.norm for t in triggers])
    index = anomaly_indices(norms)
    median = norms.median()
    flagged = [t.target for t in triggers if index[t.target] > ANOMALY_THRESHOLD and norms[t.target] < median]
    return triggers, flagged, index


def chosen_triggers(triggers: list[Trigger], flagged: list[int]) -> list[Trigger]:
    """The flagged labels' triggers, or the smallest one when no label is flagged."""
    return [triggers[t] for t in flagged] or [min(triggers, key=lambda t: t.norm)]


def stamped(data: Dataset, triggers: list[Trigger], fraction: float, gen: torch.Generator) -> Dataset:
    """A random ``fraction`` of ``data`` (all of it for 1.0) with the triggers applied in turn, labels kept."""
    n = len(data) if fraction >= 1.0 else max(1, math.floor(len(data) * fraction))
    idx = torch.randperm(len(data), generator=gen)[:n]
    images = data.images[idx].clone()
    for i, trigger in enumerate(triggers):
        images[i::len(triggers)] = trigger.apply(images[i::len(triggers)]).clamp(0, 1).cpu()
    return Dataset(images, data.labels[idx].clone(), data.class_names, f"{data.name}/stamped", dict(data.meta))


def trigger_summary(triggers: list[Trigger], flagged: list[int], index: torch.Tensor) -> dict:
    """JSON-ready details: per-label mask norm, success and anomaly index; flagged labels."""
    return {"flagged": flagged, "flagged_count": len(flagged), "mask_l1": [round(t.norm, 3) for t in triggers],
            "success": [round(t.success, 4) for t in triggers], "anomaly_index": [round(float(a), 3) for a in index]}


NC_PARAMS = (
    Param("images", "int", "attacker images used to reverse-engineer each label's trigger"),
    Param("reverse_epochs", "int", "optimisation passes over those images per label"),
    Param("epochs", "int", "fine-tuning epochs afterwards"),
    Param("lr", "float", "fine-tuning Adam learning rate"),
    Param("batch_size", "int", "fine-tuning batch size"),
    Param("labels", "str", "'true' (the attacker's labels) or 'victim' (relabel by the victim's answers)"),
)


class TriggerReversal(Attack):
    """Shared by Neural Cleanse and laundering: reverse-engineer the triggers, choose the ones to remove."""

    def _init_reversal(self, images: int, reverse_epochs: int, epochs: int, lr: float, batch_size: int,
                       labels: str) -> None:
        self.images = check_positive("images", images, integer=True)
        self.reverse_epochs = check_positive("reverse_epochs", reverse_epochs, integer=True)
        set_training(self, epochs=epochs, lr=lr, batch_size=batch_size, labels=labels)

    def _reverse(self, model: nn.Module, data: Dataset, seed: int, log: AttackLog) -> tuple[Dataset, list[Trigger]]:
        """(the attacker's data with the chosen labels, the triggers to remove); the summary goes to ``log``."""
        data = labelled(model, data, self.labels, log)
        triggers, flagged, index = reverse_all(model, data, images=self.images, epochs=self.reverse_epochs, seed=seed)
        chosen = chosen_triggers(triggers, flagged)
        log.details.update(unlearned=[t.target for t in chosen], **trigger_summary(triggers, flagged, index))
        return data, chosen


class NeuralCleanse(TriggerReversal):
    """Reverse-engineer each label's trigger, flag outliers, unlearn the trigger by fine-tuning."""

    name = "neural-cleanse"
    description = "Neural Cleanse: reverse-engineer a trigger per label, flag outliers (MAD), unlearn it by fine-tuning"
    PARAMS = (Param("fraction", "float", "share of the attacker's images stamped with the trigger (paper: 0.2)"),
              ) + NC_PARAMS

    def __init__(self, fraction: float = 0.2, images: int = 1000, reverse_epochs: int = 30, epochs: int = 5,
                 lr: float = 1e-3, batch_size: int = 64, labels: str = "true") -> None:
        self.fraction = float(check_rate("fraction", fraction))
        self._init_reversal(images, reverse_epochs, epochs, lr, batch_size, labels)

    def _run(self, model: nn.Module, data: Dataset, seed: int, log: AttackLog) -> nn.Module:
        data, chosen = self._reverse(model, data, seed, log)
        gen = torch.Generator().manual_seed(seed + 1)
        train = concat([data, stamped(data, chosen, self.fraction, gen)], name=f"{data.name}/unlearning")
        train_layers(model, train, trainable=None, epochs=self.epochs, lr=self.lr, batch_size=self.batch_size,
                     seed=seed)
        return model
