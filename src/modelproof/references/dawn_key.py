"""A DAWN key from one client's log: the watermarked answers it was given, calibrated on reference models.

The key's inputs are the client's watermarked queries (canonical form, repeats dropped) and its labels
the wrong labels it was answered (:mod:`modelproof.protections.watermarks.dawn`). Selection does not
apply: the thief chose the inputs by querying, the owner only learns them from the log. The null,
how often an independent model answers those wrong labels, has no analytic value (inputs the model
finds ambiguous are answered otherwise by other models too), so it is bounded exactly as every other
key's is: the Student-t prediction bound on reference models' match rates
(:func:`~modelproof.references.calibration.calibrate`); the key starts at null 1 ("no evidence") and is
never written uncalibrated.

The protect self-check ("the key proves its own model") does not apply: the owner's model answers
the true labels on these inputs, never the logged ones. It is replaced by three refusals:

1. too few pairs: with ``n`` pairs, even references that all match none of them leave a null of
   ``prediction_upper_bound([0] * R, n)``; when ``null ** n`` is not below alpha, no suspect could
   ever be proved to have learnt from this client, and the key is refused before any reference
   is asked (:func:`min_pairs` gives the smallest workable ``n``);
2. references match: after calibration, the key must still reach alpha when every answer matches
   (fixed and sequential), else the references answer the logged labels too often;
3. the served model (when given): it must not be judged owned on the key; a model that answers
   the logged labels did not make this log, or the log was altered.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..keys.key import OwnershipKey
from ..keys.nulls import prediction_upper_bound
from ..protections.watermarks.dawn import DEFAULT_RATE, GRID, dequantised
from ..protections.watermarks.dawn_log import DawnPair
from ..util.errors import ConfigError
from .calibration import DEFAULT_REFERENCES, MIN_REFERENCES, TAIL, Reference, calibrate, skew_tail

METHOD = "dawn"
UNCALIBRATED = "DAWN: no analytic null (the key is calibrated on reference models before it is written)"


@dataclass(frozen=True)
class DawnKey:
    """The key, what was measured while making it, and lines to print."""

    key: OwnershipKey
    summary: dict = field(default_factory=dict)
    lines: list[str] = field(default_factory=list)


def floor_null(pairs: int, references: int, tail: float = TAIL) -> float:
    """The null a key of ``pairs`` inputs gets when ``references`` references match none of it."""
    return prediction_upper_bound([0] * references, pairs, tail)


def min_pairs(references: int, alpha: float = 0.01, tail: float = TAIL, limit: int = 1_000_000,
              charged: float | None = None) -> int:
    """The fewest pairs whose key can reach ``alpha`` (fixed test, every answer matching) at the floor null
    (``charged``: what verify subtracts from alpha, default ``tail``)."""
    level = alpha - (tail if charged is None else charged)

    def enough(n: int) -> bool:
        return floor_null(n, references, tail) ** n < level

    hi = 1
    while not enough(hi):  # floor_null(n) ** n falls with n: double, then bisect
        hi *= 2
        if hi > limit:
            raise ConfigError(f"no key of at most {limit} pairs reaches alpha {alpha:g} with {references} reference "
                              f"models at tail {tail:g}: use more references")
    lo = hi // 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if enough(mid) else (mid, hi)
    return hi


def unique_pairs(pairs: list[DawnPair], model_digest: str | None = None) -> tuple[list[DawnPair], dict]:
    """The pairs of one served model (``model_digest``, or the only one logged), repeats of an input dropped."""
    digests = sorted({p.model for p in pairs})
    if model_digest is None:
        if len(digests) > 1:
            raise ConfigError(f"the log holds answers of {len(digests)} served models (weight digests "
                              f"{', '.join(d[:12] for d in digests)}...): choose one with --model or --model-digest")
        model_digest = digests[0] if digests else None
    kept, seen, conflicts = [], {}, 0
    for p in pairs:
        if p.model != model_digest:
            continue
        raw = np.ascontiguousarray(p.image, dtype="<u2").tobytes()
        if raw in seen:
            conflicts += seen[raw] != p.label
            continue
        seen[raw] = p.label
        kept.append(p)
    return kept, {"logged": len(pairs), "model_digest": model_digest, "repeats": len(pairs) - len(kept)
                  - sum(p.model != model_digest for p in pairs), "conflicting_repeats": conflicts,
                  "other_models": sum(p.model != model_digest for p in pairs)}


def dawn_key(pairs: list[DawnPair], references: list[Reference], *, client: str, alpha: float = 0.01,
             model_digest: str | None = None, served=None, tail: float | None = None) -> DawnKey:
    """The calibrated DAWN key of ``client`` (see the module docstring); ConfigError on each refusal.

    ``served``: the served model as a Suspect (optional), checked not to be owned on the key. ``tail``: the
    calibration's (None: the default quantile :data:`~.calibration.TAIL`, verify charged
    :func:`~.calibration.skew_tail`, as :func:`~.calibration.calibrate`; an explicit tail is both).
    """
    from ..verification.verifier import can_prove, verify

    if not 0 < alpha < 1:
        raise ConfigError(f"alpha must lie in (0, 1), got {alpha!r}")
    kept, counts = unique_pairs(pairs, model_digest)
    if not kept:
        raise ConfigError(f"the DAWN log of client {client!r} holds no watermarked answers"
                          + (f" of the model {model_digest[:12]}..." if model_digest and pairs else ""))
    shapes = {tuple(p.image.shape) for p in kept}
    classes = {p.classes for p in kept}
    if len(shapes) > 1 or len(classes) > 1:
        raise ConfigError(f"the log of client {client!r} mixes input shapes {sorted(shapes)} or class counts "
                          f"{sorted(classes)}")
    n, refs = len(kept), len(references)
    if refs < MIN_REFERENCES:
        raise ConfigError(f"a DAWN key is calibrated on at least {MIN_REFERENCES} reference models, got {refs}")
    quantile, charged = (TAIL, skew_tail(refs)) if tail is None else (tail, tail)
    try:
        need = min_pairs(refs, alpha, quantile, charged=charged)
    except ConfigError as exc:
        raise ConfigError(f"client {client!r}: {exc}") from None
    if n < need:
        raise ConfigError(f"client {client!r} was given {n} watermarked answer(s); a key needs at least {need} to "
                          f"reach alpha {alpha:g} even if none of the {refs} reference models matched any (null "
                          f"{floor_null(n, refs, quantile):.3g} at {n}): wait for more of its queries or serve a higher "
                          "--dawn-rate")
    key = OwnershipKey(
        inputs=dequantised(np.stack([p.image for p in kept])), labels=torch.tensor([p.label for p in kept]),
        method=METHOD, params={"client": client, "pairs": n, "rate": kept[0].rate or DEFAULT_RATE,
                               "canonical": f"uint16 grid 1/{GRID}", **{k: v for k, v in counts.items()
                                                                        if k != "model_digest"}},
        num_classes=int(next(iter(classes))), input_shape=tuple(int(s) for s in next(iter(shapes))),
        null_match_prob=1.0, null_source=UNCALIBRATED, model_digest=counts["model_digest"])
    key = calibrate(key, references, keep_exact=False, tail=tail)
    record = key.params["calibration"]
    matches = [r["matches"] for r in record["references"]]
    for mode in ("fixed", "sequential"):
        if not can_prove(key, alpha, mode):
            raise ConfigError(f"the reference models answer client {client!r}'s logged labels too often (matches "
                              f"{', '.join(map(str, matches))} of {n}; null {key.null_match_prob:.3g}): even a "
                              f"suspect matching all {n} would not reach alpha {alpha:g} ({mode}); nothing written")
    lines = [f"client {client!r}: {counts['logged']} logged answer(s), {n} distinct key inputs"
             + (f" ({counts['repeats']} repeats dropped)" if counts["repeats"] else ""),
             f"null 1 -> {key.null_match_prob:.4g} from {refs} reference models (matches "
             f"{', '.join(map(str, matches))} of {n})"]
    summary = {"client": client, "pairs": n, "null": key.null_match_prob, "references": record["references"],
               "min_pairs": need, **counts}
    if served is not None:
        verdict = verify(key, served, alpha=alpha)
        summary["served_model_matches"] = verdict.matches
        if verdict.decision == "owned":
            raise ConfigError(f"the served model itself answers {verdict.matches} of {n} logged labels and is judged "
                              "owned: this log was not made by its DAWN answers (another model, or an altered log)")
        lines.append(f"served model: answers {verdict.matches} of the {n} logged labels (its own answers differ, "
                     "as they must)")
    return DawnKey(key, summary, lines)


def write_dawn_key(log_dir: str | Path, client: str, out: str | Path, *, dataset: str = "digits",
                   data_dir: str | Path | None = None, size: int | None = None, seed: int = 0,
                   references: list[str] | None = None, references_dir: str | Path | None = None,
                   count: int = DEFAULT_REFERENCES, model: str | Path | None = None, model_digest: str | None = None,
                   alpha: float = 0.01, passphrase: str | None = None, force: bool = False,
                   quiet: bool = True) -> DawnKey:
    """Read ``client``'s pairs from ``log_dir``, make its calibrated key (:func:`dawn_key`) and write it to ``out``.

    References: the user's files or URLs (``references``), else the calibration members of the default
    population of the owner's split of ``dataset`` (trained on first use, as ``protect`` does). ``model``:
    the served model file; its digest chooses the log's answers and it is checked not to be owned.
    """
    from ..data.splits import load_splits
    from ..keys.container import save_key
    from ..models.modelfile import load_model, weights_digest
    from ..protections.watermarks.dawn_log import read_pairs
    from ..suspects.local import TorchSuspect
    from ..util.files import refuse_existing
    from .sets import reference_sets

    out = Path(out)
    refuse_existing(out, force)
    pairs, skipped = read_pairs(log_dir, client)
    served = None
    if model is not None:
        net = load_model(model)
        digest = weights_digest(net)
        if model_digest is not None and model_digest != digest:
            raise ConfigError(f"--model {model} has weight digest {digest[:12]}..., not --model-digest "
                              f"{model_digest[:12]}...")
        model_digest, served = digest, TorchSuspect(net)
        size = size or int(net.input_shape[-1])
    splits = load_splits(dataset, data_dir, size=size, seed=seed)
    sets = reference_sets(splits, dataset=dataset, references_dir=references_dir, user_references=references,
                          calibration=count, selection=0, select=False, quiet=quiet)
    made = dawn_key(pairs, sets.calibration, client=client, alpha=alpha, model_digest=model_digest, served=served)
    save_key(made.key, out, passphrase=passphrase)
    made.summary.update(key=str(out), skipped_lines=skipped, encrypted=passphrase is not None)
    made.lines[:0] = sets.lines
    made.lines.append(f"key written to {out} ({len(made.key)} inputs, null {made.key.null_match_prob:.4g}"
                      f"{', encrypted' if passphrase else ''}); verify a suspect with `modelproof verify`")
    return made


__all__ = ["DawnKey", "METHOD", "dawn_key", "floor_null", "min_pairs", "unique_pairs", "write_dawn_key"]
