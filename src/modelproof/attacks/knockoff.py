"""Extraction with another distribution: Knockoff Nets, and transfer learning from the attacker's own model.

**Knockoff Nets** (Orekondy, Schiele and Fritz, CVPR 2019): the attacker queries the victim on images
of *another* distribution (its "transfer set", sampled at random: the paper's ``random`` strategy),
receives the full probability vectors, and trains a knockoff on them with the soft-label cross-entropy
(the KL divergence at temperature 1, :class:`~.extraction.Extraction`). Without a folder of another
dataset the transfer set is made locally: random crops of scikit-learn's two bundled photographs
(``source="photos"``); with one, any dataset (``source="fashion-mnist:DIR"``, on the CLI
``--query-dataset``; e.g. Fashion-MNIST for an MNIST victim). Defaults: 10,000 queries (the paper's budgets run from 10k to 100k), 20 epochs of Adam
at 1e-3, the victim's architecture.

**Transfer learning** (WRT's ``TransferLearningAttack``, in the SoK's list): the attacker starts from
a model of its own trained on another distribution, replaces its head with one for the victim's classes
and fine-tunes all layers on its data labelled by the victim (``labels="victim"``: queries counted) or
by its own labels. WRT starts from an ImageNet-pretrained ResNet-34 and fine-tunes 5 epochs; here the
model of the victim's (or the named) architecture is first trained on ``pretrain_images`` images of
the source: a labelled dataset with its own classes (``DATASET:DIR`` or ``--query-dataset``), or, by
default, the
self-supervised rotation task on photograph crops (predict which of 0, 90, 180, 270 degrees a crop
was turned by; Gidaris et al. 2018), which needs no labels and no download.
"""

from __future__ import annotations

import torch
from torch import nn

from ..data.splits import Dataset
from ..models import build_model
from ..models.devices import model_device
from ..models.training import TrainConfig, fit
from ..protections.watermarks.patterns import photo_patches
from ..util.errors import ConfigError
from .base import Attack, AttackLog, Param, check_choice, check_positive
from .extraction import Extraction, _to_shape, check_student, is_dataset_spec, load_source
from .tuning import labelled, set_training, train_layers


class KnockoffNets(Extraction):
    """Train a knockoff on the victim's probabilities for out-of-distribution queries (Orekondy et al.)."""

    name = "knockoff"
    description = ("Knockoff Nets: a student trained on the victim's probabilities for another distribution's "
                   "images (default: photograph crops)")

    def __init__(self, student: str = "same", answers: str = "probabilities", source: str | Dataset = "photos",
                 queries: int = 10000, temperature: float = 1.0, epochs: int = 20, lr: float = 1e-3,
                 batch_size: int = 64) -> None:
        super().__init__(student, answers, source, queries, temperature, epochs, lr, batch_size)


def rotation_task(n: int, shape: tuple[int, int, int], gen: torch.Generator) -> Dataset:
    """``n`` photograph crops, each turned by a random multiple of 90 degrees, labelled by that multiple."""
    if shape[1] != shape[2]:
        raise ConfigError(f"the rotation pretext needs square images, got {shape[1]}x{shape[2]}; pretrain on a "
                          "labelled dataset instead (--query-dataset)")
    crops = photo_patches(n, shape, gen)
    turns = torch.randint(0, 4, (n,), generator=gen)
    for k in range(1, 4):
        crops[turns == k] = torch.rot90(crops[turns == k], k, dims=(2, 3))
    return Dataset(crops, turns, ("0", "90", "180", "270"), "photo crops / rotation")


class TransferLearning(Attack):
    """Pretrain on another distribution, replace the head, fine-tune on the victim's (or true) labels."""

    name = "transfer-learning"
    description = ("transfer learning: the attacker's own model pretrained on another distribution, new head, "
                   "fine-tuned on the victim's labels")
    PARAMS = (
        Param("source", "str", "pretraining data: 'photos' (rotation task on photo crops), 'DATASET:DIR' (its "
                               "train split, its labels) or a Dataset (CLI: --query-dataset)"),
        Param("pretrain_images", "int", "pretraining images (all of a smaller dataset)"),
        Param("pretrain_epochs", "int", "pretraining epochs"),
        Param("student", "str", "architecture from the zoo, or 'same' as the victim"),
        Param("labels", "str", "'victim' (the victim's answers, counted as queries) or 'true'"),
        Param("epochs", "int", "fine-tuning epochs (WRT: 5)"),
        Param("lr", "float", "Adam learning rate of pretraining and fine-tuning"),
        Param("batch_size", "int", "batch size"),
    )

    def __init__(self, source: str | Dataset = "photos", pretrain_images: int = 10000, pretrain_epochs: int = 5,
                 student: str = "same", labels: str = "victim", epochs: int = 5, lr: float = 1e-3,
                 batch_size: int = 64) -> None:
        if isinstance(source, Dataset):
            if len(source) == 0:
                raise ConfigError(f"the pretraining dataset {source.name!r} is empty")
        elif not is_dataset_spec(source):
            check_choice("source", source, ("photos", "DATASET:DIR"))
        self.source = source
        self.pretrain_images = check_positive("pretrain_images", pretrain_images, integer=True)
        self.pretrain_epochs = check_positive("pretrain_epochs", pretrain_epochs, integer=True)
        self.student = check_student(student)
        set_training(self, epochs=epochs, lr=lr, batch_size=batch_size, labels=labels)

    def _pretraining_set(self, shape: tuple[int, int, int], gen: torch.Generator) -> Dataset:
        if self.source == "photos":
            return rotation_task(self.pretrain_images, shape, gen)
        source = load_source(self.source) if isinstance(self.source, str) else self.source
        pick = torch.randperm(len(source), generator=gen)[:self.pretrain_images]
        part = source.subset(pick)
        return Dataset(_to_shape(part.images, shape), part.labels, part.class_names, part.name)

    def _run(self, model: nn.Module, data: Dataset, seed: int, log: AttackLog) -> nn.Module:
        arch = getattr(model, "arch", None) if self.student == "same" else self.student
        if arch is None:
            raise ConfigError(f"the victim {type(model).__name__} is not a zoo model; name the architecture "
                              "(student=...)")
        train = labelled(model, data, self.labels, log)
        gen = torch.Generator().manual_seed(seed)
        pre = self._pretraining_set(data.input_shape, gen)
        mean, std = pre.images.mean(dim=(0, 2, 3)), pre.images.std(dim=(0, 2, 3)).clamp_min(1e-3)
        own = build_model(arch, pre.num_classes, data.input_shape, seed=seed + 1, mean=mean.tolist(),
                          std=std.tolist())
        own.to(model_device(model))
        fit(own, pre, TrainConfig(epochs=self.pretrain_epochs, batch_size=self.batch_size, lr=self.lr), seed=seed,
            description="pretraining the attacker's model")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed + 2)
            classes = int(getattr(model, "num_classes", None) or data.num_classes)  # C + 1: a new-label model
            own.head = nn.Linear(own.head.in_features, classes).to(own.head.weight.device)
        own.num_classes = classes
        train_layers(own, train, trainable=None, epochs=self.epochs, lr=self.lr, batch_size=self.batch_size,
                     seed=seed)
        log.details.update(student=arch, pretrained_on=pre.name, pretrain_images=len(pre), labels=self.labels)
        return own.eval()
