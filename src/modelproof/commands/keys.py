"""``modelproof keys info`` (a key's metadata, never its inputs) and ``keys gen-signing`` (an Ed25519 pair)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .common import JsonOpt, emit, user_errors


@user_errors
def info(key: Annotated[Path, typer.Argument(help="The ownership key file.")],
         passphrase: Annotated[str | None, typer.Option("--passphrase", envvar="MODELPROOF_PASSPHRASE",
                                                        help="Passphrase of an encrypted key.")] = None,
         json_out: JsonOpt = False) -> None:
    """Show a key's method, size, digest and null match probability (never its inputs or labels)."""
    from ..keys import is_encrypted, load_key

    loaded = load_key(key, passphrase)
    result = dict(loaded.info(), file=str(key), encrypted=is_encrypted(key))
    params = ", ".join(f"{k}={v}" for k, v in sorted(loaded.params.items()) if k != "calibration") or "none"
    lines = [f"key          {key} ({'encrypted' if result['encrypted'] else 'not encrypted'})",
             f"digest       sha256:{result['digest']}",
             f"method       {loaded.method} ({params})",
             f"size         {len(loaded)} inputs of shape {tuple(loaded.input_shape)}, {loaded.num_classes} classes",
             f"null         {loaded.null_match_prob:.4g} ({loaded.null_source})",
             f"model        sha256:{loaded.model_digest}",
             f"created      {loaded.created}"]
    emit(result, json_out, lines)


@user_errors
def gen_signing(out: Annotated[Path, typer.Option("--out", "-o", help="Prefix: writes PREFIX.key and PREFIX.pub.")],
                passphrase: Annotated[str | None, typer.Option("--passphrase", envvar="MODELPROOF_SIGN_PASSPHRASE",
                                                               help="Encrypt the private key with this.")] = None,
                force: Annotated[bool, typer.Option("--force", help="Overwrite existing files.")] = False,
                json_out: JsonOpt = False) -> None:
    """Generate an Ed25519 key pair for signing evidence reports."""
    from ..report import fingerprint, generate_signing_key, raw_public_key, save_signing_key

    private = generate_signing_key()
    private_path, public_path = save_signing_key(private, out, passphrase, overwrite=force)
    fp = fingerprint(raw_public_key(private.public_key()))
    emit({"private_key": str(private_path), "public_key": str(public_path), "fingerprint": fp,
          "encrypted": bool(passphrase)}, json_out,
         [f"wrote {private_path} (private, {'encrypted' if passphrase else 'NOT encrypted'}; keep it secret)",
          f"wrote {public_path} (public; give it to whoever checks your reports)", f"fingerprint {fp}"])


def register(app: typer.Typer) -> None:
    """Add the ``keys`` command group."""
    group = typer.Typer(no_args_is_help=True, help="Inspect ownership keys; make report-signing keys.")
    group.command("info")(info)
    group.command("gen-signing")(gen_signing)
    from .protect_blind import blind_samples

    group.command("blind-samples")(blind_samples)
    app.add_typer(group, name="keys")
