"""Held-out independent models for the soundness benchmarks: trained by code outside the package.

A false claim is a key verified as "owned" on a model its owner never had. The models it is measured
on must be independent of everything the key saw: not selection references, not calibration
references, and, as far as a benchmark can, not made by modelproof's own zoo and training loop (a
population and a negative set trained by the same code share its habits). This module defines its
own networks and its own training recipe (SGD with momentum and weight decay, a cosine rate, random
one-pixel shifts) and uses scikit-learn estimators of six kinds, on the owner's split (the hardest
case: the same images as the owner) and on the attacker's split (a party with other data).

Kinds: wide MLP, CNN with BatchNorm, CNN without BatchNorm, a small residual net, random forest,
extra-trees, logistic regression, RBF-SVM, k-nearest neighbours and scikit-learn's MLP. Torch models
are cached as safetensors state dicts in ``cache`` (our own files; scikit-learn models are refitted,
never unpickled).

Use: ``from heldout import heldout_suspects`` in a benchmark run from ``benchmarks/``.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from torch.nn import functional as F

from modelproof.data.splits import Splits
from modelproof.suspects.local import SklearnSuspect, TorchSuspect

SEED_BASE = 1_000_003  # far from every seed the package's populations use


class WideMLP(nn.Module):
    def __init__(self, shape: tuple[int, int, int], classes: int, width: int = 384) -> None:
        super().__init__()
        n = shape[0] * shape[1] * shape[2]
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(n, width), nn.ReLU(), nn.Dropout(0.2),
                                 nn.Linear(width, width // 2), nn.ReLU(), nn.Linear(width // 2, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class ConvNet(nn.Module):
    def __init__(self, shape: tuple[int, int, int], classes: int, batchnorm: bool = True) -> None:
        super().__init__()
        norm = (lambda c: nn.BatchNorm2d(c)) if batchnorm else (lambda c: nn.Identity())
        k = 5 if batchnorm else 3
        self.features = nn.Sequential(nn.Conv2d(shape[0], 24, k, padding=k // 2), norm(24), nn.ReLU(), nn.MaxPool2d(2),
                                      nn.Conv2d(24, 48, 3, padding=1), norm(48), nn.ReLU(), nn.AdaptiveAvgPool2d(2))
        self.head = nn.Linear(48 * 4, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1))


class Block(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.a, self.b = nn.Conv2d(c, c, 3, padding=1), nn.Conv2d(c, c, 3, padding=1)
        self.na, self.nb = nn.BatchNorm2d(c), nn.BatchNorm2d(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.nb(self.b(F.relu(self.na(self.a(x))))))


class SmallResNet(nn.Module):
    def __init__(self, shape: tuple[int, int, int], classes: int) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(shape[0], 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.blocks = nn.Sequential(Block(16), nn.MaxPool2d(2), Block(16))
        self.head = nn.Linear(16, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)).mean((2, 3)))


TORCH_KINDS = {"wide-mlp": WideMLP, "cnn-bn": lambda s, c: ConvNet(s, c, True),
               "cnn-plain": lambda s, c: ConvNet(s, c, False), "resnet-small": SmallResNet}


def shifted(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Each image moved by up to one pixel in each direction (zero padding)."""
    dx, dy = (int(v) for v in torch.randint(-1, 2, (2,), generator=gen))
    return torch.roll(F.pad(x, (1, 1, 1, 1)), (dy, dx), (2, 3))[:, :, 1:-1, 1:-1]


def train_torch(kind: str, images: torch.Tensor, labels: torch.Tensor, classes: int, seed: int,
                steps: int) -> nn.Module:
    """SGD (momentum 0.9, weight decay 5e-4, cosine rate from 0.05) on shifted batches of 64."""
    torch.manual_seed(seed)
    model = TORCH_KINDS[kind](tuple(images.shape[1:]), classes)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = 0.05 * 0.5 * (1 + math.cos(math.pi * step / steps))
        idx = torch.randint(0, len(images), (64,), generator=gen)
        loss = F.cross_entropy(model(shifted(images[idx], gen)), labels[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def sklearn_kinds(seed: int) -> dict:
    from sklearn.ensemble import ExtraTreesClassifier, RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.neural_network import MLPClassifier
    from sklearn.svm import SVC

    return {"forest": RandomForestClassifier(n_estimators=60, max_features="log2", random_state=seed),
            "extra-trees": ExtraTreesClassifier(n_estimators=60, random_state=seed),
            "logistic": LogisticRegression(C=0.5, max_iter=300),
            "svm-rbf": SVC(C=5.0, gamma="scale", random_state=seed),
            "knn": KNeighborsClassifier(n_neighbors=3 + seed % 3),
            "sk-mlp": MLPClassifier(hidden_layer_sizes=(128,), max_iter=60, random_state=seed)}


def heldout_suspects(splits: Splits, cache: Path, count: int = 30, *, sklearn_cap: int = 8000,
                     steps: int | None = None) -> list:
    """``count`` held-out suspects (at least 30 suggested on the digits, 15 on MNIST), cycling over the
    ten kinds and the two data sources; torch models cached in ``cache``."""
    cache.mkdir(parents=True, exist_ok=True)
    sources = {"owner": splits.owner, "attacker": splits.attacker}
    shape, classes = splits.input_shape, splits.num_classes
    steps = steps or max(600, min(3000, 3 * len(splits.owner) // 64))
    kinds = list(TORCH_KINDS) + ["forest", "extra-trees", "logistic", "svm-rbf", "knn", "sk-mlp"]
    out = []
    for i in range(count):
        kind, source = kinds[i % len(kinds)], ("owner", "attacker")[(i // len(kinds) + i) % 2]
        data, seed = sources[source], SEED_BASE + 7 * i
        name = f"{kind}-{source}-{seed}"
        if kind in TORCH_KINDS:
            model = TORCH_KINDS[kind](shape, classes)
            path = cache / f"{name}-{steps}.safetensors"
            if path.is_file():
                model.load_state_dict(load_file(path))
                model.eval()
            else:
                model = train_torch(kind, data.images, data.labels, classes, seed, steps)
                tmp = path.with_suffix(".tmp")
                save_file(model.state_dict(), tmp)
                tmp.replace(path)
            out.append(TorchSuspect(model, identity=f"held-out {name}", num_classes=classes,
                                    input_shape=shape))
        else:
            rng = np.random.default_rng(seed)
            take = rng.permutation(len(data))[:sklearn_cap]
            estimator = sklearn_kinds(seed)[kind]
            with warnings.catch_warnings():  # sklearn's MLP stops at max_iter on purpose (a cheap model)
                warnings.simplefilter("ignore")
                estimator.fit(data.images[take].reshape(len(take), -1).numpy(), data.labels[take].numpy())
            out.append(SklearnSuspect(estimator, shape, classes, identity=f"held-out {name}"))
    return out


def accuracy(suspect, splits: Splits) -> float:
    """Test accuracy of a held-out suspect."""
    return float((suspect.predict(splits.test.images) == splits.test.labels).float().mean())
