"""What a reference population is made of: twelve kinds of independent models, and who plays which role.

The kinds (:data:`KINDS`): two MLP widths, the Keras CNN on a shortened recipe, a CNN with
BatchNorm, LeNet-1/3/5, a random forest, extra-trees, logistic regression, an RBF-kernel classifier
and k nearest neighbours. Kinds that cannot read the images (LeNet-5 needs 12x12) are left out.

Roles: every member is either a *selection* reference (a key is chosen against it) or a
*calibration* reference (a key's null is bounded on it), never both. :func:`plan` lays out
``calibration`` members cycling over the kinds, ``selection`` general members cycling from the
other end, and for each owner architecture ``owner_share`` selection members of that architecture
(the models most likely to answer a key as the owner's model does, measured in issue 22). Names and
seeds follow from the plan alone, so a rerun finds what an interrupted build already made.

The recipe (:func:`train_config`): Adam, about 15,000 images' worth of steps (2 to 20 epochs) on at
most :data:`MAX_TRAIN` images drawn by the member's seed, a rate that suits each family. The
references stand for what an independent party could train; they need not be the best models.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from ..data.splits import Dataset
from ..models.training import TrainConfig
from ..util.errors import ConfigError
from .estimators import ESTIMATOR_KINDS

SELECTION, CALIBRATION = "selection", "calibration"
ROLES = (SELECTION, CALIBRATION)
RECIPE = "v1"            # bump when the kinds or the training recipe change: a new cache folder
MAX_TRAIN = 12000        # images a network reference trains on (a seeded subsample of larger owner splits)
DEFAULT_CALIBRATION = 24
DEFAULT_SELECTION = 24
OWNER_SHARE = 8          # selection references of the owner's own architecture


@dataclass(frozen=True)
class Kind:
    """One kind of reference: a zoo architecture (with its keyword arguments) or a stored estimator."""

    name: str
    arch: str | None = None
    arch_kwargs: dict = field(default_factory=dict)
    lr: float = 0.001
    epoch_scale: float = 1.0   # the Keras CNN's shortened recipe trains on half the steps


KINDS: tuple[Kind, ...] = (
    Kind("mlp", "mlp", {}, lr=0.003),
    Kind("cnn", "cnn", {}, epoch_scale=0.5),
    Kind("lenet5", "lenet5"),
    Kind("random-forest"),
    Kind("mlp-narrow", "mlp", {"hidden": 128}, lr=0.003),
    Kind("cnn-bn", "cnn-bn"),
    Kind("lenet1", "lenet1", lr=0.003),
    Kind("extra-trees"),
    Kind("lenet3", "lenet3"),
    Kind("logistic"),
    Kind("rbf-kernel"),
    Kind("knn"),
)
assert {k.name for k in KINDS if k.arch is None} == set(ESTIMATOR_KINDS)


@dataclass(frozen=True)
class Member:
    """One planned reference: its name (unique in a population), kind, role, seed and, for owner-architecture
    selection members, the owner architecture it serves."""

    name: str
    kind: Kind
    role: str
    seed: int
    for_arch: str | None = None


def fitting_kinds(data: Dataset) -> list[Kind]:
    """The kinds whose models can read ``data``'s images, in :data:`KINDS` order."""
    from ..models import build_model

    out = []
    for kind in KINDS:
        if kind.arch is not None:
            try:
                build_model(kind.arch, data.num_classes, data.input_shape, seed=0, **kind.arch_kwargs)
            except ConfigError:
                continue
        out.append(kind)
    return out


def owner_kind(arch: str) -> Kind:
    """The kind of an owner-architecture selection member (the kinds' recipe when it is one of them)."""
    for kind in KINDS:
        if kind.arch == arch and not kind.arch_kwargs:
            return kind
    return Kind(arch, arch)


def _seed(role: str, index: int, arch: str | None = None) -> int:
    """A member's seed: from its role, index and owner architecture; far from the small seeds owners use."""
    tag = hashlib.sha256(f"{role}/{arch or ''}".encode()).digest()
    return 1_000_000 + int.from_bytes(tag[:2], "little") * 1000 + index


def plan(data: Dataset, *, calibration: int = DEFAULT_CALIBRATION, selection: int = DEFAULT_SELECTION,
         owner_archs: tuple[str, ...] = (), owner_share: int = OWNER_SHARE) -> list[Member]:
    """The members of a population for ``data`` (see the module docstring), calibration first."""
    for name, value in (("calibration", calibration), ("selection", selection), ("owner_share", owner_share)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ConfigError(f"{name} must be a non-negative integer, got {value!r}")
    kinds = fitting_kinds(data)
    members = [Member(f"cal-{i:02d}-{kinds[i % len(kinds)].name}", kinds[i % len(kinds)], CALIBRATION,
                      _seed(CALIBRATION, i)) for i in range(calibration)]
    archs = [a for a in dict.fromkeys(owner_archs) if a]
    owner_share = min(owner_share, selection)
    general = max(selection - owner_share * len(archs), selection // 3 if archs else selection)
    reverse = kinds[::-1]
    members += [Member(f"sel-{i:02d}-{reverse[i % len(reverse)].name}", reverse[i % len(reverse)], SELECTION,
                       _seed(SELECTION, i)) for i in range(general)]
    for arch in archs:
        kind = owner_kind(arch)
        members += [Member(f"sel-{arch}-{i:02d}", kind, SELECTION, _seed(SELECTION, i, arch), for_arch=arch)
                    for i in range(owner_share)]
    return members


def epochs_for(data: Dataset, kind: Kind) -> int:
    """Epochs of a network reference: about 15,000 images' worth of steps (scaled by the kind), 1 to 20."""
    images = min(len(data), MAX_TRAIN)
    return max(1, min(20, round(kind.epoch_scale * max(2, round(15000 / max(images, 1))))))


def train_config(data: Dataset, kind: Kind) -> TrainConfig:
    """The training recipe of a network reference of ``kind`` on ``data``."""
    return TrainConfig(epochs=epochs_for(data, kind), batch_size=64, lr=kind.lr, optimizer="adam")


def recipe_record(data: Dataset, member: Member) -> dict:
    """What the manifest records of how ``member`` was made (JSON)."""
    if member.kind.arch is None:
        return {"estimator": member.kind.name, "max_fit_images": _max_fit(member.kind.name)}
    config = train_config(data, member.kind)
    return {"arch": member.kind.arch, "arch_kwargs": dict(member.kind.arch_kwargs), "epochs": config.epochs,
            "lr": config.lr, "batch_size": config.batch_size, "optimizer": config.optimizer,
            "max_train_images": MAX_TRAIN}


def _max_fit(kind: str) -> int:
    from .estimators import MAX_FIT

    return MAX_FIT[kind]
