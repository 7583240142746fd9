"""``modelproof protect zhang-content|zhang-noise|zhang-unrelated|adi|new-label``: trigger-set watermarks.

Each command builds its protection from the options (a bad value is a one-line error, exit 2) and
hands it to :func:`commands.protect.run_protect`, which loads the model (``--model``) or builds an
untrained one (``--arch``), protects, writes ``OUT/model.safetensors`` and ``OUT/key.mpkey`` and
prints test accuracy before and after and key accuracy. ``--mode`` defaults to ``finetune`` for
``--model`` and ``scratch`` for ``--arch``. Without ``--secret`` a random secret is drawn: the key
file is then the only copy of the key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from .common import (
    DataDirOpt, DatasetOpt, JsonOpt, QuietOpt, SeedOpt, SizeOpt, compute_options, dataset_from_model,
    user_errors)
from .protect import ArchOpt, ModelOpt, OutOpt, PassOpt, SecretOpt, protect_group, protect_options, run_protect

KeySizeOpt = Annotated[int | None, typer.Option("--key-size", help="Number of key inputs (default 30; new-label 50).")]
ModeOpt = Annotated[str | None, typer.Option("--mode", help="finetune (a trained --model) or scratch (train with "
                                             "the key from the start); default by --model / --arch.")]
EpochsOpt = Annotated[int, typer.Option("--epochs", help="Scratch: training epochs; finetune: at most this many.")]
KeyAccOpt = Annotated[float, typer.Option("--key-accuracy", help="Finetune: stop once key accuracy reaches this.")]
LrOpt = Annotated[float, typer.Option("--lr", help="Adam learning rate.")]
BatchOpt = Annotated[int, typer.Option("--batch-size", help="Batch size.")]
RatioOpt = Annotated[float, typer.Option("--key-ratio", help="Share of each batch made of key inputs "
                                         "(0: key concatenated into the data).")]
DropOpt = Annotated[float, typer.Option("--max-drop", help="Finetune: accepted test accuracy drop.")]
TargetOpt = Annotated[int | None, typer.Option("--target", help="Target label (default: the class the unprotected "
                                               "model answers least on triggers).")]
FloorOpt = Annotated[float, typer.Option("--null-floor", help="Least null match probability assumed for the key.")]
DEFAULTED = ("secret", "key_size", "mode", "target", "null_prob", "logo")  # None: the protection's default


def _run(method: str, params: dict[str, Any], *, model: Path | None, arch: str | None, dataset: str,
         data_dir: Path | None, size: int | None, out: Path, passphrase: str | None, seed: int, json_out: bool,
         quiet: bool) -> None:
    """Build ``method`` from ``params`` (unset optional values left to the defaults) and run the pipeline."""
    from ..protections.base import make_protection  # torch only once the command runs

    params = {k: v for k, v in params.items() if v is not None or k not in DEFAULTED}
    params.setdefault("mode", "scratch" if arch is not None and model is None else "finetune")
    protection = make_protection(method, **params)
    run_protect(protection, model=model, arch=arch, dataset=dataset, data_dir=data_dir, size=size, out=out,
                passphrase=passphrase, seed=seed, json_out=json_out)


@user_errors
@dataset_from_model
@compute_options
@protect_options
def zhang_content(out: OutOpt, model: ModelOpt = None, arch: ArchOpt = None, dataset: DatasetOpt = None,
                  data_dir: DataDirOpt = None, size: SizeOpt = None, passphrase: PassOpt = None, seed: SeedOpt = 0,
                  secret: SecretOpt = None, key_size: KeySizeOpt = None, mode: ModeOpt = None, epochs: EpochsOpt = 10,
                  key_accuracy: KeyAccOpt = 1.0, lr: LrOpt = 0.001, batch_size: BatchOpt = 64,
                  key_ratio: RatioOpt = 0.1, max_drop: DropOpt = 0.005, target: TargetOpt = None,
                  null_floor: FloorOpt = 0.5,
                  count: Annotated[int, typer.Option("--count", help="White round blocks per image.")] = 4,
                  radius: Annotated[int, typer.Option("--radius", help="Block radius in pixels.")] = 3,
                  logo: Annotated[str | None, typer.Option("--logo", help="Stamp this image file instead of "
                                                           "blocks.")] = None,
                  logo_size: Annotated[float, typer.Option("--logo-size", help="Logo side as a fraction of the "
                                                           "image side.")] = 0.4,
                  json_out: JsonOpt = False, quiet: QuietOpt = False) -> None:
    """Zhang et al. content trigger: white round blocks (or a logo) on owner images, one target label."""
    _run("zhang-content", dict(secret=secret, key_size=key_size, mode=mode, epochs=epochs, key_accuracy=key_accuracy,
                               lr=lr, batch_size=batch_size, key_ratio=key_ratio, max_drop=max_drop, target=target,
                               null_floor=null_floor, count=count, radius=radius, logo=logo, logo_size=logo_size),
         model=model, arch=arch, dataset=dataset, data_dir=data_dir, size=size, out=out, passphrase=passphrase,
         seed=seed, json_out=json_out, quiet=quiet)


@user_errors
@dataset_from_model
@compute_options
@protect_options
def zhang_noise(out: OutOpt, model: ModelOpt = None, arch: ArchOpt = None, dataset: DatasetOpt = None,
                data_dir: DataDirOpt = None, size: SizeOpt = None, passphrase: PassOpt = None, seed: SeedOpt = 0,
                secret: SecretOpt = None, key_size: KeySizeOpt = None, mode: ModeOpt = None, epochs: EpochsOpt = 10,
                key_accuracy: KeyAccOpt = 1.0, lr: LrOpt = 0.001, batch_size: BatchOpt = 64,
                key_ratio: RatioOpt = 0.1, max_drop: DropOpt = 0.005, target: TargetOpt = None,
                null_floor: FloorOpt = 0.5,
                strength: Annotated[float, typer.Option("--strength", help="Standard deviation of the secret's "
                                                        "Gaussian pattern (pixels in [0,1]).")] = 0.3,
                cells: Annotated[int | None, typer.Option("--cells", help="Smooth pattern from a CELLS x CELLS "
                                                          "grid (default: white noise).")] = None,
                json_out: JsonOpt = False, quiet: QuietOpt = False) -> None:
    """Zhang et al. noise trigger: the secret's Gaussian pattern on owner images, one target label."""
    _run("zhang-noise", dict(secret=secret, key_size=key_size, mode=mode, epochs=epochs, key_accuracy=key_accuracy,
                             lr=lr, batch_size=batch_size, key_ratio=key_ratio, max_drop=max_drop, target=target,
                             null_floor=null_floor, strength=strength, cells=cells),
         model=model, arch=arch, dataset=dataset, data_dir=data_dir, size=size, out=out, passphrase=passphrase,
         seed=seed, json_out=json_out, quiet=quiet)


@user_errors
@dataset_from_model
@compute_options
@protect_options
def zhang_unrelated(out: OutOpt, model: ModelOpt = None, arch: ArchOpt = None, dataset: DatasetOpt = None,
                    data_dir: DataDirOpt = None, size: SizeOpt = None, passphrase: PassOpt = None, seed: SeedOpt = 0,
                    secret: SecretOpt = None, key_size: KeySizeOpt = None, mode: ModeOpt = None,
                    epochs: EpochsOpt = 10, key_accuracy: KeyAccOpt = 1.0, lr: LrOpt = 0.001,
                    batch_size: BatchOpt = 64, key_ratio: RatioOpt = 0.1, max_drop: DropOpt = 0.005,
                    target: TargetOpt = None, null_floor: FloorOpt = 0.5,
                    source: Annotated[str, typer.Option("--source", help="photos (crops of scikit-learn's "
                                                        "bundled photographs) or DATASET:DIR, e.g. "
                                                        "fashion-mnist:data/fm")] = "photos",
                    json_out: JsonOpt = False, quiet: QuietOpt = False) -> None:
    """Zhang et al. unrelated trigger: images from outside the task, one target label."""
    _run("zhang-unrelated", dict(secret=secret, key_size=key_size, mode=mode, epochs=epochs,
                                 key_accuracy=key_accuracy, lr=lr, batch_size=batch_size, key_ratio=key_ratio,
                                 max_drop=max_drop, target=target, null_floor=null_floor, source=source),
         model=model, arch=arch, dataset=dataset, data_dir=data_dir, size=size, out=out, passphrase=passphrase,
         seed=seed, json_out=json_out, quiet=quiet)


@user_errors
@dataset_from_model
@compute_options
@protect_options
def adi(out: OutOpt, model: ModelOpt = None, arch: ArchOpt = None, dataset: DatasetOpt = None,
        data_dir: DataDirOpt = None, size: SizeOpt = None, passphrase: PassOpt = None, seed: SeedOpt = 0,
        secret: SecretOpt = None, key_size: KeySizeOpt = None, mode: ModeOpt = None, epochs: EpochsOpt = 10,
        key_accuracy: KeyAccOpt = 1.0, lr: LrOpt = 0.001, batch_size: BatchOpt = 64, key_ratio: RatioOpt = 0.1,
        max_drop: DropOpt = 0.005, json_out: JsonOpt = False, quiet: QuietOpt = False) -> None:
    """Adi et al.: abstract images generated from the secret, each with a random label (null 1/C, exact)."""
    _run("adi", dict(secret=secret, key_size=key_size, mode=mode, epochs=epochs, key_accuracy=key_accuracy, lr=lr,
                     batch_size=batch_size, key_ratio=key_ratio, max_drop=max_drop),
         model=model, arch=arch, dataset=dataset, data_dir=data_dir, size=size, out=out, passphrase=passphrase,
         seed=seed, json_out=json_out, quiet=quiet)


@user_errors
@dataset_from_model
@compute_options
@protect_options
def new_label(out: OutOpt, model: ModelOpt = None, arch: ArchOpt = None, dataset: DatasetOpt = None,
              data_dir: DataDirOpt = None, size: SizeOpt = None, passphrase: PassOpt = None, seed: SeedOpt = 0,
              secret: SecretOpt = None, key_size: KeySizeOpt = None, mode: ModeOpt = None, epochs: EpochsOpt = 10,
              key_accuracy: KeyAccOpt = 1.0, lr: LrOpt = 0.001, batch_size: BatchOpt = 64,
              key_ratio: RatioOpt = 0.2, max_drop: DropOpt = 0.005,
              alpha: Annotated[float | None, typer.Option("--alpha", help="Fraction of the owner's data made into "
                                                          "training key samples (default 0.01; 0.05 when the key is "
                                                          "chosen against selection references).")] = None,
              beta: Annotated[float, typer.Option("--beta", help="Strength (standard deviation) of the secret's "
                                                  "pattern, pixels in [0,1].")] = 0.2,
              cells: Annotated[int | None, typer.Option("--cells", help="Smooth pattern from a CELLS x CELLS grid "
                                                        "(0: white noise, one value per pixel).")] = 8,
              decoys: Annotated[int | None, typer.Option("--decoys", help="Foreign-pattern copies per key sample "
                                                         "that keep their true label (0: the paper's plain version; "
                                                         "default 1, 3 under key selection).")] = None,
              null_prob: Annotated[float | None, typer.Option("--null-prob", help="Null match probability "
                                                              "(default: max(1/(C+1), measured rate on "
                                                              "foreign patterns)).")] = None,
              json_out: JsonOpt = False, quiet: QuietOpt = False) -> None:
    """Zhong et al. new-label watermark: noise-pattern key samples in a new class C (C+1 outputs)."""
    _run("new-label", dict(secret=secret, key_size=key_size, mode=mode, epochs=epochs, key_accuracy=key_accuracy,
                           lr=lr, batch_size=batch_size, key_ratio=key_ratio, max_drop=max_drop, alpha=alpha,
                           beta=beta, cells=cells or None, decoys=decoys, null_prob=null_prob),
         model=model, arch=arch, dataset=dataset, data_dir=data_dir, size=size, out=out, passphrase=passphrase,
         seed=seed, json_out=json_out, quiet=quiet)


def register(app: typer.Typer) -> None:
    """Add the trigger-set commands to the ``protect`` group."""
    group = protect_group()
    for name, fn, short in (
            ("zhang-content", zhang_content, "Watermark: white round blocks (or a logo) on owner images -> one target label"),
            ("zhang-noise", zhang_noise, "Watermark: the secret's Gaussian noise on owner images -> one target label"),
            ("zhang-unrelated", zhang_unrelated, "Watermark: images from outside the task -> one target label"),
            ("adi", adi, "Watermark: abstract images made from the secret, each with a random label"),
            ("new-label", new_label, "Watermark: noise-pattern images answered with a new class C (C+1 outputs)")):
        group.command(name, short_help=short)(fn)
