"""``modelproof protect METHOD ...``: the group, and the pipeline every method's command shares.

Each protection method adds its own command (with its own flags) to the group returned by
:func:`protect_group`, from a module of its own in ``modelproof.cli``, and calls
:func:`run_protect` to load data and model, protect, save and print.
"""

from __future__ import annotations

import functools
import inspect
from contextvars import ContextVar
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ..util.errors import ConfigError
from ..util.files import check_output
from .common import F, PassOpt, emit, read_passphrase, read_secret_file, refuse_on_argv, user_errors, with_options
from .keys import PROTECT_SIGNING_KEY, SignOpt, SignPassOpt, commitment_lines
from .tables import DEFAULT_REFERENCES

if TYPE_CHECKING:
    from ..protections.base import Protection

ModelOpt = Annotated[Path | None, typer.Option("--model", "-m", help="A trained modelproof model file to protect.")]
ArchOpt = Annotated[str | None, typer.Option("--arch", "-a", help="Build this zoo architecture instead (trained from scratch by methods that embed during training).")]
OutOpt = Annotated[Path, typer.Option("--out", "-o", help="Folder for the protected model and its key.")]

SECRET_WAYS = "--secret-file FILE or the environment variable MODELPROOF_SECRET"
SecretOpt = Annotated[str | None, typer.Option("--secret", envvar="MODELPROOF_SECRET", hidden=True,
                                               callback=refuse_on_argv(SECRET_WAYS))]

# Options every ``protect`` command takes, added to each command's signature by :func:`protect_options`.
_COMMON = (
    ("secret", str | None, None, typer.Option("--secret", envvar="MODELPROOF_SECRET", hidden=True,
                                              callback=refuse_on_argv(SECRET_WAYS))),
    ("secret_file", Path | None, None, typer.Option("--secret-file", help="Read the text all key randomness is "
                                                    "drawn from (never stored in the key) from this file's first "
                                                    "line, or set MODELPROOF_SECRET; random when omitted.")),
    ("quiet", bool, False, typer.Option("--quiet", "-q", help="No progress bars.")),
    ("reference", list[str] | None, None, typer.Option("--reference", "-r", help="A model trained independently "
                                                       "of ours (file or URL) to calibrate the key's null against "
                                                       "(repeat; replaces the references modelproof trains).")),
    ("references", int, DEFAULT_REFERENCES, typer.Option("--references", help="How many calibration references "
                                                         "of the default population bound the key's null.")),
    ("references_dir", Path | None, None, typer.Option("--references-dir", help="A reference population folder "
                                                       "(`modelproof references build`); default: the cache of the "
                                                       "owner's data ($MODELPROOF_CACHE, else ~/.cache/modelproof), "
                                                       "trained on first use.")),
    ("oversample", int | None, None, typer.Option("--oversample", help="Key candidates drawn per key input before "
                                                  "selection keeps those no selection reference answers (default: "
                                                  "the method's measured factor).")),
    ("no_selection", bool, False, typer.Option("--no-selection", help="Draw the key without selection references "
                                               "(every candidate kept).")),
    ("no_calibration", bool, False, typer.Option("--no-calibration", help="Skip calibration: the key is marked "
                                                 "uncalibrated (frontier stitching and fingerprints then never "
                                                 "verify as owned).")),
    ("allow_weak", bool, False, typer.Option("--allow-weak", help="Write a key that fails the self-check "
                                             "anyway (the warning goes into the key).")),
    ("verify_alpha", float, 0.01, typer.Option("--verify-alpha", help="Level alpha the key will be verified at "
                                               "(the self-check uses it).")),
    ("passphrase_file", Path | None, None, typer.Option("--passphrase-file", help="Read the key's passphrase "
                                                        "from this file (first line).")),
    ("force", bool, False, typer.Option("--force", help="Replace a key, commitment or model already in --out "
                                        "(the key file is the only copy of its key).")),
)
_OPTIONS: ContextVar[dict] = ContextVar("protect_options", default={})
WEAK_KEY_ACCURACY = 0.9  # below this a key that passes the self-check still gets a warning


def protect_options(fn: F) -> F:
    """Add the common ``protect`` options (``_COMMON``) to a command; ``run_protect`` reads them."""
    names = set(inspect.signature(fn).parameters)
    extra = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default,
                               annotation=Annotated[kind, option])
             for name, kind, default, option in _COMMON if name not in names]
    shared = [name for name, *_ in _COMMON if name in names]

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        options = {p.name: kwargs.pop(p.name, p.default) for p in extra}
        options.update({name: kwargs[name] for name in shared if name in kwargs})
        if options.get("secret_file") is not None:
            if (options.get("secret") or kwargs.get("secret")) is not None:
                raise ConfigError("give either MODELPROOF_SECRET or --secret-file, not both")
            options["secret"] = read_secret_file(options["secret_file"], "secret")
            if "secret" in kwargs:
                kwargs["secret"] = options["secret"]
        token = _OPTIONS.set(options)
        try:
            return fn(*args, **kwargs)
        finally:
            _OPTIONS.reset(token)

    return with_options(wrapper, fn, extra)


@cache
def protect_group() -> typer.Typer:
    """The ``protect`` command group (created once; methods add their commands to it)."""
    return typer.Typer(no_args_is_help=True, help="Protect a model with a watermark or fingerprint.",
                       callback=_group_options)


@user_errors(progress=False)
def _group_options(sign: SignOpt = None, sign_passphrase: SignPassOpt = None) -> None:
    """Options of every protect command (``modelproof protect --sign KEY METHOD ...``): sign the key commitment."""
    PROTECT_SIGNING_KEY.set(None)
    if sign is not None:  # keys (and torch beneath it) only when a signing key is given
        from ..keys.signing import load_signing_key

        PROTECT_SIGNING_KEY.set(load_signing_key(sign, sign_passphrase))


def run_protect(protection: Protection, *, model: Path | None, arch: str | None, dataset: str,
                data_dir: Path | None, size: int | None, out: Path, passphrase: str | None, seed: int,
                json_out: bool) -> dict:
    """Read the common options, call :func:`~modelproof.references.protect.protect_to_folder`, print what it wrote.

    A key that cannot prove its own model is refused (ConfigError, nothing written) unless ``--allow-weak``.
    """
    from ..references.protect import ReferenceOptions, protect_to_folder

    options = {name: default for name, _, default, _ in _COMMON} | _OPTIONS.get()
    check_output(out, folder=True, inputs=(model,), force=options["force"], precious=("key.mpkey",))
    passphrase = read_passphrase(passphrase, options["passphrase_file"])
    references = ReferenceOptions(references=options["reference"], count=options["references"],
                                  calibrate=not options["no_calibration"], alpha=options["verify_alpha"],
                                  allow_weak=options["allow_weak"], references_dir=options["references_dir"],
                                  select=not options["no_selection"], oversample=options["oversample"])
    if options["secret"] is not None:
        protection.set_secret(options["secret"])
    signing_key = PROTECT_SIGNING_KEY.get()
    PROTECT_SIGNING_KEY.set(None)
    outcome = protect_to_folder(protection, out, model=model, arch=arch, dataset=dataset, data_dir=data_dir,
                                size=size, seed=seed, options=references, passphrase=passphrase,
                                signing_key=signing_key, quiet=options["quiet"] or json_out, force=options["force"])
    summary = outcome.summary
    emit(summary, json_out, _lines(summary, outcome.final.lines, protection, passphrase, options["secret"] is None))
    return summary


def _lines(summary: dict, finalize_lines: list[str], protection: Protection, passphrase: str | None,
           random_secret: bool) -> list[str]:
    lines = [f"{protection.name}: key of {summary['key_size']} inputs written to {summary['key']}"
             + (" (encrypted)" if passphrase else " (NOT encrypted: anyone who reads it can rebuild or edit it; "
                "pass --passphrase-file to encrypt it)")]
    if summary["accuracy_before"] is not None:
        lines.append(f"test accuracy before {summary['accuracy_before']:.4f}")
    lines.append(f"test accuracy after  {summary['accuracy_after']:.4f}; key accuracy {summary['key_accuracy']:.4f}")
    if summary["key_accuracy"] < WEAK_KEY_ACCURACY:
        lines.append(f"warning: key accuracy {summary['key_accuracy']:.2f}: the key proves this model, but an attacked "
                     "copy may lose the rest; train longer (--epochs) for a margin")
    lines += finalize_lines
    if random_secret:
        lines.append("no --secret-file given: drew a random secret (the key file is the only copy of the key)")
    if "model" in summary:
        lines.append(f"protected model written to {summary['model']}")
    return lines + commitment_lines(summary["commitment"])


def register(app: typer.Typer) -> None:
    """Add the ``protect`` group."""
    app.add_typer(protect_group(), name="protect")
