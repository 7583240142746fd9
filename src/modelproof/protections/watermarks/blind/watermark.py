"""The blind watermark of Li et al. (ACSAC 2019) as a registered Protection, ``blind``.

The owner's logo (an image file or a text, default "TEST") is hidden by an encoder in key samples
that look like the owner's own images; the host learns to answer each key sample with a target
label while it learns its task (Algorithm 1, :mod:`.joint`). Choices, where the paper leaves room:

- key sources: ``key_fraction`` (default 1%, §5.1) of the owner's training images, chosen by the
  secret; they stay in the training data with their true labels, as in the authors' code.
- targets: one per key sample, drawn by the secret uniformly from the C - 1 classes OTHER than the
  source's true label (the authors' code draws from all C classes; a target equal to the true
  class is no evidence, because any good model answers it).
- loss weights: alpha = 3, beta = 5, gamma = 1, delta = 0.1, the authors' released script, not the
  3, 5, 0.1, 0.01 that §5.1 reports. Measured on MNIST (30 epochs of Algorithm 1,
  ``benchmarks/blind_mnist.py --weights``): with the paper's values the encoder collapsed to an
  all-black image on LeNet-3 and LeNet-5 (SSIM 0.42, key accuracy at chance) and LeNet-1 learnt
  42% of its key; with the authors' values LeNet-3 and LeNet-5 learnt all of it at SSIM 0.999.
  All four are parameters.
- ``mode="scratch"``: the host is trained from its initial weights (SGD lr 0.1, /10 every 40
  epochs, 100 epochs). ``mode="finetune"``: an already trained host is marked; the encoder and
  the discriminator start from scratch, the host is fine-tuned with a tenth of the rate (0.01,
  our choice), same schedule.
- randomness: key sources and targets from the secret; encoder and discriminator initialised from
  (secret, seed); the order of the owner's images from ``seed``.

Null match probability. Each target is uniform over the C - 1 classes other than the source's
label, drawn by the secret: whatever an independent suspect answers, it equals the target with
probability at most 1/(C - 1), independently per key sample (the floor). In fine-tune mode the
unprotected model is also asked 200 fresh key samples (other owner images, encoded by the trained
encoder, with targets of the same recipe) and ``null_match_prob = max(1/(C-1), U)``, U the 0.99
Clopper-Pearson upper bound on its match rate (:func:`embedding.probe_null`, as the trigger sets);
from scratch there is no unprotected model and the floor is used; ``modelproof calibrate``
re-estimates it on reference models. (The key samples are made by an encoder trained with their
targets, so they may carry a trace of them; a model trained without the owner's encoder has no
reason to read it, and calibration on reference models is what checks this.)

The encoder, the logo and the key's sources are the owner's secret (:mod:`.secret`): they travel in
``Protected.secret`` and are written beside the key by :meth:`BlindWatermark.save_extras`.
"""

from __future__ import annotations

import dataclasses

import copy
from pathlib import Path
from typing import ClassVar

import torch
from torch import nn

from ....util.checks import check_int
from ....data.splits import Dataset
from ....util.errors import ConfigError, KeyRefused
from ....keys.key import OwnershipKey
from ....models.modelfile import weights_digest
from ...base import Protected, Protection, register_protection
from ....models.training import evaluate, predict
from ..embedding import check_mode, check_number, key_accuracy, probe_null
from ...selection import Selection
from .imperceptibility import grid_png, imperceptibility
from .joint import JointConfig, LossWeights, train_jointly
from .logo import make_logo
from .networks import WIDTH, build_discriminator, build_encoder, check_shape, encode, parameter_count
from .secret import BlindSecret, save_secret, secret_path

PROBES, FRESH = 200, 200
FINETUNE_RATE = 0.1  # fine-tuning uses this fraction of the host's rate


def secret_targets(labels: torch.Tensor, num_classes: int, gen: torch.Generator) -> torch.Tensor:
    """One target per label, uniform over the ``num_classes - 1`` classes other than it."""
    draw = torch.randint(0, num_classes - 1, (len(labels),), generator=gen)
    return (labels + 1 + draw) % num_classes


def free_targets(sources: torch.Tensor, labels: torch.Tensor, num_classes: int, selection: Selection,
                 gen: torch.Generator) -> tuple[torch.Tensor, int]:
    """Key selection: one target per source, uniform over the classes other than its label that no judge
    answers for the source (the key sample looks like it); all other classes where every one is
    answered. Returns the targets and the smallest number of classes a target was drawn from."""
    free = torch.ones(len(labels), num_classes, dtype=torch.bool)
    rows = torch.arange(len(labels))
    free[rows, labels] = False
    base = free.clone()
    for judge in selection.judges:
        free[rows, judge.predict(sources)] = False
    free = torch.where(free.any(1, keepdim=True), free, base)
    m = free.sum(1)
    pick = (torch.rand(len(labels), generator=gen) * m).long()
    return (free.long().cumsum(1) <= pick[:, None]).sum(1).clamp(max=num_classes - 1), int(m.min())


MIN_SSIM = 0.5  # below this mean SSIM the key samples no longer look like their sources


def check_not_collapsed(ssim: float, inputs: torch.Tensor) -> None:
    """KeyRefused if the trained encoder collapsed: key samples with mean SSIM ``ssim`` to their sources
    below MIN_SSIM, or repeated. A refusal, not a fault (the experiment grid reads it "no key", with this
    reason): the sigmoid output saturates at black early in training, for some encoder initialisations and
    adversarial weights, and no longer recovers (its gradient vanishes). Measured on the MNIST survival
    grid's LeNet-5 (fine-tune mode, the secret's initialisation): with gamma = 1 the key samples were black
    (SSIM 0.42) within the first epoch whatever delta; with the paper's gamma = 0.1 the same
    initialisation reached SSIM 0.96 in 120 steps."""
    distinct = len(torch.unique(inputs.flatten(1), dim=0))
    if ssim < MIN_SSIM or distinct < len(inputs):
        raise KeyRefused(f"the blind watermark's encoder collapsed or is undertrained (mean SSIM {ssim:.2f} "
                          f"to the sources, below {MIN_SSIM}; {len(inputs) - distinct} repeated key samples); "
                          "train longer (--epochs), with another seed or secret, or other loss weights "
                          "(--gamma, --delta)")


@register_protection
class BlindWatermark(Protection):
    """Li et al.: encoder-made key samples carrying the owner's logo, learnt jointly with the host."""

    name = "blind"
    kind = "watermark"
    description = "Li et al. blind watermark: logo hidden by a trained encoder in near-identical key samples"
    # The demo (900 owner digits, seconds of CPU): 14 epochs of 18 steps, key 3% (27 samples), 10 per
    # step, the host term weighted 1 so that the key is learnt that fast, the adversarial term 0.1 (the
    # paper's, which these settings were tuned with). On 16x16 digits the key is still not learnt well
    # enough to pass calibration (reference models answer 80-86% of its targets): the demo refuses it.
    resumable: ClassVar[bool] = True  # 100 epochs: hours on a CPU for an MNIST CNN (joint.py's checkpoints)
    demo_params: ClassVar[dict] = {"secret": "demo", "mode": "finetune", "epochs": 14, "key_fraction": 0.03,
                                   "batch_size": 50, "key_batch": 10, "host_lr": 0.02, "gamma": 0.1, "delta": 1.0}

    def __init__(self, secret: int | str | None = None, *, logo: str | Path | None = None,
                 logo_text: str | None = None, key_fraction: float = 0.01, mode: str = "scratch",
                 epochs: int = 100, batch_size: int = 100, key_batch: int = 20, lr: float = 1e-3,
                 host_lr: float | None = None, lr_step: int = 40, alpha: float = LossWeights.alpha,
                 beta: float = LossWeights.beta, gamma: float = LossWeights.gamma,
                 delta: float = LossWeights.delta, width: int = WIDTH, quiet: bool = True) -> None:
        self.set_secret(secret)  # None: drawn at random when first used
        if logo is not None and logo_text is not None:
            raise ConfigError("give a logo file or a logo text, not both")
        if logo is not None and (not isinstance(logo, (str, Path)) or not str(logo)):
            raise ConfigError(f"logo must be the path of an image file, got {logo!r}")
        self._logo, self._logo_text, self._quiet = logo, logo_text, bool(quiet)
        self.logo_kind = "file" if logo is not None else "text"
        self.key_fraction = check_number("key_fraction", key_fraction, 0.0, 1.0, high_open=True)
        self.mode = check_mode(mode)
        self.epochs = check_int("epochs", epochs, 1)
        self.batch_size = check_int("batch_size", batch_size, 1)
        self.key_batch = check_int("key_batch", key_batch, 1)
        self.lr = check_number("lr", lr, 0.0, 1.0)
        default_rate = 0.1 * (FINETUNE_RATE if self.mode == "finetune" else 1.0)
        self.host_lr = check_number("host_lr", default_rate if host_lr is None else host_lr, 0.0, 10.0)
        self.lr_step = check_int("lr_step", lr_step, 1)
        self.alpha, self.beta, self.gamma, self.delta = (check_number(n, v, 0.0, 1e3) for n, v in
                                                         (("alpha", alpha), ("beta", beta), ("gamma", gamma),
                                                          ("delta", delta)))
        self.width = check_int("width", width, 1)

    def config(self) -> JointConfig:
        """Algorithm 1's hyper-parameters."""
        return JointConfig(epochs=self.epochs, batch_size=self.batch_size, key_batch=self.key_batch, lr=self.lr,
                           host_lr=self.host_lr, lr_step=self.lr_step,
                           weights=LossWeights(self.alpha, self.beta, self.gamma, self.delta))

    def _protect(self, model: nn.Module, data: Dataset, *, seed: int, test: Dataset | None,
                 selection: Selection | None = None) -> Protected:
        shape = check_shape(data.input_shape)
        num_classes = int(getattr(model, "num_classes", data.num_classes))
        if num_classes < 3:
            raise ConfigError(f"the blind watermark needs at least 3 classes (targets exclude the true one), got {num_classes}")
        size = round(self.key_fraction * len(data))
        if size < 1 or size >= len(data):
            raise ConfigError(f"key_fraction {self.key_fraction:g} of {len(data)} owner images gives {size} key "
                              "samples; need at least 1 and fewer than the owner's images")
        order = torch.randperm(len(data), generator=self.gen("sources"))
        sources, source_labels = data.images[order[:size]], data.labels[order[:size]]
        free_min = num_classes - 1
        if selection is None:
            targets = secret_targets(source_labels, num_classes, self.gen("targets"))
        else:
            targets, free_min = free_targets(sources, source_labels, num_classes, selection, self.gen("targets"))
        logo = make_logo(shape, path=self._logo, text=self._logo_text)
        init = int(torch.randint(0, 2 ** 62, (1,), generator=self.gen(f"init/{seed}")))
        encoder, disc = build_encoder(shape, seed=init, width=self.width), build_discriminator(shape, seed=init + 1)
        unprotected = copy.deepcopy(model) if self.mode == "finetune" else None

        def after_epoch(epoch: int) -> dict:
            row = {"key_accuracy": key_accuracy(model, encode(encoder, logo, sources), targets)}
            if test is not None:
                row["test_accuracy"] = evaluate(model, test)
            return row

        joint = train_jointly(model, encoder, disc, logo, data.images, data.labels, sources, targets, self.config(),
                              seed=seed, after_epoch=after_epoch, quiet=self._quiet, resume=self.resume)
        inputs = encode(encoder, logo, sources)
        quality = imperceptibility(sources, inputs)
        check_not_collapsed(quality["ssim_mean"], inputs)
        report = {"mode": self.mode, "epochs": joint.epochs, "steps": joint.steps, "embed_seconds": joint.seconds,
                  "history": joint.history, "encoder_parameters": parameter_count(encoder),
                  "discriminator_parameters": parameter_count(disc), "key_fraction": self.key_fraction,
                  "imperceptibility": quality,
                  "key_accuracy_trained": key_accuracy(model, inputs, targets)}
        floor = 1.0 / free_min
        record = None
        if selection is not None:  # keep what the host learnt and no judge answers with its target
            keep = (predict(model, inputs) == targets) & selection.unanswered(inputs, targets)
            if not bool(keep.any()):
                raise KeyRefused(f"blind: none of the {len(keep)} key samples is answered with its target by the "
                                  "protected model and by no selection reference; train longer (--epochs) or raise "
                                  "--key-fraction")
            record = selection.record("targets from the classes no judge answers for the source; key samples the "
                                      "host learnt and no judge answers", len(keep), int(keep.sum()),
                                      free_classes_min=free_min)
            targets, sources = targets[keep], sources[keep]
            inputs = encode(encoder, logo, sources)  # as the secret regenerates them (bit for bit: same batch)
            report["selection"] = record
        if unprotected is not None:
            rest = order[size:size + PROBES]
            probes = encode(encoder, logo, data.images[rest])
            p0, null_source, details = probe_null(unprotected, probes,
                                                  secret_targets(data.labels[rest], num_classes, self.gen("probes")),
                                                  floor)
            report.update(details, key_accuracy_unprotected=key_accuracy(unprotected, inputs, targets))
        else:
            p0 = floor
            null_source = (f"exact bound: each target drawn by the secret uniformly from the {num_classes - 1} classes "
                           f"other than its source's label, so an independent suspect matches it with probability at "
                           f"most 1/{num_classes - 1}, independently per key sample (trained from scratch: no "
                           "unprotected model to probe); re-estimate with `modelproof calibrate`")
        if test is not None:
            fresh = test.subset(torch.arange(min(FRESH, len(test))))
            samples = encode(encoder, logo, fresh.images)
            answers = predict(model, samples)
            fresh_targets = secret_targets(fresh.labels, num_classes, self.gen("fresh"))
            report.update(fresh_samples=len(fresh), fresh_key_accuracy=float((answers == fresh_targets).float().mean()),
                          fresh_true_label_rate=float((answers == fresh.labels).float().mean()),
                          fresh_imperceptibility=imperceptibility(fresh.images, samples))
        key = OwnershipKey(inputs=inputs, labels=targets, method=self.name,
                           params={**self.params(), **({"selection": record} if record else {})},
                           num_classes=num_classes, input_shape=shape, null_match_prob=p0, null_source=null_source,
                           model_digest=weights_digest(model))
        report.update(key_size=len(key), null_match_prob=p0)
        return Protected(model, key, report, secret=BlindSecret(encoder, logo, sources, key.digest()))

    def save_extras(self, result: Protected, key_path: Path, passphrase: str | None = None) -> dict:
        """Write the secret beside the key (encrypted with the key's passphrase) and the Figure-8 grid."""
        # bound to the key as written (calibration changes the key's digest after protect)
        secret: BlindSecret = dataclasses.replace(result.secret, key_digest=result.key.digest())
        path = save_secret(secret, secret_path(key_path), passphrase)
        grid = grid_png(secret.sources, result.key.inputs, key_path.parent / "key-samples.png")
        return {"secret_file": str(path), "secret_encrypted": passphrase is not None, "grid_png": str(grid)}
