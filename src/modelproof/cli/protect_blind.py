"""``modelproof protect blind`` (Li et al.'s blind watermark) and ``modelproof keys blind-samples``.

``protect blind`` trains the encoder, the discriminator and the host together (Algorithm 1) and
writes ``OUT/model.safetensors``, ``OUT/key.mpkey``, the owner's secret ``OUT/key.mpsecret``
(encoder, logo, key sources; encrypted with the key's passphrase) and ``OUT/key-samples.png``
(source | key sample | difference x5; it shows key inputs, so keep it with the key).
``--mode`` defaults to ``finetune`` for ``--model`` and ``scratch`` for ``--arch``. Interrupted (Ctrl-C, a
crash), the same command goes on from ``OUT.resume/``, the checkpoint of its training (removed once OUT is written).

``keys blind-samples`` loads a secret and (a) checks that it regenerates the key's inputs bit for
bit, (b) makes fresh key samples from images of a dataset (Eq. 3) and writes them (safetensors:
``sources``, ``samples``, ``labels``) with their SSIM / PSNR, and with ``--model`` how that model
answers them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .common import (
    DataDirOpt, DatasetOpt, JsonOpt, QuietOpt, SeedOpt, SizeOpt, compute_options, dataset_from_model,
    cite, user_errors)
from .protect import ArchOpt, ModelOpt, OutOpt, PassOpt, SecretOpt, protect_group, protect_options, run_protect
from .tables import BLIND_LOSS_WEIGHTS as WEIGHTS

Float = float


@user_errors
@dataset_from_model
@compute_options
@protect_options
def blind(out: OutOpt, model: ModelOpt = None, arch: ArchOpt = None,
          dataset: DatasetOpt = None, data_dir: DataDirOpt = None, size: SizeOpt = None,
          passphrase: PassOpt = None, seed: SeedOpt = 0,
          secret: SecretOpt = None,
          logo: Annotated[Path | None, typer.Option("--logo", help="Logo image file (resized to the input).")] = None,
          logo_text: Annotated[str | None, typer.Option("--logo-text", help="Logo text rendered with Pillow "
                                                        "(default TEST).")] = None,
          mode: Annotated[str | None, typer.Option("--mode", help="scratch or finetune (default by --arch / "
                                                   "--model).")] = None,
          epochs: Annotated[int, typer.Option("--epochs", help="Epochs of Algorithm 1 (the paper: 100).")] = 100,
          key_fraction: Annotated[Float, typer.Option("--key-fraction", help="Share of the owner's images made "
                                                      "into key samples (the paper: 0.01).")] = 0.01,
          batch_size: Annotated[int, typer.Option("--batch-size", help="n: owner images per step.")] = 100,
          key_batch: Annotated[int, typer.Option("--key-batch", help="m: key sources per step.")] = 20,
          lr: Annotated[Float, typer.Option("--lr", help="Adam rate of encoder and discriminator.")] = 1e-3,
          host_lr: Annotated[Float | None, typer.Option("--host-lr", help="SGD rate of the host (default 0.1 "
                                                        "scratch, 0.01 finetune).")] = None,
          alpha: Annotated[Float, typer.Option("--alpha", help="Weight of the MSE term.")] = WEIGHTS["alpha"],
          beta: Annotated[Float, typer.Option("--beta", help="Weight of the 1 - SSIM term.")] = WEIGHTS["beta"],
          gamma: Annotated[Float, typer.Option("--gamma", help="Weight of the adversarial term.")] = WEIGHTS["gamma"],
          delta: Annotated[Float, typer.Option("--delta", help="Weight of the host term.")] = WEIGHTS["delta"],
          json_out: JsonOpt = False, quiet: QuietOpt = False) -> None:
    """Li et al. blind watermark: a logo hidden by a trained encoder in near-identical key samples.
    Interrupted, the same command goes on from its checkpoint in OUT.resume/."""
    from ..protections.watermarks.blind import BlindWatermark  # torch only once the command runs

    protection = BlindWatermark(secret, logo=str(logo) if logo is not None else None, logo_text=logo_text,
                                key_fraction=key_fraction,
                                mode=mode or ("scratch" if arch is not None and model is None else "finetune"),
                                epochs=epochs, batch_size=batch_size, key_batch=key_batch, lr=lr, host_lr=host_lr,
                                alpha=alpha, beta=beta, gamma=gamma, delta=delta, quiet=quiet or json_out)
    if secret is None and not json_out and not quiet:
        typer.echo("no --secret-file given: drew a random one (the key and its .mpsecret are the only copies)")
    summary = run_protect(protection, model=model, arch=arch, dataset=dataset, data_dir=data_dir, size=size,
                          out=out, passphrase=passphrase, seed=seed, json_out=json_out)
    if not json_out:
        imp = summary["imperceptibility"]
        typer.echo(f"key samples vs sources: SSIM mean {imp['ssim_mean']:.4f} (min {imp['ssim_min']:.4f}), PSNR mean "
                   f"{imp['psnr_mean']:.1f} dB (min {imp['psnr_min']:.1f}), largest pixel change "
                   f"{imp['max_pixel_change']:.3f}; null match probability {summary['null_match_prob']:.4g}")
        if "fresh_key_accuracy" in summary:
            typer.echo(f"fresh key samples from {summary['fresh_samples']} test images: answered with their true "
                       f"label {summary['fresh_true_label_rate']:.3f}, with fresh targets "
                       f"{summary['fresh_key_accuracy']:.3f}")
        typer.echo(f"secret (encoder, logo, sources) written to {summary['secret_file']}"
                   + (" (encrypted)" if passphrase else "") + f"; grid {summary['grid_png']}")


def register(app: typer.Typer) -> None:
    """Add ``blind`` to the ``protect`` group (``keys blind-samples`` is in cli.keys)."""
    del app
    protect_group().command("blind", help=cite(blind.__doc__ or ""), short_help="Watermark: a logo hidden by a "
                            "trained encoder in near-identical key samples (Li et al., ACSAC 2019)")(blind)
