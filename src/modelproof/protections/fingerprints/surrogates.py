"""The models a conferrable fingerprint is generated against: the owner's surrogates and references.

Lukas et al. (ICLR 2021) generate fingerprints against two ensembles: *surrogates*, models derived
from the source model as a thief would (they agree with the source on the fingerprint), and
*references*, models trained independently on the same task (they must not). The owner makes both
cheaply here:

- :func:`make_surrogates`: a fine-tuned copy (all layers, the source's labels, a tenth of the
  training rate), a 50%-magnitude-pruned copy fine-tuned with its mask kept, and label-only
  distilled students of other zoo architectures, trained from scratch on images labelled by the
  source model, as the thief of issue 26 does with its own images. On the owner's training images
  the source's labels are the true labels, so students trained there are no different from
  independent models; the students here are trained on :func:`augmented` owner images (mixed
  pairs, noise and shifts) where the source's labels expose its own function (on the 16x16 digits
  it agrees with the true class on about 57% of them);
- :func:`train_independent`: references trained on the true labels, from seeds that the default
  calibration population (``modelproof.references.population``) never uses, so that the models a
  key is chosen against never also bound its null.

Every model is trained in seconds on the digits and a minute or two on MNIST (:func:`epochs_for`).
None depends on the key's secret, so under key selection each is kept in the population folder
(:func:`..derived.kept`) and a later key for the same model and data reads it instead.
"""

from __future__ import annotations

import copy
import functools
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ...data.splits import Dataset
from ...models import build_model
from ...models.modelfile import weights_digest
from ...models.registry import architecture_record
from ...models.training import TrainConfig, fit, predict
from ...util.errors import ConfigError
from ...util.progress import progress_bar
from ..derived import kept

FAMILIES = ("mlp", "cnn", "lenet5", "lenet1")
# Far from the calibration population's seeds (owner seed + 7919 * (i + 1)), so never the same models.
REFERENCE_SEED_BASE, REFERENCE_SEED_STEP = 15_485_863, 104_729
PRUNE_FRACTION = 0.5
SURROGATE_VERSION = 1  # raise when make_surrogates trains its members otherwise: kept ones are then made again


@dataclass(frozen=True)
class Ensemble:
    """Named models with their weight digests (what a key records of them)."""

    models: list[nn.Module] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    digests: list[str | None] = field(default_factory=list)

    def add(self, model: nn.Module | None, name: str, digest: str | None = None) -> None:
        """Append ``model`` (None: a judge without gradients, recorded by name and digest only)."""
        if model is not None:
            model.eval()
            for p in model.parameters():
                p.requires_grad_(False)
            self.models.append(model)
        self.names.append(name)
        self.digests.append(digest if digest is not None or model is None else weights_digest(model))

    def record(self) -> list[dict]:
        """[{name, digest}] for the key's parameters."""
        return [{"name": n, "digest": d} for n, d in zip(self.names, self.digests)]


def epochs_for(data: Dataset) -> int:
    """Training epochs of one surrogate or reference: about 15,000 images' worth, between 2 and 20."""
    return max(2, min(20, round(15000 / max(len(data), 1))))


def rate(arch: str) -> float:
    """Adam rate per family: the README's digits recipe for dense nets, 1e-3 for convolutions."""
    return 0.003 if arch == "mlp" else 0.001


def owner_arch(model: nn.Module) -> str | None:
    """The zoo architecture of ``model`` (None for a model not built by the zoo)."""
    try:
        return str(architecture_record(model)["arch"])
    except ConfigError:
        return None


def fitting_families(data: Dataset, exclude: str | None = None) -> list[str]:
    """The zoo families of :data:`FAMILIES` that accept ``data``'s inputs, less ``exclude``."""
    fit_ = []
    for arch in FAMILIES:
        if arch == exclude:
            continue
        try:
            build_model(arch, data.num_classes, data.input_shape, seed=0)
        except ConfigError:
            continue
        fit_.append(arch)
    return fit_


def magnitude_prune(model: nn.Module, fraction: float) -> dict[str, torch.Tensor]:
    """Zero the ``fraction`` smallest-magnitude entries of every weight matrix / kernel; returns the masks."""
    masks = {}
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() < 2:
                continue
            k = int(p.numel() * fraction)
            if k < 1:
                continue
            threshold = p.abs().flatten().kthvalue(k).values
            masks[name] = (p.abs() > threshold).to(p.dtype)
            p.mul_(masks[name])
    return masks


def augmented(data: Dataset, copies: int, gen: torch.Generator) -> Dataset:
    """``data`` plus ``copies`` x its size of new images: random pairs mixed (up to half and half), Gaussian
    noise of 0.15 and a random shift of up to 2 pixels per batch of images; labels kept (the first image's)."""
    parts, labels = [data.images], [data.labels]
    for _ in range(copies):
        i = torch.randint(0, len(data), (len(data),), generator=gen)
        j = torch.randint(0, len(data), (len(data),), generator=gen)
        lam = torch.rand(len(data), 1, 1, 1, generator=gen) * 0.5
        x = (1 - lam) * data.images[i] + lam * data.images[j] + 0.15 * torch.randn(data.images[i].shape, generator=gen)
        dy, dx = (int(v) for v in torch.randint(-2, 3, (2,), generator=gen))
        parts.append(torch.roll(x, shifts=(dy, dx), dims=(2, 3)).clamp(0.0, 1.0))
        labels.append(data.labels[i])
    return Dataset(torch.cat(parts), torch.cat(labels), data.class_names, f"{data.name}/augmented")


def relabelled(model: nn.Module, data: Dataset) -> Dataset:
    """``data``'s images with ``model``'s top-1 labels (what a label-only thief trains on)."""
    return Dataset(data.images, predict(model, data.images), data.class_names, f"{data.name}/source-labels")


def make_surrogates(model: nn.Module, data: Dataset, *, students: tuple[str, ...] | None, seed: int,
                    copies: int = 4, quiet: bool = True, folder: Path | None = None) -> Ensemble:
    """A fine-tuned copy, a pruned copy and label-only students (``students``: architectures; None:
    every zoo family that fits, the owner's included) of the source ``model``; the copies are tuned
    on ``data``, the students trained on :func:`augmented` ``data`` (``copies`` new images per image).
    None of them depends on the key's secret: with a ``folder`` each is made once for this model, data
    and recipe (:func:`..derived.kept`) and read by the next key."""
    epochs = epochs_for(data)
    arch = owner_arch(model)
    students = tuple(fitting_families(data)) if students is None else students

    @functools.cache
    def labelled() -> Dataset:  # the copies' data, made only when a copy is trained
        return relabelled(model, data)

    @functools.cache
    def teaching() -> Dataset:  # the students' data, made only when a student is trained
        return relabelled(model, augmented(data, copies, torch.Generator().manual_seed(seed + 17)))

    ensemble = Ensemble()
    base_lr = rate(arch or "cnn")
    common = {"kind": "conferrable surrogate", "version": SURROGATE_VERSION, "owner": weights_digest(model),
              "data": data.digest() if folder is not None else "", "seed": seed, "epochs": epochs}

    def copied(fraction: float, fit_seed: int) -> tuple[nn.Module, dict]:
        net = copy.deepcopy(model)
        for p in net.parameters():
            p.requires_grad_(True)
        masks = magnitude_prune(net, fraction) if fraction > 0 else {}
        fit(net, labelled(), TrainConfig(epochs=max(1, epochs // 2), lr=base_lr / 10), seed=fit_seed)
        with torch.no_grad():
            for name, p in net.named_parameters():
                if name in masks:
                    p.mul_(masks[name])
        return net, {}

    def student_of(arch_: str, net_seed: int) -> tuple[nn.Module, dict]:
        net = build_model(arch_, data.num_classes, data.input_shape, seed=net_seed)
        fit(net, teaching(), TrainConfig(epochs=max(2, round(2 * epochs / (copies + 1))), lr=rate(arch_)),
            seed=net_seed)
        return net, {}

    with progress_bar(2 + len(students), "training surrogates", quiet) as advance:
        tuned, _ = kept(folder, {**common, "member": "fine-tuned copy"}, lambda: copied(0.0, seed + 1))
        ensemble.add(tuned, "fine-tuned copy")
        advance(1)
        pruned, _ = kept(folder, {**common, "member": "pruned copy", "fraction": PRUNE_FRACTION},
                         lambda: copied(PRUNE_FRACTION, seed + 2))
        ensemble.add(pruned, f"{PRUNE_FRACTION:.0%}-pruned copy")
        advance(1)
        for i, student in enumerate(students):
            net_seed = seed + 31 * (i + 1)
            spec = {**common, "member": "student", "arch": student, "copies": copies, "net_seed": net_seed}
            net, _ = kept(folder, spec, lambda: student_of(student, net_seed))
            ensemble.add(net, f"{student} student (label-only)")
            advance(1)
    return ensemble


def train_independent(data: Dataset, count: int, *, owner: str | None, seed: int, quiet: bool = True,
                      folder: Path | None = None) -> Ensemble:
    """``count`` references trained on ``data``'s true labels, cycling over the owner's family and others
    (with a ``folder``, each made once for this data and seed: :func:`..derived.kept`)."""
    families = ([owner] if owner else []) + fitting_families(data, owner)
    if not families:
        raise ConfigError(f"no zoo architecture fits inputs of shape {data.input_shape}; pass a selection")
    ensemble = Ensemble()
    data_id = data.digest() if folder is not None else ""

    def trained(arch: str, ref_seed: int) -> tuple[nn.Module, dict]:
        net = build_model(arch, data.num_classes, data.input_shape, seed=ref_seed)
        fit(net, data, TrainConfig(epochs=epochs_for(data), lr=rate(arch)), seed=ref_seed)
        return net, {}

    with progress_bar(count, "training independent references", quiet) as advance:
        for i in range(count):
            arch = families[i % len(families)]
            ref_seed = seed + REFERENCE_SEED_BASE + REFERENCE_SEED_STEP * (i + 1)
            spec = {"kind": "conferrable reference", "version": SURROGATE_VERSION, "arch": arch, "seed": ref_seed,
                    "data": data_id}
            net, _ = kept(folder, spec, lambda: trained(arch, ref_seed))
            ensemble.add(net, f"{arch} (seed {ref_seed})")
            advance(1)
    return ensemble
