"""Calibrating a key's null: an upper bound on how often an independent model matches it.

A key's ``null_match_prob`` p0 must bound the match rate of *any* independent suspect, not only of
the models that were looked at. Independent models differ (on MNIST, frontier-stitching keys of an
MLP were matched 25% by other MLPs and 88% by CNNs), so the largest reference's own confidence bound
is not enough: with one reference drawn from a population of match rates Beta(6, 3), a 100-input key
and alpha = 0.01 it claimed 15.7% of independent suspects, with two 6.2%.

The model used here: the match rates q of independent models form a population; the references are
R draws from it. The bound is the one-sided Student-t *prediction* bound on the empirical logits of
the references' rates (:func:`stats.prediction_upper_bound`): a new model exceeds it with probability
``tail`` (exactly so for normally distributed logits, averaged over the references drawn). A suspect
is then tested against p0 = that bound at level ``alpha - tail``; the false-claim rate is at most

    P(q > p0) + P(claim | q <= p0) <= tail + (alpha - tail) = alpha,

for fixed-sample and sequential verification alike (both are valid for every q <= p0). ``tail`` is
recorded in the key (``params["calibration"]["tail"]``) and ``verify`` subtracts it from alpha.

Why logits, Student-t, eight references and a tail of 0.001: ``benchmarks/false_claims.py``
(Beta populations with means 0.1-0.9 and standard deviations 0.05-0.2, 20,000 suspects per row)
keeps every row at or below alpha = 0.01 with these defaults; the hardest is the extreme
Beta(0.125, 1.125) (mean 0.1, sd 0.2: most models near 0, one in fourteen above 0.5), at 0.008. With
six references and a tail of 0.005 that row reached 0.019, and the normal bound on raw rates failed
more rows. The price is power: a wide spread between references pushes p0 towards 1 and the key
then cannot prove anything, which the protection's self-check reports instead of writing a weak
key. At least ``MIN_REFERENCES`` references are needed (fewer degrees of freedom make the t quantile
too wide to be useful).

A method whose null holds by construction (``Protection.exact_null``: Adi et al.'s labels drawn by the
secret among the classes the unprotected model does not answer; the new-label class no independent
C-class model can answer) keeps it: calibration is then recorded as a check, and it lowers the null
only through the bound above for the other methods.

References that are not independent are refused: the protected model itself or the model it was
made from (same weight digest), and any reference that matches the key almost perfectly.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from ..util.errors import ConfigError
from ..keys.key import OwnershipKey
from ..keys.nulls import prediction_upper_bound
from ..protections.base import exact_null

TAIL = 0.001          # P(an independent model's rate exceeds the bound); verify tests at alpha - TAIL
MIN_REFERENCES = 4
DEFAULT_REFERENCES = 8
NEAR_PERFECT = 0.98   # a user's reference matching this share of the key is a copy, or the key is useless


@dataclass(frozen=True)
class Reference:
    """A reference model: the suspect to ask, a name for reports (file name or URL) and its kind."""

    suspect: object
    name: str
    kind: str
    digest: str | None = None   # weight digest, when known, to refuse the protected model itself
    trusted: bool = False       # trained by modelproof itself (independent by construction)


def reference_from_spec(spec: str, suspect: object | None = None) -> Reference:
    """A Reference from a model file, ONNX file or URL given on the command line (``suspect``: already opened)."""
    from ..util.redact import public_url
    from ..models.modelfile import weights_digest
    from ..suspects.local import TorchSuspect, open_suspect

    suspect = open_suspect(spec) if suspect is None else suspect
    if isinstance(suspect, TorchSuspect):
        model = suspect.model
        kind = str(getattr(getattr(model, "record", None), "arch", None) or type(model).__name__)
        return Reference(suspect, Path(spec).name, kind, weights_digest(model))
    remote = str(spec).lower().startswith(("http://", "https://"))
    return Reference(suspect, public_url(str(spec)) if remote else Path(spec).name, "http" if remote else "onnx")


def match_count(key: OwnershipKey, suspect, batch_size: int = 256) -> int:
    """How many key labels ``suspect`` answers (the whole key, through a QueriedSuspect)."""
    from ..suspects.queried import QueriedSuspect
    from ..verification.verifier import check_compatible, checked_labels

    check_compatible(key, suspect)
    queried = suspect if isinstance(suspect, QueriedSuspect) else QueriedSuspect(suspect)
    total = 0
    for start in range(0, len(key), batch_size):
        chunk = key.inputs[start:start + batch_size]
        answers = checked_labels(queried.predict(chunk), len(chunk))
        total += int((answers == key.labels[start:start + batch_size]).sum())
    return total


def _refuse_dependent(key: OwnershipKey, ref: Reference, matches: int) -> None:
    own = {key.model_digest, key.params.get("source_model_digest")} - {None}
    if ref.digest is not None and ref.digest in own:
        which = "the protected model" if ref.digest == key.model_digest else "the model the key was made from"
        raise ConfigError(f"reference {ref.name} is {which} (same weight digest); references must be trained "
                          "independently")
    if not ref.trusted and matches >= NEAR_PERFECT * len(key):
        raise ConfigError(f"reference {ref.name} matches the key on {matches} of {len(key)} inputs: it is a copy of "
                          "the protected model, or this key cannot tell models apart; remove it if it is a copy")


def calibrate(key: OwnershipKey, references: list[Reference], *, tail: float = TAIL,
              min_references: int = MIN_REFERENCES, keep_exact: bool | None = None) -> OwnershipKey:
    """The key with ``null_match_prob`` bounded from ``references`` (see the module docstring).

    ``keep_exact`` (default: the method's ``exact_null``) keeps a null that holds by construction and
    records the calibration as a check. The record holds no wall-clock time, so the same key and
    references always give the same key (digest and query order included).
    """
    if len(references) < min_references:
        raise ConfigError(f"calibration needs at least {min_references} independently trained reference models, "
                          f"got {len(references)}")
    if not all(isinstance(r, Reference) for r in references):
        raise ConfigError("references must be calibration.Reference objects (see reference_from_spec)")
    rows = []
    for ref in references:
        matches = match_count(key, ref.suspect)
        _refuse_dependent(key, ref, matches)
        rows.append({"name": ref.name, "kind": ref.kind, "matches": matches, "queries": len(key)})
    counts = [r["matches"] for r in rows]
    bound = min(1.0, prediction_upper_bound(counts, len(key), tail))
    keep = exact_null(key.method) if keep_exact is None else keep_exact
    earlier = key.params.get("calibration")  # re-calibrating starts from the method's own null
    previous = earlier["previous_null_match_prob"] if isinstance(earlier, dict) else key.null_match_prob
    previous_source = earlier["previous_null_source"] if isinstance(earlier, dict) else key.null_source
    kinds = sorted({r["kind"] for r in rows})
    if keep:
        null, tail_used = previous, 0.0
        source = (f"{previous_source} (kept: exact by construction; {len(rows)} reference model(s) of kinds "
                  f"{', '.join(kinds)} matched at most {max(counts)}/{len(key)}, prediction bound {bound:.4g})")
    else:
        null, tail_used = bound, float(tail)
        source = (f"Student-t prediction bound (tail {tail:g}) on the logit match rates of {len(rows)} independent "
                  f"reference model(s) of kinds {', '.join(kinds)} (matches {', '.join(map(str, counts))} of "
                  f"{len(key)}); verify tests at alpha - {tail:g}; before calibration {previous:.4g}")
    record = {"method": "logit-t-prediction", "tail": tail_used, "bound": bound, "kept_exact": bool(keep),
              "references": rows, "kinds": kinds, "previous_null_match_prob": previous,
              "previous_null_source": previous_source}
    return dataclasses.replace(key, null_match_prob=null, null_source=source,
                               params=dict(key.params, calibration=record))
