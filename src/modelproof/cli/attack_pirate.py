"""``modelproof attack pirate --model M --dataset D --out P.safetensors [--tau] [--surrogate-fraction]``.

Takes Ray et al.'s surrogate set (default 5% of the test split, stratified; disjoint from the
owner's data), builds the pirated model, prints its detector's FPR on the rest of the test split,
clean accuracy of the pirated and the stolen model and the time per query ratio, and writes the
pirated model as a model file that ``serve`` and ``verify`` accept.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .common import DataDirOpt, DatasetOpt, JsonOpt, QuietOpt, SizeOpt, compute_options, emit, user_errors

TauOpt = Annotated[float | None, typer.Option("--tau", help="Margin over alpha_y (default 2 on MNIST, 0.65 on Fashion-MNIST, else 2).")]
FractionOpt = Annotated[float, typer.Option("--surrogate-fraction", help="Share of the test split the attacker holds.")]
EpochsOpt = Annotated[int, typer.Option("--epochs", help="DCGAN training epochs per class (reference: 200).")]
WidthOpt = Annotated[float, typer.Option("--width", help="DCGAN channel multiplier (1 = the reference).")]


@user_errors
@compute_options
def pirate_command(model: Annotated[Path, typer.Option("--model", "-m", help="The stolen model file.")],
                   out: Annotated[Path, typer.Option("--out", "-o", help="Where to write the pirated model (.safetensors).")],
                   dataset: DatasetOpt = "digits", data_dir: DataDirOpt = None, size: SizeOpt = None,
                   tau: TauOpt = None, surrogate_fraction: FractionOpt = 0.05, epochs: EpochsOpt = 200,
                   width: WidthOpt = 1.0, seed: Annotated[int, typer.Option("--seed", help="Seed of the detector and of the random answers.")] = 0,
                   quiet: QuietOpt = False, json_out: JsonOpt = False) -> None:
    """Ray et al.: deploy the stolen model behind a key-query detector that answers flagged queries at random."""
    from ..attacks.evasion.attack import TAU, PirateAttack  # torch only once the command runs
    from ..attacks.evasion.metrics import pirate_report
    from ..attacks.evasion.pirate import surrogate_split
    from ..attacks.saving import save_attacked
    from ..data.splits import load_splits
    from ..models.modelfile import load_model

    attack = PirateAttack(tau=TAU.get(dataset, 2.0) if tau is None else tau, epochs=epochs, width=width,
                          quiet=quiet)
    net = load_model(model)
    extra = dict(net.record.extra)
    split_seed = int(extra.get("split_seed", 0))
    size = size or extra.get("size") or tuple(net.input_shape)[-1]
    splits = load_splits(dataset, data_dir, size=size, seed=split_seed)
    surrogate, rest = surrogate_split(splits.test, surrogate_fraction, seed=seed)
    outcome = attack.perform(net, surrogate, seed=seed)
    report = pirate_report(outcome.model, net, rest)
    written = save_attacked(outcome.model, out, attack="pirate", dataset=dataset,
                            extra={"split_seed": split_seed, "size": size, "attack": "pirate",
                                   "attack_params": attack.get_params()})
    summary = {**report, "params": attack.get_params(), "details": outcome.details, "seconds": outcome.seconds,
               "surrogate_images": len(surrogate), "test_images": len(rest), "model": str(model), "out": str(written)}
    emit(summary, json_out, [
        f"pirate on {model.name}: {len(surrogate)} surrogate images of {dataset}, heatmaps by "
        f"{outcome.details['heatmap']['method']}, tau {attack.tau:g}",
        f"clean test images flagged (FPR) {report['fpr']:.4f} on {len(rest)} images",
        f"test accuracy stolen {report['accuracy_stolen']:.4f}, pirated {report['accuracy_pirate']:.4f}",
        f"time per query {report['time_ratio']:.1f}x the plain model's; built in {outcome.seconds:.1f} s",
        f"wrote {written}"])
