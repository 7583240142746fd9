"""How detectable a protection's key samples are: the key-sample detectors of Li et al. (ACSAC 2019) §6.3.

An evaluation, not a deployed attack. The attacker holds a share of the training data (the paper:
10%) and knows the protection method but not the owner's secret, so it generates key samples with
the same method and parameters and a secret of its own (:func:`attacker_key_samples`). It then
trains a binary detector, clean vs key, by Eq. 16 (binary cross-entropy on a sigmoid output) with
SGD, learning rate 0.01, 20 epochs; the detector is

- ``mlp``: three fully connected layers of 512, 256 and 1 units (ReLU between them: the paper does
  not name the hidden activation), sigmoid output, on the flattened image; or
- ``features``: the stolen model's own layers up to ``model.features`` (transferred weights,
  fine-tuned; ``freeze=True`` keeps them fixed), then one linear output (the paper: ResNet-18).

:func:`detectability` reports the ROC curve and AUC (scikit-learn's ``roc_curve`` and
``roc_auc_score``) of the detector's "key" score on the owner's REAL key inputs (positives) against
held-out clean images (negatives). Choices the paper leaves open: the attacker's training set is
balanced (as many generated key samples as clean images, at most ``max_samples`` of each); batch
size 64; the attacker's secret is derived from ``seed``.
"""

from __future__ import annotations

import copy
import inspect

import torch
import torch.nn.functional as F
from torch import nn

from ...data.splits import Dataset
from ...models.devices import model_device
from ...util.errors import ConfigError
from ...keys.key import OwnershipKey
from ..base import check_choice
from .dcgan import init_linear

KINDS = ("mlp", "features")
SIZE_PARAMS = ("key_size", "points")  # the constructor argument that sets how many key inputs a method makes


def attacker_key_samples(key: OwnershipKey, stolen: nn.Module, data: Dataset, n: int, *, seed: int = 0) -> torch.Tensor:
    """``n`` (or fewer) key inputs made by ``key.method`` with the owner's parameters and the attacker's secret."""
    from ...protections.base import PROTECTIONS, discover_protections
    from ...protections.watermarks.trigger_set import TriggerSet

    discover_protections()
    if key.method not in PROTECTIONS:
        raise ConfigError(f"unknown protection {key.method!r}; expected one of {', '.join(sorted(PROTECTIONS))}")
    cls = PROTECTIONS[key.method]
    accepted = _init_params(cls)
    params = {k: v for k, v in key.params.items() if k in accepted}
    for size in SIZE_PARAMS:
        if size in accepted:
            params[size] = int(n)
    if "key_fraction" in accepted and len(data) > 1:  # the blind watermark: n of the attacker's images as sources
        params["key_fraction"] = min(int(n), len(data) - 1) / len(data)
    if "secret" in accepted:
        params["secret"] = f"attacker-{seed}"
    protection = cls(**params)
    num_classes = int(getattr(stolen, "num_classes", key.num_classes))
    if isinstance(protection, TriggerSet):  # the key without embedding it: all the attacker needs
        inputs = protection.plan(stolen, data, num_classes).inputs
    else:
        inputs = protection.protect(stolen, data, seed=seed).key.inputs
    return inputs[:n]


def _init_params(cls: type) -> set[str]:
    """Keyword arguments accepted by ``cls`` and its bases' constructors (they pass ``**common`` up)."""
    names: set[str] = set()
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is not None:
            names |= {p.name for p in inspect.signature(init).parameters.values()
                      if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD) and p.name != "self"}
    return names


def mlp_detector(input_shape: tuple[int, int, int], gen: torch.Generator) -> nn.Module:
    """Li et al.'s 3-layer detector: flatten -> 512 -> 256 -> 1 (logit; the sigmoid is in the loss)."""
    c, h, w = input_shape
    net = nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, 512), nn.ReLU(), nn.Linear(512, 256), nn.ReLU(),
                        nn.Linear(256, 1))
    for m in net:
        if isinstance(m, nn.Linear):
            init_linear(m, gen)
    return net


def feature_detector(stolen: nn.Module, gen: torch.Generator, *, freeze: bool = False) -> nn.Module:
    """The stolen model's ``normalize`` and ``features`` (copied), then one linear output."""
    from ...models import last_linear

    if not hasattr(stolen, "features"):
        raise ConfigError(f"the feature detector needs a model with .features, got {type(stolen).__name__}")
    trunk = copy.deepcopy(nn.Sequential(*(m for m in (getattr(stolen, "normalize", None), stolen.features)
                                          if m is not None)))
    for p in trunk.parameters():
        p.requires_grad_(not freeze)
    out = nn.Linear(last_linear(stolen)[1].in_features, 1)
    init_linear(out, gen)
    return nn.Sequential(trunk, out)


def train_detector(net: nn.Module, clean: torch.Tensor, keys: torch.Tensor, gen: torch.Generator, *,
                   epochs: int = 20, lr: float = 0.01, batch_size: int = 64) -> nn.Module:
    """Eq. 16 with SGD (fixed ``lr``) for ``epochs``: key samples labelled 1, clean images 0."""
    device = model_device(net)  # batches go to the detector's device
    x = torch.cat([clean, keys])
    y = torch.cat([torch.zeros(len(clean)), torch.ones(len(keys))])
    opt = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=lr)
    net.train()
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=gen)
        for start in range(0, len(x), batch_size):
            idx = order[start:start + batch_size]
            opt.zero_grad()
            F.binary_cross_entropy_with_logits(net(x[idx].to(device)).flatten(), y[idx].to(device)).backward()
            opt.step()
    return net.eval()


def roc(scores: torch.Tensor, positive: torch.Tensor) -> dict:
    """ROC curve and AUC of ``scores`` for the boolean ``positive`` labels (scikit-learn)."""
    from sklearn.metrics import roc_auc_score, roc_curve

    s, y = scores.detach().double().numpy(), positive.bool().numpy()
    fpr, tpr, thresholds = roc_curve(y, s)
    return {"auc": float(roc_auc_score(y, s)), "fpr": fpr.tolist(), "tpr": tpr.tolist(),
            "thresholds": [float(t) for t in thresholds]}


def detectability(key: OwnershipKey, stolen: nn.Module, attacker: Dataset, held_out: Dataset, *,
                  kind: str = "mlp", freeze: bool = False, epochs: int = 20, lr: float = 0.01,
                  max_samples: int = 1000, seed: int = 0) -> dict:
    """Train a ``kind`` detector as the attacker and measure it on the owner's key vs ``held_out`` images."""
    kind = check_choice("detector kind", kind, KINDS)
    gen = torch.Generator().manual_seed(int(seed))
    n = min(len(attacker), int(max_samples))
    clean = attacker.images[torch.randperm(len(attacker), generator=gen)[:n]]
    keys = attacker_key_samples(key, stolen, attacker, n, seed=seed)
    net = mlp_detector(attacker.input_shape, gen) if kind == "mlp" else feature_detector(stolen, gen, freeze=freeze)
    net.to(model_device(stolen))  # built on the CPU from ``gen``, trained beside the stolen model
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))  # dropout inside a transferred trunk
        train_detector(net, clean, keys[:n], gen, epochs=epochs, lr=lr)
    negatives = held_out.images[:max(len(key), min(len(held_out), int(max_samples)))]
    with torch.no_grad():
        scores = torch.cat([net(key.inputs.to(model_device(net))).flatten().cpu(),
                            net(negatives.to(model_device(net))).flatten().cpu()])
    positive = torch.cat([torch.ones(len(key)), torch.zeros(len(negatives))])
    return {"kind": kind, "method": key.method, "attacker_clean": len(clean), "attacker_keys": len(keys),
            "owner_keys": len(key), "clean_negatives": len(negatives), **roc(scores, positive)}
