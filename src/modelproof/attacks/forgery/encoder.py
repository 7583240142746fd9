"""Independent-encoder forgery (Li et al. 2019, §6.4, Figure 9): a counterfeiter trains its own blind watermark.

"What if the attacker trained a 'same' encoder by using the same architecture, dataset, and
hyper-parameters?" The counterfeiter runs the blind watermark (``watermarks.blind``, Algorithm 1)
itself, on its own images and with its own secret: an encoder of the same architecture, the same
logo (the paper's "TEST" by default), a host of the architecture it believes the victim has,
trained from scratch with its own seed (``mode="finetune"``: it first trains a host of its own on its
images, then marks it, the owner's recipe when the owner fine-tuned). Its key (encoded own images, targets other than their
classes) is the forged key, with the blind watermark's null (1/(C-1), exact for such targets).
It never queries the suspect: whether the suspect answers the forged key measures whether key
samples transfer between independently trained encoder/host pairs (the off-diagonal of Figure 9).
"""

from __future__ import annotations

from typing import ClassVar

import torch

from ...util.checks import check_int
from ...util.errors import ConfigError
from ...keys.key import OwnershipKey
from ...models import build_model
from ...models.training import TrainConfig, train_new
from ...protections.watermarks.embedding import check_mode
from ...protections.watermarks.blind import BlindWatermark
from ...protections.watermarks.blind.joint import LossWeights
from ..base import Param, check_positive, check_rate
from .base import Counterfeiter, Forgery


class IndependentEncoder(Forgery):
    """Train an own encoder + host of the blind watermark's architecture on own data; its key is the forgery."""

    name = "forge-independent-encoder"
    description = ("Li et al. Fig. 9: train an own blind watermark (same encoder architecture and logo, own data, "
                   "own seed); its key is the forged key")
    access = "queries"
    imitates = "blind (targets other than the source's class, null 1/(C-1))"
    PARAMS: ClassVar[tuple[Param, ...]] = (
        Param("arch", "str", "host architecture the counterfeiter trains (the victim's, if it guesses it)"),
        Param("mode", "str", "scratch (Figure 9: host trained with the watermark) or finetune (own host "
                             "trained first, then marked)"),
        Param("epochs", "int", "epochs of Algorithm 1 (the paper: 100); finetune: also of the own host"),
        Param("key_fraction", "float", "share of own images made key samples (the paper: 1%)"),
        Param("batch_size", "int", "own images per step of Algorithm 1"),
        Param("key_batch", "int", "key sources per step of Algorithm 1"),
        Param("host_lr", "float", "host learning rate (default: the blind watermark's)"),
        Param("gamma", "float", "weight of the adversarial term (the blind watermark's default; the paper: 0.1)"),
        Param("delta", "float", "weight of the host term in the encoder loss (the blind watermark's default; "
                                "the paper: 0.01)"),
        Param("logo_text", "str", "logo text (the paper's example: TEST)"),
    )

    def __init__(self, arch: str = "lenet5", mode: str = "scratch", epochs: int = 5, key_fraction: float = 0.01,
                 batch_size: int = 100, key_batch: int = 20, host_lr: float | None = None,
                 gamma: float = LossWeights.gamma, delta: float = LossWeights.delta, logo_text: str = "TEST") -> None:
        if not isinstance(arch, str) or not arch:
            raise ConfigError(f"arch must be a zoo architecture name, got {arch!r}")
        self.arch, self.mode, self.logo_text = arch, check_mode(mode), logo_text
        self.epochs = check_int("epochs", epochs, 1)
        self.key_fraction = float(check_rate("key_fraction", key_fraction))
        self.batch_size = check_int("batch_size", batch_size, 1)
        self.key_batch = check_int("key_batch", key_batch, 1)
        self.host_lr = None if host_lr is None else float(check_positive("host_lr", host_lr))
        self.gamma = float(check_positive("gamma", gamma, allow_zero=True))
        self.delta = float(check_positive("delta", delta, allow_zero=True))
        # validates the recipe now, not mid-attack
        BlindWatermark(secret="parameter-check", logo_text=logo_text, mode=self.mode, epochs=self.epochs,
                       key_fraction=self.key_fraction, batch_size=self.batch_size,
                       key_batch=self.key_batch, host_lr=self.host_lr, gamma=self.gamma, delta=self.delta)

    def _forge(self, work: Counterfeiter) -> OwnershipKey:
        data = work.data
        seed = int(torch.randint(0, 2 ** 31 - 1, (1,), generator=work.generator("encoder")))
        classes = int(work.suspect.num_classes)
        if self.mode == "finetune":  # its own host first, trained on its own images
            host, _ = train_new(self.arch, data, TrainConfig(epochs=self.epochs), seed=seed)
        else:
            host = build_model(self.arch, classes, data.input_shape, seed=seed)
        own = BlindWatermark(secret=f"counterfeiter-{seed}", logo_text=self.logo_text, mode=self.mode,
                             epochs=self.epochs, key_fraction=self.key_fraction, batch_size=self.batch_size,
                             key_batch=self.key_batch, host_lr=self.host_lr, gamma=self.gamma, delta=self.delta)
        made = own.protect(host, data, seed=seed)
        work.details.update(own_key_accuracy=made.report.get("key_accuracy_trained"), host_seed=seed,
                            key_size=len(made.key))
        return self.key(work, made.key.inputs, made.key.labels, null=made.key.null_match_prob,
                        null_source=made.key.null_source)
