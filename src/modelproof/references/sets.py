"""The two disjoint sets of references one key needs: *selection* (choose the key) and *calibration* (bound its null).

:func:`reference_sets` takes them from a population (the folder given with ``--references-dir``, or
the default cache of the owner's data, built on first use): selection = the population's selection
members for the owner's architecture, calibration = its calibration members, or the user's own
reference files when given. :func:`check_disjoint` refuses a model that would serve in both sets
(same digest or same name), :func:`selection_of` turns the selection set into the
:class:`~modelproof.protections.selection.Selection` a protection chooses its key with, and
:func:`record_selection` makes sure the key records which models selected it (their digests), so
that :func:`~modelproof.references.calibration.calibrate` can refuse them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..data.splits import Splits
from ..keys.key import OwnershipKey
from ..protections.selection import Judge, Selection
from ..util.errors import ConfigError
from .calibration import MIN_REFERENCES, Reference, reference_from_spec
from .mix import CALIBRATION, DEFAULT_CALIBRATION, DEFAULT_SELECTION, SELECTION


@dataclass(frozen=True)
class ReferenceSets:
    """Selection and calibration references for one key, where they came from and the seconds spent training."""

    selection: list[Reference]
    calibration: list[Reference]
    folder: Path | None = None
    seconds: float = 0.0
    lines: list[str] = field(default_factory=list)


def reference_sets(splits: Splits, *, dataset: str, owner_arch: str | None = None,
                   references_dir: str | Path | None = None, user_references: list[str] | None = None,
                   calibration: int = DEFAULT_CALIBRATION, selection: int = DEFAULT_SELECTION,
                   select: bool = True, quiet: bool = True,
                   log: Callable[[str], None] | None = None) -> ReferenceSets:
    """The references of one ``protect`` (see the module docstring); ``select`` False: no selection set."""
    from .build import ensure_population

    need_population = select or not user_references
    selected: list[Reference] = []
    calibrating: list[Reference] = []
    folder, seconds, lines = None, 0.0, []
    if need_population:
        pop, seconds = ensure_population(splits, dataset=dataset, root=references_dir, owner_arch=owner_arch,
                                         calibration=calibration if not user_references else 0,
                                         selection=selection if select else 0, quiet=quiet, log=log)
        folder = pop.root
        if select:
            selected = pop.references(SELECTION, owner_arch)
            if not selected:
                raise ConfigError(f"the reference population in {pop.root} has no selection references; build it "
                                  "with `modelproof references build` (or pass --no-selection)")
        if not user_references:
            calibrating = pop.references(CALIBRATION)[:calibration] if references_dir is None else \
                pop.references(CALIBRATION)
        lines.append(f"references: {len(selected)} selection and {len(calibrating)} calibration models from "
                     f"{pop.root}" + (f" (trained now in {seconds:.1f} s)" if seconds > 0.05 else " (nothing trained)"))
    if user_references:
        calibrating = [reference_from_spec(spec) for spec in user_references]
    if len(calibrating) < MIN_REFERENCES:
        raise ConfigError(f"calibration needs at least {MIN_REFERENCES} reference models, the population in "
                          f"{folder} has {len(calibrating)} calibration models; add some with `modelproof references "
                          "add --role calibration` or build more")
    check_disjoint(selected, calibrating)
    return ReferenceSets(selected, calibrating, folder, seconds, lines)


def check_disjoint(selection: list[Reference], calibration: list[Reference]) -> None:
    """ConfigError when a model is in both sets (by weight digest, or by name when a digest is unknown)."""
    digests = {r.digest: r.name for r in selection if r.digest}
    names = {r.name for r in selection}
    for ref in calibration:
        if (ref.digest and ref.digest in digests) or ref.name in names:
            other = digests.get(ref.digest, ref.name) if ref.digest else ref.name
            raise ConfigError(f"reference {ref.name} is also a selection reference ({other}); a key's selection "
                              "and calibration references must be different models")


def selection_of(refs: list[Reference], oversample: int | None = None, alpha: float = 0.01,
                 folder: Path | None = None) -> Selection:
    """The Selection (judges) a protection chooses its key against; ``alpha`` is the self-check's level, at
    which a protection that foresees its calibration (random-fingerprint's pilot) judges a key provable;
    ``folder``, the population's, holds what a protection derives from the judges (under ``derived/``)."""
    from .advice import full_match_proves

    return Selection(tuple(Judge(r.name, r.digest, r.suspect, getattr(r.suspect, "model", None)) for r in refs),
                     oversample=oversample, provable=full_match_proves, alpha=alpha,
                     store=Path(folder) / "derived" if folder is not None else None)


def record_selection(key: OwnershipKey, selection: Selection | None) -> OwnershipKey:
    """``key`` recording the digests of its selection references (the method's own record kept and completed)."""
    if selection is None:
        return key
    digests = [j.digest for j in selection.judges if j.digest]
    record = key.params.get("selection")
    if isinstance(record, dict):
        merged = dict(record, references=sorted(set(record.get("references", [])) | set(digests)))
    else:
        merged = {"rule": "none (the method kept every candidate it drew)", "tried": len(key), "kept": len(key),
                  "references": sorted(digests)}
    return dataclasses.replace(key, params=dict(key.params, selection=merged))
