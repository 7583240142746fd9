"""The registered attack ``pirate``: Ray et al.'s pirated classifier through the Attack entry point.

``PirateAttack(tau=2.0).perform(model, surrogate, seed=...)`` returns a :class:`PiratedModel`
(an ``nn.Module``, so ``run_attack`` measures its clean accuracy like any attacked model). The
attacker's data IS the surrogate set: pass a small labelled set disjoint from the owner's data
(:func:`surrogate_split` takes Ray et al.'s 5% of the test split; the CLI does that).
"""

from __future__ import annotations

from torch import nn

from ...data.splits import Dataset
from ..base import Attack, AttackLog, Param, check_positive
from .pirate import build_pirate, check_tau

TAU = {"mnist": 2.0, "fashion-mnist": 0.65}  # Ray et al. §V-A4; other datasets default to MNIST's


class PirateAttack(Attack):
    """Deploy the stolen model unchanged; answer a random label to queries whose heatmap looks anomalous."""

    name = "pirate"
    kind = "evasion"
    description = ("Ray et al.: stolen model behind per-class DCGAN detectors on Grad-CAM heatmaps; flagged "
                   "queries get a random label (attacker data = the surrogate set)")
    PARAMS = (
        Param("tau", "float", "margin over alpha_y (2 on MNIST, 0.65 on Fashion-MNIST)"),
        Param("epochs", "int", "DCGAN training epochs per class"),
        Param("batch_size", "int", "DCGAN batch size"),
        Param("lr", "float", "DCGAN Adam learning rate"),
        Param("width", "float", "DCGAN channel multiplier (1 = the reference's 128/64 and 16-128 channels)"),
    )

    def __init__(self, tau: float = 2.0, epochs: int = 200, batch_size: int = 64, lr: float = 2e-4,
                 width: float = 1.0, *, quiet: bool = False) -> None:
        self.tau = check_tau(tau)
        self.epochs = check_positive("epochs", epochs, integer=True)
        self.batch_size = check_positive("batch_size", batch_size, integer=True)
        self.lr = check_positive("lr", lr)
        self.width = check_positive("width", width)
        self.quiet = bool(quiet)

    def _run(self, model: nn.Module, data: Dataset, seed: int, log: AttackLog) -> nn.Module:
        # the entry point hands data with the model's class count; trailing classes no image holds (a new-label
        # model's extra class Delta) get no discriminator: the pirate flags every answer in them
        held = int(data.labels.max()) + 1
        if held < data.num_classes:
            data = Dataset(data.images, data.labels, data.class_names[:held], data.name, dict(data.meta))
        pirate, details = build_pirate(model, data, tau=self.tau, epochs=self.epochs, batch_size=self.batch_size,
                                       lr=self.lr, width=self.width, seed=seed,
                                       quiet=self.quiet)
        log.details.update(details)
        return pirate
