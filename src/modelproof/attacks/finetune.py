"""Fine-tuning and retraining attacks: IPGuard's FTLL, FTAL, RTLL, RTAL and long fine-tuning on a small set.

IPGuard §5.1.2: FTLL trains only the last (fully connected) layer, all others fixed; FTAL trains all
layers; RTLL re-initialises the last layer and trains only it; RTAL re-initialises the last layer
and trains all layers. The attacker trains on its own split (IPGuard says "the training data"; our
attacker never has the owner's). "Fixed" includes BatchNorm statistics: while only the last layer
trains, every BatchNorm stays in eval mode, so all other weights and buffers are bit-identical.

Defaults (IPGuard gives no numbers): Adam, batch 64, 10 epochs; learning rate 1e-4 for fine-tuning,
a tenth of the package's training rate (1e-3), as frontier stitching fine-tunes at 1/10 of the
original rate; 1e-3 for retraining, which must learn a freshly initialised layer from scratch.

The blind-watermark paper (§6.5) fine-tunes a stolen model for up to 100 epochs on 80% of a set
disjoint from the training data (its test set). Our attacker's split is that disjoint set:
:class:`SmallSetFineTune` fine-tunes all layers for 100 epochs on a ``fraction`` (default 0.8) of it.

``labels="victim"`` relabels the attacker's images with the victim's own answers (counted as
queries): the piracy paper's §II.C attacker, who has unlabelled data only.
"""

from __future__ import annotations

import copy
from typing import ClassVar

import torch
from torch import nn

from ..data.splits import Dataset
from ..models import last_linear
from .base import Attack, AttackLog, Param, check_choice, check_positive, check_rate
from .tuning import LABELS, labelled, train_layers

_COMMON = (
    Param("epochs", "int", "training epochs over the attacker's data"),
    Param("lr", "float", "Adam learning rate"),
    Param("batch_size", "int", "batch size"),
    Param("labels", "str", "'true' (the attacker's labels) or 'victim' (relabel by the victim's answers)"),
)


class _LastLayerFamily(Attack):
    """Shared body of FTLL/FTAL/RTLL/RTAL: which layers train and whether the head is re-initialised."""

    train_all: ClassVar[bool] = False
    reinit: ClassVar[bool] = False
    PARAMS = _COMMON

    def __init__(self, epochs: int = 10, lr: float = 1e-4, batch_size: int = 64, labels: str = "true") -> None:
        self.epochs = check_positive("epochs", epochs, integer=True)
        self.lr = float(check_positive("lr", lr))
        self.batch_size = check_positive("batch_size", batch_size, integer=True)
        self.labels = check_choice("labels", labels, LABELS)

    def _run(self, model: nn.Module, data: Dataset, seed: int, log: AttackLog) -> nn.Module:
        name, head = last_linear(model)
        train_data = labelled(model, data, self.labels, log)
        if self.reinit:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                fresh = copy.deepcopy(head).cpu()  # drawn by the CPU generator: the same weights on every device
                fresh.reset_parameters()
            head.load_state_dict(fresh.state_dict())
        trainable = None if self.train_all else list(head.parameters())
        train_layers(model, train_data, trainable=trainable, epochs=self.epochs, lr=self.lr,
                     batch_size=self.batch_size, seed=seed, freeze_statistics=not self.train_all)
        log.details.update(head=name, trained="all layers" if self.train_all else name,
                           reinitialised=name if self.reinit else None)
        return model


class FTLL(_LastLayerFamily):
    """Fine-tune the last layer only (IPGuard §5.1.2)."""

    name = "ftll"
    description = "IPGuard FTLL: fine-tune only the last layer on the attacker's data; all others fixed"


class FTAL(_LastLayerFamily):
    """Fine-tune all layers (IPGuard §5.1.2)."""

    name = "ftal"
    description = "IPGuard FTAL: fine-tune all layers on the attacker's data"
    train_all = True


class RTLL(_LastLayerFamily):
    """Re-initialise the last layer, then train only it (IPGuard §5.1.2)."""

    name = "rtll"
    description = "IPGuard RTLL: re-initialise the last layer, then train only it; all others fixed"
    reinit = True

    def __init__(self, epochs: int = 10, lr: float = 1e-3, batch_size: int = 64, labels: str = "true") -> None:
        super().__init__(epochs, lr, batch_size, labels)


class RTAL(_LastLayerFamily):
    """Re-initialise the last layer, then train all layers (IPGuard §5.1.2)."""

    name = "rtal"
    description = "IPGuard RTAL: re-initialise the last layer, then train all layers"
    train_all = True
    reinit = True

    def __init__(self, epochs: int = 10, lr: float = 1e-3, batch_size: int = 64, labels: str = "true") -> None:
        super().__init__(epochs, lr, batch_size, labels)


class SmallSetFineTune(Attack):
    """Long fine-tuning of all layers on a small part of the attacker's data (blind watermark §6.5)."""

    name = "finetune-small"
    description = "blind-watermark §6.5: fine-tune all layers for many epochs on a small disjoint set (80%)"
    PARAMS = (Param("fraction", "float", "share of the attacker's data fine-tuned on, in (0, 1)"),) + _COMMON

    def __init__(self, fraction: float = 0.8, epochs: int = 100, lr: float = 1e-4, batch_size: int = 64,
                 labels: str = "true") -> None:
        self.fraction = check_rate("fraction", fraction)
        self.epochs = check_positive("epochs", epochs, integer=True)
        self.lr = float(check_positive("lr", lr))
        self.batch_size = check_positive("batch_size", batch_size, integer=True)
        self.labels = check_choice("labels", labels, LABELS)

    def _run(self, model: nn.Module, data: Dataset, seed: int, log: AttackLog) -> nn.Module:
        n = max(1, round(len(data) * float(self.fraction)))
        perm = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))
        small = labelled(model, data.subset(perm[:n], f"{data.name}/small"), self.labels, log)
        train_layers(model, small, trainable=None, epochs=self.epochs, lr=self.lr,
                     batch_size=self.batch_size, seed=seed)
        log.details.update(images=n)
        return model
