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
is then tested against p0 = that bound at level ``alpha - charge``, where the charge is at least the
bound's realised tail P(q > p0); the false-claim rate is at most

    P(q > p0) + P(claim | q <= p0) <= charge + (alpha - charge) = alpha,

for fixed-sample and sequential verification alike (both are valid for every q <= p0). The charge is
recorded in the key (``params["calibration"]["tail"]``, the quantile's tail beside it as
``quantile_tail``) and ``verify`` subtracts it from alpha.

Why logits, Student-t, 24 references, a quantile at 1e-4 and a charge of 0.0025: the t-bound's tail
is exact only for logit-normal populations. ``benchmarks/false_claims.py`` (Beta populations with
means 0.1-0.9 and standard deviations 0.05-0.2) measures each row's realised tail exactly (the
population's mass above each bound, averaged over the reference draws): with 24 references it holds
1e-4 on the populations whose keys can prove anything, but reaches 0.0017-0.0020 on the skewed
Beta(0.125, 1.125) (mean 0.1, sd 0.2), where 1% of independent models match over 90% of a key and
24 references often miss them all, and 0.0002-0.0007 on four other populations whose (1 - 1e-4)
quantile is above 0.955 (where 81-100% of keys cannot prove anything). No bound on 24 references
holds 1e-4 there without refusing the keys of the populations that look alike: taking the quantile at
1e-6 brings Beta(0.125, 1.125) to 9e-5 but leaves 99% of the keys of Beta(0.8, 7.2) (mean 0.1, sd
0.1) and 40% of Beta(12, 12) unable to prove anything (62% and 0.3% at 1e-4). So the quantile
stays at 1e-4 and ``verify`` is charged the measured tail instead (:func:`skew_tail`: 0.0025 with 24 references): the
accounting ``P(q > p0) + (alpha - charge) <= alpha`` then holds on every simulated population, at the
price of testing at 0.0075 instead of 0.0099. An explicit ``tail`` keeps the old meaning (quantile and
charge alike, exact for logit-normal populations only). With eight references and a tail of 0.001
the realised tail reached 0.011-0.014 (issue 22); with six references and a tail of 0.005 the
extreme Beta(0.125, 1.125) row claimed 0.019.

The exact option: with at least ``RANK_MIN_REFERENCES`` references, ``method="rank"`` takes the
largest reference rate as p0 (more generally the ceil((1 - tail)(R + 1))-th smallest): a new model
exchangeable with the references exceeds it with probability at most ``tail = 1 / (R + 1)`` whatever
the population's shape. ``method="auto"`` (the default) uses it once that tail is at most
``RANK_AUTO_TAIL`` (199 references or more), so that alpha = 0.01 keeps a level of 0.005 to test
at. The price is power: a wide spread between references pushes p0 towards 1 and the key
then cannot prove anything, which the protection's self-check reports instead of writing a weak
key. At least ``MIN_REFERENCES`` references are needed (fewer degrees of freedom make the t quantile
too wide to be useful).

A method whose null holds by construction (``Protection.exact_null``: Adi et al.'s labels drawn by the
secret among the classes the unprotected model does not answer; the new-label class no independent
C-class model can answer) keeps it: calibration is then recorded as a check, and it lowers the null
only through the bound above for the other methods.

References that are not independent are refused: the protected model itself or the model it was
made from (same weight digest), any reference that matches the key almost perfectly, and any
reference that *selected* the key (its digest is in ``key.params["selection"]["references"]``): a key
chosen so that those models do not answer it would look rarer on them than on a fresh model.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from ..util.errors import ConfigError
from ..keys.key import OwnershipKey
from ..keys.nulls import prediction_upper_bound
from ..protections.base import exact_null

TAIL = 1e-4           # the Student-t quantile's tail: P(a new model's rate > the bound) for logit-normal populations
SKEW_TAIL_MIN, SKEW_TAIL_MAX = 0.002, 0.005  # what verify is charged for that bound instead (skew_tail)
MIN_REFERENCES = 4
DEFAULT_REFERENCES = 24  # calibration references of the default population (references.mix)
RANK_MIN_REFERENCES = 99     # the exact rank bound may be asked for from here on (its tail is 1 / (R + 1))
RANK_AUTO_TAIL = 0.005       # ... and is chosen by default once 1 / (R + 1) is at most this (R >= 199)
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


def selectors(key: OwnershipKey) -> set[str]:
    """Digests of the references the key was selected against (empty when it records none)."""
    record = key.params.get("selection")
    return {str(d) for d in record.get("references", []) if d} if isinstance(record, dict) else set()


def _refuse_dependent(key: OwnershipKey, ref: Reference, matches: int) -> None:
    if ref.digest is not None and ref.digest in selectors(key):
        raise ConfigError(f"reference {ref.name} selected this key (its digest is in the key's selection record); "
                          "a key is calibrated only on references that did not choose it")
    own = {key.model_digest, key.params.get("source_model_digest")} - {None}
    if ref.digest is not None and ref.digest in own:
        which = "the protected model" if ref.digest == key.model_digest else "the model the key was made from"
        raise ConfigError(f"reference {ref.name} is {which} (same weight digest); references must be trained "
                          "independently")
    if not ref.trusted and matches >= NEAR_PERFECT * len(key):
        raise ConfigError(f"reference {ref.name} matches the key on {matches} of {len(key)} inputs: it is a copy of "
                          "the protected model, or this key cannot tell models apart; remove it if it is a copy")


def rank_bound(counts: list[int], n: int, tail: float) -> float:
    """The ceil((1 - tail)(R + 1))-th smallest reference rate: exceeded by a new exchangeable model with
    probability at most ``tail`` (ConfigError when R is too small for that tail)."""
    import math

    r = len(counts)
    k = math.ceil((1.0 - tail) * (r + 1) - 1e-9)
    if k > r:
        raise ConfigError(f"the rank bound at tail {tail:g} needs at least {k} references, got {r}")
    return sorted(counts)[k - 1] / n


def skew_tail(references: int) -> float:
    """What ``verify`` is charged for the default bound (quantile at :data:`TAIL`) on ``references`` references.

    The Student-t bound's tail is exact only for logit-normal populations. Its realised tail, measured
    exactly (the Beta population's mass above each bound, averaged over 3,000-4,000 reference draws per
    population) over the Beta populations of ``benchmarks/false_claims.py``, is worst on the skewed
    Beta(0.125, 1.125) (mean 0.1, sd 0.2): 0.0053 with 8 references, 0.0036 with 12, 0.0017-0.0020
    with 24, 0.0014 with 48. The charge is ``0.06 / R`` kept within [0.002, 0.005]: at or above the
    measured worst from 12 references up (0.0025 at the default 24); below 12 references it is capped
    at 0.005 so that alpha = 0.01 keeps a level to test at, and may then undercount the worst
    population (8 references: by 0.0003; its false claims stayed at 0.0037, below alpha).
    """
    return min(SKEW_TAIL_MAX, max(SKEW_TAIL_MIN, 0.06 / max(int(references), 1)))


def calibrate(key: OwnershipKey, references: list[Reference], *, tail: float | None = None,
              min_references: int = MIN_REFERENCES, keep_exact: bool | None = None,
              method: str = "auto") -> OwnershipKey:
    """The key with ``null_match_prob`` bounded from ``references`` (see the module docstring).

    ``tail`` None (the default): the Student-t quantile at :data:`TAIL` and verify charged
    :func:`skew_tail` (the bound's measured realised tail on skewed populations); an explicit ``tail``
    is both the quantile's tail and the charge (exact for logit-normal populations only).
    ``keep_exact`` (default: the method's ``exact_null``) keeps a null that holds by construction and
    records the calibration as a check. The record holds no wall-clock time, so the same key and
    references always give the same key (digest and query order included).
    """
    if len(references) < min_references:
        raise ConfigError(f"calibration needs at least {min_references} independently trained reference models, "
                          f"got {len(references)}")
    if method not in ("auto", "t", "rank"):
        raise ConfigError(f"calibration method must be auto, t or rank, got {method!r}")
    if method == "rank" and len(references) < RANK_MIN_REFERENCES:
        raise ConfigError(f"the exact rank bound needs at least {RANK_MIN_REFERENCES} references, got {len(references)}")
    if not all(isinstance(r, Reference) for r in references):
        raise ConfigError("references must be calibration.Reference objects (see reference_from_spec)")
    rows = []
    for ref in references:
        matches = match_count(key, ref.suspect)
        _refuse_dependent(key, ref, matches)
        rows.append({"name": ref.name, "kind": ref.kind, "matches": matches, "queries": len(key)})
    counts = [r["matches"] for r in rows]
    rank = method == "rank" or (method == "auto" and 1.0 / (len(rows) + 1) <= RANK_AUTO_TAIL)
    quantile_tail = TAIL if tail is None else float(tail)
    if rank:  # distribution-free: the charge is the rank bound's own tail
        tail = charged = max(quantile_tail, 1.0 / (len(rows) + 1))
        bound = rank_bound(counts, len(key), tail)
    else:
        charged = skew_tail(len(rows)) if tail is None else quantile_tail
        tail = quantile_tail
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
        null, tail_used = bound, float(charged)
        how = "exact rank bound" if rank else "Student-t prediction bound"
        source = (f"{how} (tail {tail:g}) on the {'' if rank else 'logit '}match rates of {len(rows)} independent "
                  f"reference model(s) of kinds {', '.join(kinds)} (matches {', '.join(map(str, counts))} of "
                  f"{len(key)}); verify tests at alpha - {charged:g}"
                  + ("" if rank or charged == tail else " (the bound's measured tail on skewed populations)")
                  + f"; before calibration {previous:.4g}")
    record = {"method": "rank" if rank else "logit-t-prediction", "tail": tail_used, "quantile_tail": float(tail),
              "bound": bound, "kept_exact": bool(keep),
              "references": rows, "kinds": kinds, "previous_null_match_prob": previous,
              "previous_null_source": previous_source}
    return dataclasses.replace(key, null_match_prob=null, null_source=source,
                               params=dict(key.params, calibration=record))
