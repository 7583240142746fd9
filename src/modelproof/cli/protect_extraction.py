"""``modelproof protect margin|conferrable``: the protections meant to survive model extraction.

``margin`` (Kim et al., ICML 2023) watermarks a model with owner images under secret labels, embedded
with a large margin; ``conferrable`` (Lukas et al., ICLR 2021) fingerprints it with adversarial
examples chosen to transfer to the model's surrogates and not to independent models. Both go
through the shared pipeline (:func:`commands.protect.run_protect`: calibration, self-check, key
written only when it proves its own model). What they achieve on our datasets is measured in
``docs/guides/extraction-resistant.md``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .common import (
    DataDirOpt, DatasetOpt, JsonOpt, SeedOpt, SizeOpt, compute_options, dataset_from_model, user_errors)
from .protect import ArchOpt, ModelOpt, OutOpt, PassOpt, protect_group, protect_options, run_protect

TrainedModelOpt = Annotated[Path, typer.Option("--model", "-m", help="The trained modelproof model file to "
                                               "fingerprint.")]


@user_errors
@dataset_from_model
@compute_options
@protect_options
def margin(
        out: OutOpt = Path("protected"), model: ModelOpt = None, arch: ArchOpt = None, dataset: DatasetOpt = None,
        data_dir: DataDirOpt = None, size: SizeOpt = None, passphrase: PassOpt = None, seed: SeedOpt = 0,
        key_size: Annotated[int, typer.Option("--key-size", help="Trigger images (owner images with secret "
                                              "labels).")] = 30,
        mode: Annotated[str | None, typer.Option("--mode", help="finetune (a trained --model) or scratch (the "
                                                 "paper: train with the triggers from the start); default by "
                                                 "--model / --arch.")] = None,
        epochs: Annotated[int, typer.Option("--epochs", help="Training epochs.")] = 30,
        lr: Annotated[float, typer.Option("--lr", help="Adam learning rate.")] = 0.002,
        batch_size: Annotated[int, typer.Option("--batch-size", help="Owner images per step.")] = 64,
        per_batch: Annotated[int, typer.Option("--per-batch", help="Triggers added to every step.")] = 16,
        weight: Annotated[float, typer.Option("--weight", help="Weight of the triggers' loss (paper: 0.1 with "
                                              "25 per 128).")] = 1.0,
        pga_steps: Annotated[int, typer.Option("--pga-steps", help="Gradient-ascent steps per trigger and "
                                               "step (0: a plain trigger set).")] = 5,
        pga_step: Annotated[float, typer.Option("--pga-step", help="Size of each signed ascent step (images in "
                                                "[0,1]; paper 1/255 on CIFAR-10).")] = 0.015,
        json_out: JsonOpt = False) -> None:
    """Margin-based watermark (Kim et al.): owner images with secret labels, embedded by projected gradient ascent."""
    from ..protections.base import make_protection  # torch only once the command runs

    protection = make_protection("margin", key_size=key_size,
                                 mode=mode or ("scratch" if arch is not None and model is None else "finetune"),
                                 epochs=epochs, lr=lr, batch_size=batch_size, per_batch=per_batch, weight=weight,
                                 pga_steps=pga_steps, pga_step=pga_step)
    summary = run_protect(protection, model=model, arch=arch, dataset=dataset, data_dir=data_dir, size=size,
                          out=out, passphrase=passphrase, seed=seed, json_out=json_out)
    if not json_out:
        typer.echo(f"margin: {summary['epochs']} epoch(s) kept, {summary['embed_seconds']:.1f} s")


@user_errors
@dataset_from_model
@compute_options
@protect_options
def conferrable(
        model: TrainedModelOpt, out: OutOpt = Path("protected"), dataset: DatasetOpt = None,
        data_dir: DataDirOpt = None, size: SizeOpt = None, passphrase: PassOpt = None, seed: SeedOpt = 0,
        points: Annotated[int, typer.Option("--points", help="Fingerprint inputs wanted (at most).")] = 100,
        eps: Annotated[float | None, typer.Option("--eps", help="L-infinity radius (default 0.15 on grey images, "
                                                  "0.025 on colour ones).")] = None,
        steps: Annotated[int, typer.Option("--steps", help="Adam steps of the search.")] = 100,
        oversample: Annotated[int, typer.Option("--oversample", help="Candidates searched per fingerprint "
                                                "input (under key selection, up to 4x as many while too few "
                                                "survive the selection references).")] = 4,
        search_references: Annotated[int, typer.Option("--search-references", help="Independent models the search "
                                                "is run against (never used to calibrate).")] = 3,
        copies: Annotated[int, typer.Option("--copies", help="Augmented copies of the owner's images the "
                                            "distilled surrogates are trained on.")] = 4,
        json_out: JsonOpt = False) -> None:
    """Conferrable adversarial examples (Lukas et al.): transfer to the model's surrogates, not to independent models."""
    from ..protections.base import make_protection  # torch only once the command runs

    protection = make_protection("conferrable", points=points, eps=eps, steps=steps, oversample=oversample,
                                 references=search_references, copies=copies)
    summary = run_protect(protection, model=model, arch=None, dataset=dataset, data_dir=data_dir, size=size,
                          out=out, passphrase=passphrase, seed=seed, json_out=json_out)
    if not json_out:
        typer.echo(f"conferrable: kept {summary['kept']} of {summary['candidates']} candidates "
                   f"({summary['adversarial']} adversarial), {summary['seconds']:.1f} s")


def register(app: typer.Typer) -> None:
    """Add ``margin`` and ``conferrable`` to the ``protect`` group."""
    del app  # the group itself is added to the app by commands.protect
    protect_group().command("margin", short_help="Watermark: owner images with secret labels and a large margin, "
                            "meant to survive extraction (Kim et al.)")(margin)
    protect_group().command("conferrable", short_help="Fingerprint: conferrable adversarial examples, meant to "
                            "transfer to stolen copies only (Lukas et al.)")(conferrable)
