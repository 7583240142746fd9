"""The whole ``protect`` pipeline as one library call: protect, calibrate, self-check, write the folder.

:func:`protect_model` protects a model and finishes its key (:func:`~modelproof.references.finalize.finalize_key`:
calibration on reference models and the self-check); :func:`protect_to_folder` also loads the model
(or builds one), the owner's data, and writes ``key.mpkey`` (encrypted with a passphrase), the
method's extras, the key commitment and, for watermarks, ``model.safetensors`` into one folder. The
command line (``modelproof protect METHOD``) is argument parsing around :func:`protect_to_folder`.
"""

from __future__ import annotations

import dataclasses
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from torch import nn

from ..data.splits import Splits, load_splits
from ..keys.commitments import commit_key, commitment_path
from ..keys.container import save_key
from ..models import build_model
from ..models.modelfile import load_model, save_model, weights_digest
from ..models.training import evaluate, predict
from ..protections.base import Protected, Protection
from ..protections.checkpoint import Resume, kept_secret
from ..util.errors import ConfigError
from ..util.files import atomic_folder, refuse_existing
from ..util.locks import exclusive
from .calibration import DEFAULT_REFERENCES, MIN_REFERENCES
from .finalize import FinalKey, finalize_key
from .mix import DEFAULT_SELECTION
from .sets import record_selection, reference_sets, selection_of


@dataclass(frozen=True)
class ReferenceOptions:
    """How a new key is chosen, calibrated and checked.

    ``references_dir``: the reference population to use (default: the cache of the owner's data,
    trained on first use); ``select`` False draws the key without selection references;
    ``oversample``: candidates drawn per key input (None: the method's default); ``references``: the
    user's own calibration reference files or URLs (replace the population's calibration set);
    ``count`` / ``selection_count``: calibration / selection references of the default population; ``calibrate`` False skips
    calibration; ``alpha`` is the self-check's level; ``allow_weak`` writes a key that fails the
    self-check (with a warning in it).
    """

    references: list[str] | None = None
    count: int = DEFAULT_REFERENCES
    calibrate: bool = True
    alpha: float = 0.01
    allow_weak: bool = False
    references_dir: str | Path | None = None
    selection_count: int = DEFAULT_SELECTION
    select: bool = True
    oversample: int | None = None

    def __post_init__(self) -> None:
        if self.oversample is not None and (isinstance(self.oversample, bool) or self.oversample < 1):
            raise ConfigError(f"--oversample must be an integer of at least 1, got {self.oversample!r}")
        if not 0 < self.alpha < 1:
            raise ConfigError(f"--verify-alpha must be a number in (0, 1), got {self.alpha!r}")
        if self.count < MIN_REFERENCES:
            raise ConfigError(f"--references must be at least {MIN_REFERENCES} (the calibration needs them), "
                              f"got {self.count}")


@dataclass
class ProtectOutcome:
    """A protected model with its finished key, and the accuracies measured on the test split."""

    result: Protected
    final: FinalKey
    accuracy_before: float | None
    accuracy_after: float
    key_accuracy: float
    summary: dict = field(default_factory=dict)  # what ``protect --json`` prints, set by protect_to_folder


def protect_model(protection: Protection, model: nn.Module, splits: Splits, *, seed: int = 0,
                  options: ReferenceOptions = ReferenceOptions(), owner_arch: str | None = None,
                  trained: bool = True, quiet: bool = True, dataset: str | None = None) -> ProtectOutcome:
    """Protect ``model`` with the owner's split of ``splits`` and finish its key.

    The key is chosen against the selection references and calibrated on the disjoint calibration
    references (:func:`~modelproof.references.sets.reference_sets`), then self-checked. ``trained``
    says whether ``model`` was trained already (then its test accuracy before is reported).
    ConfigError, with nothing returned, when the key cannot prove its own model (unless ``allow_weak``).
    """
    import time

    before = evaluate(model, splits.test) if trained else None
    source_digest = weights_digest(model)
    sets = None
    if options.calibrate or options.select:
        sets = reference_sets(splits, dataset=dataset or splits.owner.name.split("/")[0], owner_arch=owner_arch,
                              references_dir=options.references_dir, user_references=options.references,
                              calibration=options.count, selection=options.selection_count,
                              select=options.select, quiet=quiet)  # progress: the one helper
    selection = selection_of(sets.selection, options.oversample, options.alpha, sets.folder) \
        if sets is not None and sets.selection else None
    start = time.perf_counter()
    result = protection.protect(model, splits.owner, seed=seed, test=splits.test, selection=selection)
    protect_seconds = time.perf_counter() - start
    result = dataclasses.replace(result, key=record_selection(result.key, selection))
    final = finalize_key(result, protection, splits.owner, source_digest=source_digest, owner_arch=owner_arch,
                         count=options.count, calibrate=options.calibrate, alpha=options.alpha,
                         allow_weak=options.allow_weak, seed=seed, quiet=quiet,
                         trained=sets.calibration if sets is not None else None)
    if sets is not None:
        final.lines[:0] = sets.lines
        final.summary.update(reference_seconds=sets.seconds, references_dir=str(sets.folder) if sets.folder else None,
                             selection_references=len(sets.selection), protect_seconds=protect_seconds)
    key_accuracy = float((predict(result.model, final.key.inputs) == final.key.labels).float().mean())
    return ProtectOutcome(result, final, before, evaluate(result.model, splits.test), key_accuracy)


def protect_to_folder(protection: Protection, out: str | Path, *, model: str | Path | None = None,
                      arch: str | None = None, dataset: str = "digits", data_dir: str | Path | None = None,
                      size: int | None = None, seed: int = 0, options: ReferenceOptions = ReferenceOptions(),
                      passphrase: str | None = None, signing_key=None, quiet: bool = True,
                      force: bool = False) -> ProtectOutcome:
    """Protect the model file ``model`` (or a new ``arch``) and write the key, commitment and model into ``out``.

    Returns the outcome with its ``summary`` (what ``protect --json`` prints: method, dataset, file
    paths, key size, accuracies before and after, key accuracy, the method's own report and the
    calibration summary); ``outcome.final.lines`` say how the key was calibrated and checked.
    The folder is locked (``OUT.lock`` beside it) for the whole run; an existing key, commitment or model
    in it is replaced only with ``force``.
    """
    if (model is None) == (arch is None):
        raise ConfigError("give exactly one of --model (a trained model file) or --arch (build from scratch)")
    out = Path(out)
    with exclusive(out, "output folder"):  # a second protect into the same folder is refused at once
        refuse_existing([out / "key.mpkey", commitment_path(out / "key.mpkey"), out / "model.safetensors"], force)
        net = load_model(model) if model is not None else None
        splits = load_splits(dataset, data_dir, size=size or (net.input_shape[-1] if net is not None else None), seed=seed)
        if net is None:
            net = build_model(arch, splits.num_classes, splits.input_shape, seed=seed)
        owner_arch = arch or getattr(getattr(net, "record", None), "arch", None)
        resume, given = None, protection.resume
        if protection.resumable:  # interrupted here, the same command goes on from the checkpoint next time
            resume = given or Resume(out.with_name(out.name + ".resume"), passphrase)
            if not protection.secret_given:  # none given: the random one must be the same next time
                protection.set_secret(kept_secret(resume, lambda: protection.secret))
            protection.resume_in(resume)
        try:
            outcome = protect_model(protection, net, splits, seed=seed, options=options, owner_arch=owner_arch,
                                    trained=model is not None, quiet=quiet, dataset=dataset)
        finally:  # this folder's checkpoint is not the caller's: a later call with another OUT keeps its own
            protection.resume_in(given)
        result, final = outcome.result, outcome.final
        with atomic_folder(out, last=("key.mpkey",)) as tmp:  # a Ctrl-C leaves all of the folder or none
            key_path = save_key(final.key, tmp / "key.mpkey", passphrase=passphrase)
            extras = protection.save_extras(dataclasses.replace(result, key=final.key), key_path, passphrase)
            commitment = commit_key(final.key, key_path, model=result.model, signing_key=signing_key, force=True)
            summary = {"method": protection.name, "dataset": dataset, "key": str(key_path), **extras,
                       "key_size": len(final.key), "accuracy_before": outcome.accuracy_before, "commitment": commitment,
                       "accuracy_after": outcome.accuracy_after, "key_accuracy": outcome.key_accuracy,
                       **{k: v for k, v in result.report.items() if k not in ("accuracy_before", "accuracy_after")},
                       **final.summary}
            if protection.kind == "watermark":
                summary["model"] = str(save_model(result.model, tmp / "model.safetensors", dataset=dataset,
                                                  extra={"split_seed": seed, "size": size,
                                                         "protection": protection.name}))
        if resume is not None:
            shutil.rmtree(resume.folder, ignore_errors=True)  # written: the checkpoint has served
    outcome.summary = _moved(summary, str(tmp), str(out))
    return outcome


def _moved(value, tmp: str, out: str):
    """``value`` (the summary) with every path inside the temporary folder ``tmp`` made one inside ``out``."""
    if isinstance(value, dict):
        return {k: _moved(v, tmp, out) for k, v in value.items()}
    if isinstance(value, str) and value.startswith(tmp):
        return out + value[len(tmp):]
    return value
