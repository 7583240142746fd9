"""``modelproof protect frontier-stitching``: watermark a trained model with true and false FGSM adversaries."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .common import (
    DataDirOpt, DatasetOpt, JsonOpt, SeedOpt, SizeOpt, compute_options, dataset_from_model, user_errors)
from .protect import OutOpt, PassOpt, protect_group, protect_options, run_protect

TrainedModelOpt = Annotated[Path, typer.Option("--model", "-m", help="The trained modelproof model file to watermark.")]


@user_errors
@dataset_from_model
@compute_options
@protect_options
def frontier_stitching(
        model: TrainedModelOpt,
        dataset: DatasetOpt = None, data_dir: DataDirOpt = None, size: SizeOpt = None,
        eps: Annotated[float | None, typer.Option(help="FGSM step (images in [0,1]); larger gives more true "
                                                  "adversaries. Default: the smallest of 0.025, 0.05, 0.1, 0.25, "
                                                  "0.5 that yields the key.")] = None,
        norm: Annotated[str, typer.Option(help="Norm of the FGSM step: linf, l2 or l1.")] = "linf",
        key_size: Annotated[int, typer.Option("--key-size", help="Key inputs, half true and half false adversaries (even).")] = 100,
        lr: Annotated[float | None, typer.Option(help="Embedding learning rate (default: a tenth of the rate the model was trained with, as the paper; 1e-4 when unknown).")] = None,
        optimizer: Annotated[str, typer.Option(help="adam or sgd.")] = "adam",
        batch_size: Annotated[int, typer.Option("--batch-size", help="Training images per embedding step.")] = 64,
        key_per_batch: Annotated[int, typer.Option("--key-per-batch", help="Key inputs per embedding step.")] = 10,
        max_epochs: Annotated[int, typer.Option("--max-epochs", help="Passes over the key before a key is discarded.")] = 100,
        attempts: Annotated[int, typer.Option(help="Keys drawn before giving up.")] = 3,
        out: OutOpt = Path("protected"), passphrase: PassOpt = None, seed: SeedOpt = 0,
        json_out: JsonOpt = False) -> None:
    """Frontier stitching (Le Merrer et al.): fine-tune until every key adversary is classified as its true label."""
    from ..protections.watermarks.frontier import FrontierStitching  # torch only once the command runs

    protection = FrontierStitching(eps=eps, norm=norm, key_size=key_size, lr=lr, optimizer=optimizer,
                                   batch_size=batch_size, key_per_batch=key_per_batch, max_epochs=max_epochs,
                                   attempts=attempts)
    summary = run_protect(protection, model=model, arch=None, dataset=dataset, data_dir=data_dir, size=size,
                          out=out, passphrase=passphrase, seed=seed, json_out=json_out)
    if not json_out:
        typer.echo(f"key: {summary['true_adversaries']} true + {summary['false_adversaries']} false adversaries "
                   f"({norm}, eps {summary['eps']:g}{', chosen' if eps is None else ''}) found in {summary['key_seconds']:.1f} s; embedded in {summary['epochs']} "
                   f"epoch(s), {summary['attempts']} attempt(s), {summary['embed_seconds']:.1f} s")


def register(app: typer.Typer) -> None:
    """Add ``frontier-stitching`` to the ``protect`` group."""
    del app  # the group itself is added to the app by commands.protect
    protect_group().command("frontier-stitching", short_help="Watermark: fine-tune on FGSM adversaries near the "
                            "boundary, zero-bit (Le Merrer et al.)")(frontier_stitching)
