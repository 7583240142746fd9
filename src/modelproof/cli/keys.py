"""``modelproof keys info`` (a key's metadata, never its inputs), ``keys gen-signing`` (an Ed25519 pair),
``keys commit`` (a key commitment, see ``modelproof.keys.commitments``) and ``keys dawn`` (a key from a DAWN
log, see ``modelproof.references.dawn_key``)."""

from __future__ import annotations

from contextvars import ContextVar
from pathlib import Path
from typing import Annotated

import typer

from ..util.errors import ConfigError
from .common import (DataDirOpt, DatasetOpt, JsonOpt, PassFileOpt, PassOpt, QuietOpt, SeedOpt, SizeOpt,
                     dataset_from_model, emit, key_passphrase, read_passphrase, refuse_on_argv, user_errors)


SIGN_WAYS = "the environment variable MODELPROOF_SIGN_PASSPHRASE"


@user_errors
def info(key: Annotated[Path, typer.Argument(help="The ownership key file.")],
         passphrase: PassOpt = None, passphrase_file: PassFileOpt = None,
         json_out: JsonOpt = False) -> None:
    """Show a key's method, size, digest and null match probability (never its inputs or labels)."""
    from ..keys.container import is_encrypted, load_key

    loaded = load_key(key, key_passphrase(key, passphrase, passphrase_file))
    result = dict(loaded.info(), file=str(key), encrypted=is_encrypted(key))
    params = ", ".join(f"{k}={v}" for k, v in sorted(loaded.params.items()) if k != "calibration") or "none"
    lines = [f"key          {key} ({'encrypted' if result['encrypted'] else 'not encrypted'})",
             f"digest       sha256:{result['digest']}",
             f"method       {loaded.method} ({params})",
             f"size         {len(loaded)} inputs of shape {tuple(loaded.input_shape)}, {loaded.num_classes} classes",
             f"null         {loaded.null_match_prob:.4g} ({loaded.null_source})",
             f"calibrated   " + (f"yes, against {len(cal['references'])} reference models ({', '.join(cal['kinds'])})"
                                 if isinstance(cal := loaded.params.get("calibration"), dict) and "kinds" in cal
                                 else "no (`modelproof calibrate`)"),
             f"model        sha256:{loaded.model_digest}",
             f"created      {loaded.created}"]
    emit(result, json_out, lines)


@user_errors
def gen_signing(out: Annotated[Path, typer.Option("--out", "-o", help="Prefix: writes PREFIX.key and PREFIX.pub.")],
                passphrase: Annotated[str | None, typer.Option("--passphrase", envvar="MODELPROOF_SIGN_PASSPHRASE",
                                                               hidden=True, callback=refuse_on_argv(SIGN_WAYS))] = None,
                passphrase_file: Annotated[Path | None, typer.Option("--passphrase-file", help="Encrypt the private "
                                                                     "key with the first line of this file (or set "
                                                                     "MODELPROOF_SIGN_PASSPHRASE).")] = None,
                force: Annotated[bool, typer.Option("--force", help="Overwrite existing files.")] = False,
                json_out: JsonOpt = False) -> None:
    """Generate an Ed25519 key pair for signing evidence reports."""
    from ..keys.signing import fingerprint, generate_signing_key, raw_public_key, save_signing_key

    passphrase = read_passphrase(passphrase, passphrase_file)
    private = generate_signing_key()
    private_path, public_path = save_signing_key(private, out, passphrase, overwrite=force)
    fp = fingerprint(raw_public_key(private.public_key()))
    emit({"private_key": str(private_path), "public_key": str(public_path), "fingerprint": fp,
          "encrypted": bool(passphrase)}, json_out,
         [f"wrote {private_path} (private, {'encrypted' if passphrase else 'NOT encrypted'}; keep it secret)",
          f"wrote {public_path} (public; give it to whoever checks your reports)", f"fingerprint {fp}"])


SignOpt = Annotated[Path | None, typer.Option("--sign", help="Sign the key commitment with this Ed25519 private "
                                              "key (PEM; `keys gen-signing`).")]
SignPassOpt = Annotated[str | None, typer.Option("--sign-passphrase", envvar="MODELPROOF_SIGN_PASSPHRASE",
                                                 hidden=True, callback=refuse_on_argv(SIGN_WAYS))]


def commitment_lines(written: dict) -> list[str]:
    """What the commands print about a commitment they wrote."""
    return [f"commitment written to {written['path']}"
            + (f" (signed by {written['signer']})" if written["signer"] else " (not signed; --sign signs it)"),
            f"commitment sha256:{written['sha256']}: have it timestamped before any dispute "
            f"(RFC 3161 request: {written['timestamp_request']})"]


# The signing key given to ``modelproof protect --sign`` (set by the group's callback, used once).
PROTECT_SIGNING_KEY: ContextVar[object | None] = ContextVar("protect_signing_key", default=None)


@user_errors
def commit(key: Annotated[Path, typer.Argument(help="The ownership key file.")],
           passphrase: PassOpt = None, passphrase_file: PassFileOpt = None,
           model: Annotated[Path | None, typer.Option("--model", "-m", help="The protected model: its weight "
                                                      "digest must be the key's.")] = None,
           out: Annotated[Path | None, typer.Option("--out", "-o", help="Where to write the commitment "
                                                    "(default: beside the key, KEY.commitment.json).")] = None,
           sign: SignOpt = None, sign_passphrase: SignPassOpt = None,
           force: Annotated[bool, typer.Option("--force", help="Replace an existing commitment (its hash may "
                                               "already be timestamped: keep the old file).")] = False,
           json_out: JsonOpt = False) -> None:
    """Commit to an existing key: its digest, method and public parameters, model digest and time (signed with --sign)."""
    from ..keys.commitments import commit_key
    from ..keys.container import load_key
    from ..models.modelfile import load_model, weights_digest
    from ..keys.signing import load_signing_key

    signing_key = load_signing_key(sign, sign_passphrase) if sign is not None else None
    loaded = load_key(key, key_passphrase(key, passphrase, passphrase_file))
    net = load_model(model) if model is not None else None
    if net is not None and weights_digest(net) != loaded.model_digest:
        raise ConfigError(f"--model {model}: its weights (sha256:{weights_digest(net)[:16]}...) are not the key's "
                          f"model (sha256:{loaded.model_digest[:16]}...)")
    written = commit_key(loaded, key, model=net, signing_key=signing_key, out=out, force=force)
    emit(written, json_out, commitment_lines(written))


@user_errors
def blind_samples(key: Annotated[Path, typer.Argument(help="The blind-watermark key file (its .mpsecret beside it).")],
                  out: Annotated[Path, typer.Option("--out", "-o", help="Write fresh samples here (.safetensors).")],
                  passphrase: PassOpt = None, passphrase_file: PassFileOpt = None,
                  dataset: DatasetOpt = "digits", data_dir: DataDirOpt = None, size: SizeOpt = None,
                  split: Annotated[str, typer.Option("--split", help="test (images the host never saw) or "
                                                     "owner.")] = "test",
                  count: Annotated[int, typer.Option("--count", help="Number of fresh samples.")] = 100,
                  model: Annotated[Path | None, typer.Option("--model", "-m", help="Also ask this model.")] = None,
                  seed: SeedOpt = 0, json_out: JsonOpt = False) -> None:
    """Regenerate a blind key from its secret and make fresh key samples from new images (Eq. 3)."""
    from ..protections.watermarks.blind.samples import fresh_samples

    result = fresh_samples(key, out, passphrase=key_passphrase(key, passphrase, passphrase_file), dataset=dataset,
                           data_dir=data_dir, size=size,
                           split=split, count=count, model=model, seed=seed)
    lines = [f"secret regenerates the key's {result['key_size']} inputs: "
             + ("bit for bit" if result["regenerated_exactly"] else
                f"NO (largest difference {result['regeneration_max_diff']:.3g})"),
             f"{result['count']} fresh samples written to {result['out']}: SSIM mean {result['ssim_mean']:.4f}, "
             f"PSNR mean {result['psnr_mean']:.1f} dB"]
    if "true_label_rate" in result:
        lines.append(f"{result['model']}: answers the true label on {result['true_label_rate']:.3f} of fresh samples "
                     f"(on their sources {result['source_true_label_rate']:.3f})")
    emit(result, json_out, lines)


@user_errors
@dataset_from_model
def dawn(log: Annotated[Path, typer.Option("--log", help="The DAWN log folder of `serve --dawn-log`.")],
         client: Annotated[str | None, typer.Option("--client", help="The client suspected of theft (its address, "
                                                    "or the gateway's identity); without it, list the clients.")] = None,
         out: Annotated[Path | None, typer.Option("--out", "-o", help="Where to write the key (.mpkey).")] = None,
         model: Annotated[Path | None, typer.Option("--model", "-m", help="The served model file: chooses its "
                                                    "answers in the log and is checked not to be owned.")] = None,
         model_digest: Annotated[str | None, typer.Option("--model-digest", help="The served model's weight "
                                                          "digest, when the log holds several and --model is not "
                                                          "given.")] = None,
         dataset: DatasetOpt = None, data_dir: DataDirOpt = None, size: SizeOpt = None, seed: SeedOpt = 0,
         references: Annotated[list[str] | None, typer.Option("--reference", help="Your own calibration reference "
                                                              "model (file or URL; repeat; at least 4); default: "
                                                              "the population of the owner's data.")] = None,
         references_dir: Annotated[Path | None, typer.Option("--references-dir", help="The reference population "
                                                             "folder (default: the cache of the owner's data).")] = None,
         alpha: Annotated[float, typer.Option("--verify-alpha", help="Level the key must be able to reach.")] = 0.01,
         passphrase: PassOpt = None, passphrase_file: PassFileOpt = None,
         force: Annotated[bool, typer.Option("--force", help="Replace an existing --out.")] = False,
         quiet: QuietOpt = False, json_out: JsonOpt = False) -> None:
    """Make a key from a DAWN log: one client's altered answers, calibrated on reference models (Szyller et al.)."""
    from ..protections.watermarks.dawn_log import clients

    if client is None:
        listed = clients(log)
        emit({"clients": listed}, json_out, [f"{c}: {n} altered answer(s)" for c, n in sorted(listed.items())]
             or [f"no client logged in {log}"])
        return
    if out is None:
        raise ConfigError("--out is needed with --client: where to write the key")
    from ..references.dawn_key import write_dawn_key

    made = write_dawn_key(log, client, out, dataset=dataset or "digits", data_dir=data_dir, size=size, seed=seed,
                          references=references, references_dir=references_dir, model=model,
                          model_digest=model_digest, alpha=alpha,
                          passphrase=read_passphrase(passphrase, passphrase_file), force=force, quiet=quiet)
    emit(made.summary, json_out, made.lines)


def register(app: typer.Typer) -> None:
    """Add the ``keys`` command group."""
    group = typer.Typer(no_args_is_help=True, help="Inspect ownership keys; commit to them; make signing keys.")
    group.command("info")(info)
    group.command("gen-signing")(gen_signing)
    group.command("commit")(commit)
    group.command("blind-samples")(blind_samples)
    group.command("dawn")(dawn)
    app.add_typer(group, name="keys")
