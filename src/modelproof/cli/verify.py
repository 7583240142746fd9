"""``modelproof verify``, ``calibrate`` and ``check-report``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..util.errors import ConfigError
from .common import JsonOpt, refuse_on_argv, PassFileOpt, PassOpt, compute_options, emit, key_passphrase, user_errors
from .keys import SIGN_WAYS
from .suspect_options import SuspectOptions, open_cli_suspect, with_suspect_options

EXIT_CODES = {"owned": 0, "not owned": 1, "inconclusive": 3}

KeyOpt = Annotated[Path, typer.Option("--key", "-k", help="The ownership key file.")]
ForceOpt = Annotated[bool, typer.Option("--force", help="Replace an existing output file.")]


@user_errors
@with_suspect_options
@compute_options
def verify_cmd(key: KeyOpt,
               suspect: Annotated[str, typer.Option("--suspect", "-s", help="A .safetensors model file, an .onnx file "
                                                    "or an http(s):// Open Inference Protocol endpoint.")],
               alpha: Annotated[float, typer.Option(help="Level of the test: the largest acceptable chance of "
                                                    "claiming an independent model.")] = 0.01,
               budget: Annotated[int | None, typer.Option(help="Most queries to send to the suspect.")] = None,
               sequential: Annotated[bool, typer.Option("--sequential", help="Stop as soon as the evidence suffices "
                                                        "(test martingale; valid under early stopping).")] = False,
               batch_size: Annotated[int, typer.Option("--batch-size", help="Key inputs per query batch.")] = 10,
               p1: Annotated[float | None, typer.Option(help="Sequential: match rate of a suspect that is ours "
                                                        "(default max(0.9, (1 + null) / 2), raised up to 0.99 for a key "
                                                        "too small to prove with it).")] = None,
               beta: Annotated[float, typer.Option(help="Sequential: chance of dismissing a suspect matching "
                                                   "at rate p1.")] = 0.05,
               passphrase: PassOpt = None, passphrase_file: PassFileOpt = None,
               report: Annotated[Path | None, typer.Option("--report", help="Write a JSON evidence report here "
                                                           "(and a .txt summary beside it).")] = None,
               sign: Annotated[Path | None, typer.Option("--sign", help="Sign the report with this Ed25519 "
                                                         "private key (PEM).")] = None,
               sign_passphrase: Annotated[str | None, typer.Option("--sign-passphrase",
                                                                   envvar="MODELPROOF_SIGN_PASSPHRASE", hidden=True,
                                                                   callback=refuse_on_argv(SIGN_WAYS))] = None,
               log: Annotated[Path | None, typer.Option("--log", help="Query log (JSON lines); an interrupted "
                                                        "run given the same log resumes without re-asking.")] = None,
               commitment: Annotated[Path | None, typer.Option("--commitment", help="Check the key against this "
                                                               "key commitment (made before the dispute); the "
                                                               "report records it.")] = None,
               public_key: Annotated[Path | None, typer.Option("--public-key", help="The commitment must be "
                                                               "signed by this Ed25519 public key (PEM).")] = None,
               force: ForceOpt = False, json_out: JsonOpt = False, *, suspect_options: SuspectOptions) -> None:
    """Ask a suspect the key's inputs and decide, with an exact test, whether it is the protected model.

    Exit status: 0 owned, 1 not owned, 3 inconclusive (e.g. the budget ran out, or the key cannot
    prove anything), 2 a usage error or a suspect, key, log or report that cannot be used, 4 an internal
    error; only 0, 1 and 3 are decisions.
    """
    from ..keys.commitments import check_commitment
    from ..keys.container import load_key
    from ..keys.signing import load_signing_key
    from ..util.files import refuse_existing
    from ..verification.report import summary, summary_path, write_report
    from ..verification.verifier import verify

    if report is not None:
        refuse_existing([report, summary_path(report)], force)
    if sign is not None and report is None:
        raise ConfigError("--sign needs --report FILE (the signature goes into the report)")
    signing_key = load_signing_key(sign, sign_passphrase) if sign is not None else None
    if public_key is not None and commitment is None:
        raise ConfigError("--public-key checks the signer of a key commitment; give --commitment FILE too")
    owned_key = load_key(key, key_passphrase(key, passphrase, passphrase_file))
    committed = check_commitment(owned_key, commitment, public_key) if commitment is not None else None
    verdict = verify(owned_key, open_cli_suspect(suspect, suspect_options, owned_key), alpha=alpha, budget=budget,
                     batch_size=batch_size,
                     mode="sequential" if sequential else "fixed", log_path=log, p1=p1, beta=beta)
    result = verdict.to_dict()
    lines = summary(verdict).splitlines()
    if committed is not None:
        result["commitment"] = committed
        lines.append(f"commit:   the key matches {commitment} (sha256:{committed['sha256']}, made "
                     f"{committed['created']}, signed by {committed['signer'] or 'nobody: unsigned'})")
    if report is not None:
        write_report(verdict, report, signing_key=signing_key, commitment=committed)
        result["report"] = str(report)
        lines.append(f"report:   {report}" + (" (signed)" if signing_key is not None else ""))
    emit(result, json_out, lines)
    raise typer.Exit(EXIT_CODES.get(verdict.decision, 3))


@user_errors
@with_suspect_options
@compute_options
def calibrate_cmd(key: KeyOpt,
                  reference: Annotated[list[str], typer.Option("--reference", "-r", help="A model trained "
                                                               "independently of ours (file or URL; repeat the "
                                                               "option, at least 4, of several kinds).")],
                  out: Annotated[Path, typer.Option("--out", "-o", help="Where to write the calibrated key.")],
                  passphrase: PassOpt = None, passphrase_file: PassFileOpt = None, force: ForceOpt = False,
                  json_out: JsonOpt = False, *, suspect_options: SuspectOptions) -> None:
    """Bound the key's null match probability from independently trained reference models."""
    from ..references.calibration import calibrate, reference_from_spec
    from ..keys.container import load_key, save_key
    from ..util.files import refuse_existing

    refuse_existing(out, force)
    passphrase = key_passphrase(key, passphrase, passphrase_file)
    owned_key = load_key(key, passphrase)
    calibrated = calibrate(owned_key, [reference_from_spec(r, open_cli_suspect(r, suspect_options, owned_key))
                                       for r in reference])
    save_key(calibrated, out, passphrase)
    record = calibrated.params["calibration"]
    result = {"out": str(out), "null_match_prob": calibrated.null_match_prob, "null_source": calibrated.null_source,
              "previous_null_match_prob": record["previous_null_match_prob"], "references": record["references"],
              "digest": calibrated.digest(), "encrypted": passphrase is not None}
    lines = [f"reference {r['name']} [{r['kind']}]: {r['matches']} of {r['queries']} key labels matched"
             for r in record["references"]]
    lines += [f"null_match_prob {record['previous_null_match_prob']:.4g} -> {calibrated.null_match_prob:.4g} "
              f"({calibrated.null_source})", f"wrote {out}"]
    emit(result, json_out, lines)


@user_errors
def check_report_cmd(file: Annotated[Path, typer.Argument(help="The JSON report to check.")],
                     public_key: Annotated[Path | None, typer.Option("--public-key", help="Require a signature "
                                                                     "by this Ed25519 public key (PEM).")] = None,
                     json_out: JsonOpt = False) -> None:
    """Check that a report is unedited and, when signed, that its signature verifies."""
    from ..verification.report import check_report

    checked = check_report(file, public_key)
    verdict = checked["report"].get("verdict", {})
    if not checked["signed"]:
        status = ("unsigned: its integrity cannot be checked (its digest only catches accidental damage; anyone "
                  "can edit it and recompute the digest)")
    elif public_key is not None:
        status = f"signature valid, signed by the expected key {checked['fingerprint']}"
    else:
        status = (f"signature valid for key {checked['fingerprint']}: this proves only that the report was not changed "
                  "after it was signed by that key, not who holds it; pass --public-key to require the signer")
    lines = [f"report {file}: {status}",
             f"decision: {verdict.get('decision')} ({verdict.get('matches')} of {verdict.get('queries')} matched, "
             f"p-value {verdict.get('p_value')}"
             + ("; not valid at a sequential run's data-dependent stopping time, the decision rests on the e-value)"
                if verdict.get("mode") == "sequential" else ")")]
    emit({k: v for k, v in checked.items()}, json_out, lines)


def register(app: typer.Typer) -> None:
    """Add ``verify``, ``calibrate`` and ``check-report``."""
    app.command("verify")(verify_cmd)
    app.command("calibrate")(calibrate_cmd)
    app.command("check-report")(check_report_cmd)
