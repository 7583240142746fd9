"""Overwriting by adversarial fine-tuning (frontier stitching §4.4, Table 3).

The paper turns 1,000 MNIST images into FGSM adversaries and fine-tunes the leaked model on them,
to overwrite a watermark made of adversaries (it relates this to adversarial training). We draw the
images from the attacker's split, perturb them with FGSM (``modelproof.protections.adversarial.fgsm``; l-infinity
by default, ``x* = clip(x + eps * sign(grad_x CE(model(x), y)), 0, 1)``, the norm the paper keeps
after comparing l1, l2 and l-infinity; l2 and l1 available), label each with its TRUE class, and
fine-tune all layers on them. Defaults: 1,000 adversaries (all of the attacker's images if it has
fewer), ``eps=0.25``, the paper's default FGSM step for its keys on MNIST (images in [0, 1]), and
every FGSM output is kept whether or not it fools the model (the paper "turns images into
adversaries" and does not filter). The paper fine-tunes on the adversaries alone, which is the
default; ``clean=true`` adds the attacker's clean images to the fine-tuning set. The paper gives no
epochs or rate, only that accuracy barely moves (Table 3: 0.983 after, for the CNN): we fine-tune one
epoch with Adam at 1e-4, a tenth of the training rate, as the paper used for embedding its key by
fine-tuning. More epochs on adversaries alone cost accuracy (LeNet-5 on MNIST, eps 0.25: -0.4 points
after 1 epoch, -2 after 2, -6 after 5; with ``clean=true`` 5 epochs cost -0.8).
"""

from __future__ import annotations

import torch
from torch import nn

from ..protections.adversarial import check_eps, check_norm, fgsm
from ..data.splits import Dataset, concat
from ..models.devices import model_device
from ..util.errors import ConfigError
from .base import Attack, AttackLog, Param, check_positive
from .tuning import train_layers


def make_adversaries(model: nn.Module, data: Dataset, n: int, eps: float, seed: int,
                     norm: str = "linf") -> tuple[Dataset, torch.Tensor]:
    """FGSM adversaries (``modelproof.protections.adversarial.fgsm`` in ``norm``) of ``min(n, len(data))`` random
    images of ``data``, labelled with their true class.

    Returns the adversaries and the indices of their source images in ``data``.
    """
    count = min(int(n), len(data))
    idx = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))[:count]
    src = data.subset(idx)
    adv = fgsm(model, src.images, src.labels, eps, norm)
    return Dataset(adv, src.labels.clone(), data.class_names, f"{data.name}/fgsm", dict(data.meta)), idx


class AdversarialFineTune(Attack):
    """Fine-tune on fresh FGSM adversaries of the attacker's images, labelled with their true class."""

    name = "overwrite"
    description = "frontier stitching overwriting: fine-tune on 1,000 fresh FGSM adversaries (true labels)"
    PARAMS = (
        Param("n", "int", "number of adversaries (capped at the attacker's image count)"),
        Param("eps", "float", "FGSM step size on [0, 1] images, in the chosen norm"),
        Param("norm", "str", "FGSM norm: linf (the paper's), l2 or l1"),
        Param("clean", "bool", "also fine-tune on the attacker's clean images (the paper: no)"),
        Param("epochs", "int", "fine-tuning epochs"),
        Param("lr", "float", "Adam learning rate"),
        Param("batch_size", "int", "batch size"),
    )

    def __init__(self, n: int = 1000, eps: float = 0.25, norm: str = "linf", clean: bool = False,
                 epochs: int = 1, lr: float = 1e-4, batch_size: int = 64) -> None:
        self.n = check_positive("n", n, integer=True)
        self.eps = check_eps(eps)
        self.norm = check_norm(norm)
        if not isinstance(clean, bool):
            raise ConfigError(f"clean must be true or false, got {clean!r}")
        self.clean = clean
        self.epochs = check_positive("epochs", epochs, integer=True)
        self.lr = float(check_positive("lr", lr))
        self.batch_size = check_positive("batch_size", batch_size, integer=True)

    def _run(self, model: nn.Module, data: Dataset, seed: int, log: AttackLog) -> nn.Module:
        adv, _ = make_adversaries(model, data, self.n, self.eps, seed, self.norm)
        with torch.no_grad():
            fooled = float((model(adv.images.to(model_device(model))).argmax(1).cpu() != adv.labels).float().mean())
        train = concat([adv, data], name=f"{data.name}/fgsm+clean") if self.clean else adv
        train_layers(model, train, trainable=None, epochs=self.epochs, lr=self.lr,
                     batch_size=self.batch_size, seed=seed)
        log.details.update(adversaries=len(adv), fooled_before=fooled, training_images=len(train))
        return model
