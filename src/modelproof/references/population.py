"""The reference population ``protect`` trains by default to calibrate a key's null.

Independent models of several kinds, trained on the owner's data: the owner's architecture (when
known) and at least two others unlike each other, from seeds unlike the owner's, plus a random
forest. How many: ``count`` (default :data:`calibration.DEFAULT_REFERENCES`), the last one always a
forest. The recipe: Adam with a rate that suits each family (the README's digits recipe for small
dense nets, 1e-3 for convolutions) for a number of epochs that keeps each reference to seconds on
the digits and a couple of minutes on MNIST (``epochs_for``). The references need not be as good as
the owner's model: they stand for what an independent party could have trained.
"""

from __future__ import annotations

import hashlib
import time

from .calibration import DEFAULT_REFERENCES, MIN_REFERENCES, Reference
from ..util.checks import check_int
from ..data.splits import Dataset
from ..util.errors import ConfigError
from ..models.modelfile import weights_digest
from ..util.progress import progress_bar
from ..suspects.local import TorchSuspect, train_random_forest
from ..models.training import TrainConfig, train_new

# Families unlike each other, in the order they are used (the owner's architecture comes first).
FAMILIES = ("mlp", "cnn", "lenet5", "lenet1")
SEED_OFFSET = 7919  # reference seeds: owner seed + SEED_OFFSET * (i + 1), never the owner's


def epochs_for(data: Dataset) -> int:
    """Training epochs of a reference: about 15,000 images' worth of steps, between 2 and 20 epochs."""
    return max(2, min(20, round(15000 / max(len(data), 1))))


def architectures(data: Dataset, owner_arch: str | None, nets: int) -> list[str]:
    """``nets`` architectures cycling over the owner's and at least two other families fit for ``data``."""
    from ..models import build_model

    families = []
    for name in ((owner_arch,) if owner_arch else ()) + FAMILIES:
        if name in families:
            continue
        try:
            build_model(name, data.num_classes, data.input_shape, seed=0)
        except ConfigError:
            continue
        families.append(name)
    if len({f for f in families if f != owner_arch}) < 2:
        raise ConfigError(f"no two reference architectures fit inputs of shape {data.input_shape}; "
                          "pass --reference models of your own")
    return [families[i % len(families)] for i in range(nets)]


_TRAINED: dict[tuple, tuple[list[Reference], float]] = {}  # one population per data, architecture, count, seed


def train_references(data: Dataset, *, owner_arch: str | None = None, count: int = DEFAULT_REFERENCES,
                     seed: int = 0, quiet: bool = True) -> tuple[list[Reference], float]:
    """``count`` independent reference models on ``data`` (the last a random forest) and the seconds taken.

    Training is deterministic for its arguments, so a population is trained once per process and
    reused (the seconds reported are those of the training run).
    """
    count = check_int("references", count, MIN_REFERENCES)
    digest = hashlib.sha256(data.images.numpy().tobytes() + data.labels.numpy().tobytes()).hexdigest()
    key = (digest, owner_arch, count, seed)
    if key not in _TRAINED:
        _TRAINED[key] = _train(data, owner_arch, count, seed, quiet)
    return list(_TRAINED[key][0]), _TRAINED[key][1]


def _train(data: Dataset, owner_arch: str | None, count: int, seed: int, quiet: bool) -> tuple[list[Reference], float]:
    start = time.perf_counter()
    refs: list[Reference] = []
    nets = architectures(data, owner_arch, count - 1)
    with progress_bar(count, "training reference models", quiet) as advance:
        for i, arch in enumerate(nets):
            ref_seed = seed + SEED_OFFSET * (i + 1)
            lr = 0.003 if arch == "mlp" else 0.001
            model, _ = train_new(arch, data, TrainConfig(epochs=epochs_for(data), lr=lr), seed=ref_seed)
            name = f"{arch} (seed {ref_seed})"
            refs.append(Reference(TorchSuspect(model, identity=name), name, arch, weights_digest(model), trusted=True))
            advance(1)
        forest = train_random_forest(data, seed=seed + SEED_OFFSET * count)
        refs.append(Reference(forest, f"random forest (seed {seed + SEED_OFFSET * count})", "random-forest",
                              trusted=True))
        advance(1)
    return refs, time.perf_counter() - start
