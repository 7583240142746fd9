"""The experiment config: one TOML file naming the grid, read with ``tomllib`` and validated.

Every error is one line naming the bad key (``attacks[2].params: unknown parameter 'rat' ...``).
The format (see the README's "Experiments" section and ``experiments/*.toml``)::

    [experiment]            name, seeds (list of ints), secret (owner secret prefix), threads
    [[datasets]]            name, data_dir, size, attacker_fraction, test_fraction, split_seed,
                            owner_images / attacker_images (random subsets, to size a run)
    [[hosts]]               arch, label, epochs, batch_size, lr, optimizer, weight_decay, schedule, augment
    [[protections]]         name ("all": every registered one not listed), label, params = {...}
    [[attacks]]             name ("all" as above; "none": the unattacked protected model), label,
                            params = {...}, sweep = {param = [v1, v2, ...]} (one attack per value);
                            a removal attack, the evasion attack "pirate", an input preprocessing
                            ("jpeg", ...), a forgery ("forge-...") or a "chain" of attacks:
                            params = {steps = ["weight-shifting epochs=5", "smoothing filter=median"]}
                            (or steps = [{name = "...", params = {...}}, ...])
    [[negatives]]           arch ("same": the host's, or a zoo name, or "forest"), seed, trees
    [verification]          alpha, mode ("fixed" | "sequential"), budget, batch_size
    [plausibility]          max_drop, min_accuracy (either or both)
    [report]                show_keys (key samples in the HTML report; default true)

A protection listed by "all" gets the parameters its class declares in ``demo_params`` (tuned
for the bundled digits) without their secret; every run derives each key's secret from
``experiment.secret``, the protection's label and the seed.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field


SECTIONS = {"experiment", "datasets", "hosts", "protections", "attacks", "negatives", "verification",
            "plausibility", "report"}
DATASET_KEYS = {"name", "data_dir", "size", "attacker_fraction", "test_fraction", "split_seed", "owner_images",
                "attacker_images"}
HOST_KEYS = {"arch", "label", "epochs", "batch_size", "lr", "optimizer", "momentum", "weight_decay", "schedule",
             "augment"}
UNATTACKED = "none"


@dataclass(frozen=True)
class Item:
    """One expanded protection or attack: its registered name, label and parameters (and sweep value)."""

    name: str
    label: str
    params: dict = field(default_factory=dict)
    strength: tuple[str, float] | None = None  # (swept parameter, value) for robustness curves

    def spec(self) -> dict:
        """What its results depend on (hashed into the cache)."""
        return {"name": self.name, "params": self.params}


@dataclass(frozen=True)
class Negative:
    """A negative suspect: a model of ``arch`` (or a random forest) trained independently from ``seed``."""

    arch: str
    seed: int
    trees: int = 20

    @property
    def label(self) -> str:
        return f"forest seed={self.seed}" if self.arch == "forest" else f"{self.arch} seed={self.seed}"


@dataclass(frozen=True)
class ExperimentConfig:
    """A validated experiment: the grid's axes, verification and plausibility settings."""

    name: str
    seeds: tuple[int, ...]
    secret: str
    threads: int
    datasets: tuple[dict, ...]
    hosts: tuple[dict, ...]
    protections: tuple[Item, ...]
    attacks: tuple[Item, ...]
    negatives: tuple[Negative, ...]
    verification: dict
    plausibility: dict
    show_keys: bool
    source: str = ""  # the config file's text, copied into the report

    def cells(self) -> int:
        """The number of cells, dataset x host x protection x attack x seed."""
        return len(self.datasets) * len(self.hosts) * len(self.protections) * len(self.attacks) * len(self.seeds)


def registered_attacks() -> dict[str, type]:
    """Every attack an experiment can run: the removal and evasion attacks, then the forgeries."""
    from ..attacks import ATTACKS
    from ..attacks.forgery import FORGERIES

    return {**ATTACKS, **FORGERIES}


def accepts_secret(cls: type) -> bool:
    """Whether a protection class's constructor (or one of its bases') takes ``secret``."""
    return any("secret" in inspect.signature(k.__init__).parameters for k in cls.__mro__ if "__init__" in vars(k))


def attack_kind(name: str, params: dict | None = None) -> str:
    """The attack's ``kind``: "removal", "evasion" (the model deployed behind a filter), "preprocessing"
    (behind an input transform) or "forgery"; a chain's kind follows its steps (``params``)."""
    if name == UNATTACKED:
        return "removal"
    cls = registered_attacks()[name]
    kind_of = getattr(cls, "kind_of", None)
    return kind_of(params or {}) if kind_of is not None else cls.kind
