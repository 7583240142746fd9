"""The pirated classifier of Ray et al.: the stolen model deployed unchanged behind a key-query detector.

:func:`build_pirate` computes the heatmap of every surrogate image (``heatmaps``), trains one DCGAN
per class on the heatmaps of that class's surrogate images (``dcgan``), and sets alpha_y = the
largest anomaly score (the discriminator's loss for "real", -log D_y(h)) over that class's
surrogate heatmaps. :class:`PiratedModel` answers a query x as follows: y = the stolen model's
label; score = -log D_y(heatmap(x)); if score > alpha_y + tau the query is flagged and answered with
a label drawn uniformly from the model's classes by the deployment's own ``torch.Generator``
(seeded by ``answer_seed``, never the global RNG), else with the stolen model's output unchanged.

Choices the paper leaves open: the surrogate set's labels are its ground truth (Ray et al. §IV-B:
"inputs whose ground truth label is l"); a prediction in a class the surrogate set does not hold
(a new-label model's extra class Delta) has no discriminator and is always flagged; flagged rows of
the output are one-hot scores of the random label (only the argmax is meaningful); the random
labels are a reproducible function of the seed and the sequence of flagged queries
(:meth:`PiratedModel.reset_answers` restarts the sequence).
"""

from __future__ import annotations

import copy
import time

import torch
from torch import nn

from ...data.splits import Dataset
from ...models.devices import model_device
from ...util.errors import ConfigError
from ...util.progress import progress_bar
from .dcgan import Discriminator, real_loss, train_dcgan
from .heatmaps import HeatmapExplainer

MIN_PER_CLASS = 2  # the discriminator's BatchNorm needs two images in a training batch


class PiratedModel(nn.Module):
    """``model`` behind the per-class discriminators: an ``nn.Module`` answering [N, num_classes] scores."""

    def __init__(self, model: nn.Module, discriminators: list[Discriminator], alphas: torch.Tensor, *,
                 tau: float, answer_seed: int = 0, width: float = 1.0) -> None:
        super().__init__()
        self.model = model.eval()
        self.discriminators = nn.ModuleList(discriminators)
        self.register_buffer("alphas", alphas.detach().float().clone().to(model_device(model)))
        self.tau = float(tau)
        self.answer_seed = int(answer_seed)
        self.width = float(width)
        self.num_classes = int(getattr(model, "num_classes", 0)) or None
        self.input_shape = tuple(getattr(model, "input_shape", ()))
        self.explainer = HeatmapExplainer(self.model, share=True)
        self.reset_answers()

    def reset_answers(self, seed: int | None = None) -> None:
        """Restart the random answers' generator (from ``answer_seed``, or ``seed``)."""
        self._answers = torch.Generator().manual_seed(self.answer_seed if seed is None else int(seed))

    def detect(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """For each image: the stolen model's ``logits`` and ``label``, anomaly ``score``, ``flagged``."""
        images = images.to(model_device(self.model))  # answered on the model's device
        with torch.no_grad():
            scores = self.model(images)
        label = scores.argmax(dim=1)
        heat, _ = self.explainer(images, label)
        anomaly = torch.full((len(images),), float("inf"), device=images.device)
        known = label < len(self.discriminators)
        for c in torch.unique(label[known]).tolist():
            rows = label == c
            anomaly[rows] = real_loss(self.discriminators[c], heat[rows])
        found = {"logits": scores, "label": label, "score": anomaly}
        return {**found, "flagged": self.flagged_at(found, self.tau)}

    def flagged_at(self, found: dict[str, torch.Tensor], tau: float) -> torch.Tensor:
        """Which of the images :meth:`detect` scored would be flagged with margin ``tau`` (Table V)."""
        label, known = found["label"], found["label"] < len(self.discriminators)
        threshold = torch.full_like(found["score"], float("inf"))
        threshold[known] = self.alphas[label[known]] + float(tau)
        return ~known | (found["score"] > threshold)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        found = self.detect(x)
        out = found["logits"].detach().clone()
        flagged = found["flagged"]
        n = int(flagged.sum())
        if n:
            random = torch.randint(0, out.shape[1], (n,), generator=self._answers)
            out[flagged] = nn.functional.one_hot(random, out.shape[1]).to(out.device, out.dtype)
        return out

    def detector_record(self) -> dict:
        """The JSON-friendly description of the detector saved beside the weights."""
        return {"tau": self.tau, "answer_seed": self.answer_seed, "classes": len(self.discriminators),
                "width": self.width,
                "heatmap": self.explainer.describe()}


def check_surrogate(data: Dataset) -> None:
    """Every class present with at least ``MIN_PER_CLASS`` images, else ConfigError naming the classes."""
    counts = data.class_counts()
    short = [c for c, n in enumerate(counts) if n < MIN_PER_CLASS]
    if short:
        raise ConfigError(f"the surrogate set {data.name!r} has fewer than {MIN_PER_CLASS} images of class(es) "
                          f"{', '.join(map(str, short))} (counts {counts}); raise the surrogate fraction")


def check_tau(tau: object) -> float:
    """tau as a non-negative finite float, else ConfigError."""
    if isinstance(tau, bool) or not isinstance(tau, (int, float)) or not 0.0 <= float(tau) < float("inf"):
        raise ConfigError(f"tau must be a non-negative number, got {tau!r}")
    return float(tau)


def build_pirate(model: nn.Module, surrogate: Dataset, *, tau: float = 2.0, epochs: int = 200,
                 batch_size: int = 64, lr: float = 2e-4, width: float = 1.0, seed: int = 0, answer_seed: int | None = None,
                 quiet: bool = False) -> tuple[PiratedModel, dict]:
    """The pirated model of ``model`` (copied, never modified) and what was measured while building it."""
    tau = check_tau(tau)
    check_surrogate(surrogate)
    start = time.perf_counter()
    stolen = copy.deepcopy(model).eval()
    explainer = HeatmapExplainer(stolen)
    heat, _ = explainer(surrogate.images)  # explained for the model's own predictions
    heat, classes = heat.to(model_device(stolen)), surrogate.labels.to(model_device(stolen))  # DCGANs train there
    gen = torch.Generator().manual_seed(int(seed))
    discriminators, alphas, losses = [], [], []
    with progress_bar(surrogate.num_classes * epochs, "pirate: training one DCGAN per class", quiet) as advance, \
            torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))  # Dropout2d inside the discriminators; the caller's RNG is restored
        for c in range(surrogate.num_classes):
            maps = heat[classes == c]
            disc, last = train_dcgan(maps, gen, epochs=epochs, batch_size=batch_size, lr=lr, width=width,
                                     advance=advance)
            discriminators.append(disc)
            alphas.append(float(real_loss(disc, maps).max()))
            losses.append(last)
    pirate = PiratedModel(stolen, discriminators, torch.tensor(alphas), tau=tau,
                          answer_seed=int(seed if answer_seed is None else answer_seed), width=width)
    details = {"heatmap": explainer.describe(), "alphas": [round(a, 4) for a in alphas],
               "surrogate_images": len(surrogate), "gan_losses": losses,
               "build_seconds": time.perf_counter() - start}
    return pirate.eval(), details


def surrogate_split(test: Dataset, fraction: float = 0.05, *, seed: int = 0) -> tuple[Dataset, Dataset]:
    """(surrogate, rest): a class-stratified ``fraction`` of ``test`` for the attacker, and the remainder.

    Ray et al. §V-A4: "We randomly sample 5% testing examples from the testing data"; stratified so
    that every class gets its share (the paper's draw is plain random). The remainder measures FPR
    and accuracy, so the surrogate images never count in them.
    """
    from ..base import check_rate

    fraction = float(check_rate("surrogate fraction", fraction))
    gen = torch.Generator().manual_seed(int(seed))
    take, keep = [], []
    for c in range(test.num_classes):
        idx = torch.nonzero(test.labels == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=gen)]
        k = round(len(idx) * fraction)
        take.append(idx[:k])
        keep.append(idx[k:])
    surrogate = test.subset(torch.cat(take), name=f"{test.name}/surrogate")
    rest = test.subset(torch.cat(keep), name=f"{test.name}/rest")
    if len(rest) == 0:
        raise ConfigError(f"surrogate fraction {fraction:g} leaves no test images of {test.name!r} to measure on")
    return surrogate, rest
