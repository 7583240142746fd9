"""``modelproof protect METHOD ...``: the group, and the pipeline every method's command shares.

Each protection method adds its own command (with its own flags) to the group returned by
:func:`protect_group`, from a module of its own in ``modelproof.commands``, and calls
:func:`run_protect` to load data and model, protect, save and print.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Annotated

import typer

from ..data import load_splits
from ..errors import ConfigError
from ..modelfile import load_model, save_model
from ..protection import Protection
from ..training import evaluate, predict
from .common import emit, user_errors
from .keys import PROTECT_SIGNING_KEY, SignOpt, SignPassOpt, commitment_lines, protect_commitment

ModelOpt = Annotated[Path | None, typer.Option("--model", "-m", help="A trained modelproof model file to protect.")]
ArchOpt = Annotated[str | None, typer.Option("--arch", "-a", help="Build this zoo architecture instead (trained from scratch by methods that embed during training).")]
OutOpt = Annotated[Path, typer.Option("--out", "-o", help="Folder for the protected model and its key.")]
PassOpt = Annotated[str | None, typer.Option("--passphrase", help="Encrypt the key at rest with this passphrase.")]


@cache
def protect_group() -> typer.Typer:
    """The ``protect`` command group (created once; methods add their commands to it)."""
    return typer.Typer(no_args_is_help=True, help="Protect a model with a watermark or fingerprint.",
                       callback=_group_options)


@user_errors
def _group_options(sign: SignOpt = None, sign_passphrase: SignPassOpt = None) -> None:
    """Options of every protect command (``modelproof protect --sign KEY METHOD ...``): sign the key commitment."""
    from ..report import load_signing_key

    PROTECT_SIGNING_KEY.set(load_signing_key(sign, sign_passphrase) if sign is not None else None)


def run_protect(protection: Protection, *, model: Path | None, arch: str | None, dataset: str,
                data_dir: Path | None, size: int | None, out: Path, passphrase: str | None, seed: int,
                json_out: bool) -> dict:
    """Load data and model, protect, write ``out/model.safetensors`` (watermarks) and ``out/key.mpkey``."""
    from ..keys import save_key
    from ..models import build_model

    if (model is None) == (arch is None):
        raise ConfigError("give exactly one of --model (a trained model file) or --arch (build from scratch)")
    net = load_model(model) if model is not None else None
    splits = load_splits(dataset, data_dir, size=size or (net.input_shape[-1] if net is not None else None), seed=seed)
    if net is None:
        net = build_model(arch, splits.num_classes, splits.input_shape, seed=seed)
    before = evaluate(net, splits.test) if model is not None else None
    result = protection.protect(net, splits.owner, seed=seed, test=splits.test)
    out.mkdir(parents=True, exist_ok=True)
    key_path = save_key(result.key, out / "key.mpkey", passphrase=passphrase)
    extras = protection.save_extras(result, key_path, passphrase)
    commitment = protect_commitment(result.key, key_path, result.model)
    summary = {"method": protection.name, "dataset": dataset, "key": str(key_path), **extras,
               "key_size": int(result.key.labels.shape[0]), "accuracy_before": before, "commitment": commitment,
               "accuracy_after": evaluate(result.model, splits.test),
               "key_accuracy": float((predict(result.model, result.key.inputs) == result.key.labels).float().mean()),
               **{k: v for k, v in result.report.items() if k not in ("accuracy_before", "accuracy_after")}}
    if protection.kind == "watermark":
        summary["model"] = str(save_model(result.model, out / "model.safetensors", dataset=dataset,
                                          extra={"split_seed": seed, "size": size, "protection": protection.name}))
    lines = [f"{protection.name}: key of {summary['key_size']} inputs written to {key_path}"
             + (" (encrypted)" if passphrase else "")]
    if before is not None:
        lines.append(f"test accuracy before {before:.4f}")
    lines.append(f"test accuracy after  {summary['accuracy_after']:.4f}; key accuracy {summary['key_accuracy']:.4f}")
    if "model" in summary:
        lines.append(f"protected model written to {summary['model']}")
    lines += commitment_lines(commitment)
    emit(summary, json_out, lines)
    return summary


def register(app: typer.Typer) -> None:
    """Add the ``protect`` group."""
    app.add_typer(protect_group(), name="protect")
