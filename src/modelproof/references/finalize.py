"""What every new key goes through before it is written: calibration and the self-check.

1. **Calibration** (on by default): the key's null is bounded against reference models, the user's
   or a population modelproof trains on the owner's data (:mod:`modelproof.references`), with the
   sound bound of :mod:`modelproof.references.calibration`. Without it the key is marked uncalibrated, and keys
   of methods whose analytic null is known not to hold never verify as "owned".
2. **Self-check**: the protected model is verified against its own new key, in fixed and in
   sequential mode, at the level the key will be used with. A key that cannot prove its own model
   is refused (nothing written) unless the caller allows weak keys, and then the warning goes into
   the key's parameters.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from .calibration import DEFAULT_REFERENCES, calibrate, reference_from_spec
from ..data.splits import Dataset
from ..util.errors import KeyRefused
from ..keys.key import OwnershipKey
from ..protections.base import Protected, Protection
from ..verification.selfcheck import self_check


@dataclass(frozen=True)
class FinalKey:
    """The key to write, what to add to the protect summary, and lines to print."""

    key: OwnershipKey
    summary: dict = field(default_factory=dict)
    lines: list[str] = field(default_factory=list)


def finalize_key(result: Protected, protection: Protection, owner: Dataset, *, source_digest: str | None = None,
                 owner_arch: str | None = None, references: list[str] | None = None,
                 count: int = DEFAULT_REFERENCES, calibrate: bool = True, alpha: float = 0.01,
                 allow_weak: bool = False, seed: int = 0, quiet: bool = True,
                 trained: list | None = None) -> FinalKey:
    """Calibrate ``result.key`` (see the module docstring), self-check it, and return what to write.

    ``references`` are files or URLs of the user's own reference models; without them ``count``
    models are trained on ``owner`` (or ``trained``, a population made once and reused, is used).
    """
    key, lines, summary = result.key, [], {}
    if protection.kind == "watermark" and source_digest is not None:
        key = dataclasses.replace(key, params=dict(key.params, source_model_digest=source_digest))
    if calibrate:
        key, lines, summary = _calibrated(key, owner, references=references, count=count, owner_arch=owner_arch,
                                          seed=seed, quiet=quiet, trained=trained)
    else:
        lines.append(f"null {key.null_match_prob:.4g}: NOT calibrated (--no-calibration)"
                     + ("; frontier stitching and fingerprint keys never verify as owned until calibrated"
                        if protection.analytic_null_unsound else ""))
        summary["calibrated"] = False
    problems = self_check(result, key, alpha)
    summary["self_check"] = problems or "passed"
    if problems:
        record = key.params.get("calibration")
        exact = isinstance(record, dict) and record.get("kept_exact")
        why = f"; the method's null {key.null_match_prob:.3g} is {key.null_source}" if exact or not calibrate else ""
        advice = _advice(result, key, alpha, trains=protection.kind == "watermark") or protection.weak_hint
        message = (f"{protection.name}: the new key does not prove its own protected model at alpha = {alpha:g} "
                   f"({'; '.join(problems)}); {advice}{why}; nothing written (--allow-weak writes it anyway)")
        if not allow_weak:
            raise KeyRefused(message)
        key = dataclasses.replace(key, params=dict(key.params, warning=message))
        lines.append(f"WARNING: {message}")
    else:
        lines.append(f"self-check: the protected model verifies as owned (fixed and sequential, alpha {alpha:g})")
    return FinalKey(key, summary, lines)


def _advice(result: Protected, key: OwnershipKey, alpha: float, *, trains: bool) -> str | None:
    """The references' match counts and the change that would pass (:mod:`.advice`), for a calibrated key
    (``trains``: the method trains its key into the model, so more epochs may help)."""
    from ..suspects.local import TorchSuspect
    from .advice import refusal_advice
    from .calibration import match_count

    record = key.params.get("calibration")
    if not isinstance(record, dict) or not record.get("references"):
        return None
    counts = [int(r["matches"]) for r in record["references"]]
    return refusal_advice(counts, len(key), match_count(key, TorchSuspect(result.model)), alpha,
                          float(record.get("quantile_tail", record["tail"])),
                          key.null_match_prob if record["kept_exact"] else None, charged=float(record["tail"]),
                          trains=trains)


def _calibrated(key: OwnershipKey, owner: Dataset, *, references: list[str] | None, count: int,
                owner_arch: str | None, seed: int, quiet: bool, trained: list | None) -> tuple:
    from .population import train_references

    seconds = None
    if references:
        refs = [reference_from_spec(spec) for spec in references]
    elif trained is not None:
        refs = trained
    else:
        refs, seconds = train_references(owner, owner_arch=owner_arch, count=count, seed=seed, quiet=quiet)
    calibrated = calibrate(key, refs)
    record = calibrated.params["calibration"]
    kinds = ", ".join(f"{r['name']} [{r['kind']}]: {r['matches']}/{r['queries']}" for r in record["references"])
    lines = [f"null {record['previous_null_match_prob']:.4g} -> {calibrated.null_match_prob:.4g} from "
             f"{len(refs)} reference models ({kinds})"
             + (" (method's exact null kept)" if record["kept_exact"] else "")
             + (f"; references trained in {seconds:.1f} s" if seconds is not None else "")]
    summary = {"calibrated": True, "null_before": record["previous_null_match_prob"],
               "null_after": calibrated.null_match_prob, "references": record["references"],
               "reference_seconds": seconds}
    return calibrated, lines, summary
