"""Distillation and model extraction: a fresh student trained on the victim's answers.

The piracy paper's §II.C (after Zhang et al.): train a surrogate from scratch on inputs labelled by
the target model, which copies its function but not its watermark. Here the attacker queries the
victim, as a black box, through :class:`QueryCounter` (batched; every image sent counts as one
query) and trains a freshly initialised student of the same or another zoo architecture:

- ``answers="labels"``: the victim's top-1 labels only (black box), cross-entropy;
- ``answers="probabilities"``: its softmax output; the student matches ``softmax(log p / T)`` by KL
  divergence at temperature ``T`` (scaled by T^2, Hinton et al.). The attacker re-tempers the
  probabilities it received, which is what ``softmax(z / T)`` of the victim's logits z equals.

Query data: ``source="attacker"`` (in distribution, the attacker's own images, labels unused),
``source="noise"`` (uniform noise in [0, 1]), ``source="photos"`` (random crops of scikit-learn's two
bundled photographs), a dataset named ``DATASET[:DIR]`` (its train split) or any :class:`Dataset`
(Knockoff-style out-of-
distribution images, e.g. Fashion-MNIST for an MNIST victim; resized, and grey/colour converted, to
the victim's input shape). ``queries`` caps the number of images sent (default: all of the source;
``noise`` and ``photos`` default to as many images as the attacker has). The student normalises its inputs with
the per-channel mean and std of the query images (the attacker does not know the owner's).
Defaults: 30 epochs of Adam at 1e-3 (training from scratch, the package's training rate), T = 4.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..data.splits import Dataset
from ..util.errors import ConfigError
from ..models import ARCHITECTURES, build_model
from ..protections.watermarks.patterns import photo_patches
from ..util.progress import phase, report
from ..models.devices import model_device
from ..models.training import logits
from .base import Attack, AttackLog, Param, check_choice, check_positive

ANSWERS = ("labels", "probabilities")


def check_student(student: object) -> str:
    """``student`` if it is ``same`` or a zoo architecture, else ConfigError."""
    if student != "same" and student not in ARCHITECTURES:
        raise ConfigError(f"student must be 'same' or one of {', '.join(ARCHITECTURES)}, got {student!r}")
    return student  # type: ignore[return-value]


def is_dataset_spec(source: object) -> bool:
    """Whether ``source`` names a dataset as ``DATASET[:DIR]`` (e.g. ``fashion-mnist:data/fmnist``)."""
    from ..data.splits import DATASETS

    return isinstance(source, str) and source.partition(":")[0] in DATASETS


def load_source(spec: str) -> Dataset:
    """The train split of the dataset ``spec`` names (``DATASET[:DIR]``)."""
    from ..data.splits import load_dataset

    name, _, root = spec.partition(":")
    return load_dataset(name, root or None, split="train")


class QueryCounter:
    """The victim behind a black-box interface: answers labels or probabilities, counts images queried."""

    def __init__(self, model: nn.Module, batch_size: int = 256) -> None:
        self.model = model
        self.batch_size = batch_size
        self.queries = 0

    def probabilities(self, images: torch.Tensor) -> torch.Tensor:
        """Softmax outputs for ``images`` (each image counts as one query)."""
        self.queries += len(images)
        return torch.softmax(logits(self.model, images, self.batch_size), dim=1)

    def labels(self, images: torch.Tensor) -> torch.Tensor:
        """Top-1 labels for ``images`` (each image counts as one query)."""
        return self.probabilities(images).argmax(dim=1)


def _to_shape(images: torch.Tensor, shape: tuple[int, int, int]) -> torch.Tensor:
    """``images`` converted to (C, H, W) = ``shape``: grey <-> colour, bilinear resize."""
    c, h, w = shape
    if images.shape[1] != c:
        if images.shape[1] == 1 and c == 3:
            images = images.repeat(1, 3, 1, 1)
        elif images.shape[1] == 3 and c == 1:
            images = images.mean(dim=1, keepdim=True)
        else:
            raise ConfigError(f"query images have {images.shape[1]} channels; the victim takes {c}")
    if tuple(images.shape[2:]) != (h, w):
        images = F.interpolate(images, size=(h, w), mode="bilinear", align_corners=False, antialias=True)
    return images.clamp(0.0, 1.0)


class Extraction(Attack):
    """Train a fresh student on the victim's answers to attacker, out-of-distribution or noise queries."""

    name = "extract"
    description = "model extraction / distillation: fresh student trained on the victim's answers (queries counted)"
    PARAMS = (
        Param("student", "str", "student architecture from the zoo, or 'same' as the victim"),
        Param("answers", "str", "'labels' (black box top-1) or 'probabilities' (soft labels, KL at temperature)"),
        Param("source", "str", "query images: 'attacker', 'noise', 'photos', 'DATASET:DIR' (its train split) or a "
                               "Dataset (CLI: --query-dataset)"),
        Param("queries", "int", "maximum number of images sent to the victim (0: all of the source)"),
        Param("temperature", "float", "distillation temperature for answers=probabilities"),
        Param("epochs", "int", "student training epochs"),
        Param("lr", "float", "student Adam learning rate"),
        Param("batch_size", "int", "batch size"),
    )

    def __init__(self, student: str = "same", answers: str = "labels", source: str | Dataset = "attacker",
                 queries: int = 0, temperature: float = 4.0, epochs: int = 30, lr: float = 1e-3,
                 batch_size: int = 64) -> None:
        self.student = check_student(student)
        self.answers = check_choice("answers", answers, ANSWERS)
        if not isinstance(source, Dataset) and not is_dataset_spec(source):
            check_choice("source", source, ("attacker", "noise", "photos"))
        elif isinstance(source, Dataset) and len(source) == 0:
            raise ConfigError(f"the query dataset {source.name!r} is empty")
        self.source = source
        self.queries = check_positive("queries", queries, integer=True, allow_zero=True)
        self.temperature = float(check_positive("temperature", temperature))
        self.epochs = check_positive("epochs", epochs, integer=True)
        self.lr = float(check_positive("lr", lr))
        self.batch_size = check_positive("batch_size", batch_size, integer=True)

    def _query_images(self, data: Dataset, shape: tuple[int, int, int], seed: int) -> tuple[torch.Tensor, str]:
        """The images to send to the victim, and a name for their source."""
        gen = torch.Generator().manual_seed(seed)
        source = load_source(self.source) if is_dataset_spec(self.source) else self.source
        if isinstance(source, Dataset):
            pool, name = _to_shape(source.images, shape), source.name
        elif self.source in ("noise", "photos"):
            n = self.queries or len(data)
            if self.source == "photos":
                return photo_patches(n, shape, gen), "crops of scikit-learn's photographs"
            return torch.rand((n, *shape), generator=gen), "uniform noise"
        else:
            pool, name = data.images, data.name
        n = min(self.queries or len(pool), len(pool))
        return pool[torch.randperm(len(pool), generator=gen)[:n]], name

    def _build_student(self, victim: nn.Module, data: Dataset, images: torch.Tensor, seed: int) -> nn.Module:
        arch = getattr(victim, "arch", None) if self.student == "same" else self.student
        if arch is None:
            raise ConfigError(f"the victim {type(victim).__name__} is not a zoo model; name the student "
                              f"architecture (student=...)")
        mean = images.mean(dim=(0, 2, 3))
        std = images.std(dim=(0, 2, 3)).clamp_min(1e-3)
        classes = int(getattr(victim, "num_classes", None) or data.num_classes)  # C + 1 for a new-label model
        return build_model(arch, classes, data.input_shape, seed=seed + 1,
                           mean=mean.tolist(), std=std.tolist())

    def _run(self, model: nn.Module, data: Dataset, seed: int, log: AttackLog) -> nn.Module:
        victim = QueryCounter(model)
        images, source_name = self._query_images(data, data.input_shape, seed)
        answers = victim.labels(images) if self.answers == "labels" else victim.probabilities(images)
        student = self._build_student(model, data, images, seed)
        self._train(student, images, answers, seed)
        log.queries = victim.queries
        log.details.update(student=getattr(student, "arch", type(student).__name__), answers=self.answers,
                           source=source_name, query_images=len(images))
        return student.eval()

    def _train(self, student: nn.Module, images: torch.Tensor, answers: torch.Tensor, seed: int) -> None:
        """Train ``student`` on the answers: cross-entropy on labels, or KL on re-tempered probabilities."""
        gen = torch.Generator().manual_seed(seed)
        opt = torch.optim.Adam(student.parameters(), lr=self.lr)
        t = self.temperature
        if self.answers == "probabilities":
            answers = torch.softmax(torch.log(answers.clamp_min(1e-12)) / t, dim=1)
        steps = math.ceil(len(images) / self.batch_size)
        device = model_device(student)  # answers come back on the CPU; batches go to the student
        student.train()
        phase("training the student", self.epochs * steps)
        for _ in range(self.epochs):
            perm = torch.randperm(len(images), generator=gen)
            for s in range(steps):
                idx = perm[s * self.batch_size:(s + 1) * self.batch_size]
                out, target = student(images[idx].to(device)), answers[idx].to(device)
                if self.answers == "labels":
                    loss = F.cross_entropy(out, target)
                else:
                    loss = F.kl_div(F.log_softmax(out / t, dim=1), target, reduction="batchmean") * t * t
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                report(1, loss=float(loss.detach()))
        student.eval()
