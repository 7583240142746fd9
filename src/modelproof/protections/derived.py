"""Models a protection derives without its secret, kept in the population folder for the next key.

Some of what a protection trains depends only on the judges, the owner's model and data and the
recipe, never on the owner's secret: new-label's other owners (:mod:`.watermarks.foreign_owners`) and
a conferrable fingerprint's surrogates (:mod:`.fingerprints.surrogates`). :func:`kept` trains such a
model once and keeps it in :attr:`.selection.Selection.store` (the population's ``derived/`` folder),
so that a later key on the same population, model and data reads it instead of training it again.

A file is named by a digest of everything the model depends on (``spec``), so a change of any of them
makes a new file and never reads a stale one. It is a modelproof model file (safetensors, never
unpickled), written atomically: a process reading it sees the whole file or none. A damaged file is
made again and replaced; a model that cannot be saved (not a zoo model) or a folder that cannot be
written to is used as trained and only not kept.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

from torch import nn

from ..models.modelfile import load_model, save_model
from ..util.errors import ModelFileError


def kept(folder: Path | None, spec: dict, make: Callable[[], tuple[nn.Module, dict]]) -> tuple[nn.Module, dict]:
    """(model, extra): read from ``folder`` when the file for ``spec`` is there, else ``make()`` (a model
    and a JSON-safe ``extra`` to keep beside it) and write it there; ``folder`` None keeps nothing."""
    path = None
    if folder is not None:
        name = hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:32]
        path = Path(folder) / f"{name}.safetensors"
        if path.is_file():
            try:
                model = load_model(path)
                return model, dict(model.record.extra)  # type: ignore[attr-defined]
            except ModelFileError:
                pass  # damaged: made again below and replaced
    model, extra = make()
    if path is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            save_model(model, path, extra=extra)
        except (ModelFileError, OSError):
            pass  # not a zoo model, or a read-only folder: used now, made again next time
    return model, extra
