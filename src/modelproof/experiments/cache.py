"""The experiment's content-addressed cache: every artefact is named by the hash of what made it.

A job's hash covers its config fragment, its seed, the hashes of the jobs it depends on and the
*code version* of its method (the SHA-256 of the source files that implement it), so editing a
protection's parameter, or its module, invalidates exactly the jobs downstream of it. Results are
JSON files, models safetensors files (``modelfile.save_model``), keys ``.mpkey`` files; all are
written atomically, and a job counts as finished only once its JSON result exists (written last).
"""

from __future__ import annotations

import hashlib
import inspect
import json
import sys
from functools import cache
from pathlib import Path
from typing import Any

from torch import nn

from ..util.files import atomic_write_bytes

HASH_CHARS = 20


def canonical(obj: Any) -> str:
    """Deterministic JSON of ``obj`` (sorted keys, tuples as lists; other objects by ``str``)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def digest(*parts: Any) -> str:
    """A short hex SHA-256 of the canonical JSON of ``parts``."""
    return hashlib.sha256(canonical(list(parts)).encode()).hexdigest()[:HASH_CHARS]


@cache
def _file_digest(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def code_version(*objects: Any) -> str:
    """The SHA-256 of the source files defining ``objects`` (classes, functions or modules) and their
    bases' modules within modelproof: the "code version" of a method."""
    files: set[str] = set()
    for obj in objects:
        targets = obj.__mro__ if isinstance(obj, type) else (obj,)
        for target in targets:
            module = sys.modules.get(getattr(target, "__module__", "") or "") if not inspect.ismodule(target) \
                else target
            if module is None or not module.__name__.startswith("modelproof"):
                continue
            source = inspect.getsourcefile(module)
            if source:
                files.add(source)
    return digest(sorted(_file_digest(f) for f in files))


class Store:
    """A cache folder: ``<root>/<kind>/<hash>.json`` (+ ``.safetensors`` model, ``.mpkey`` key)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def path(self, kind: str, job_hash: str, suffix: str) -> Path:
        """Where the ``suffix`` file of job ``job_hash`` of ``kind`` lives."""
        return self.root / kind / f"{job_hash}{suffix}"

    def result(self, kind: str, job_hash: str) -> dict | None:
        """The finished job's JSON result, or None."""
        path = self.path(kind, job_hash, ".json")
        if not path.is_file():
            return None
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return None  # an unreadable result counts as unfinished: the job runs again

    def put_result(self, kind: str, job_hash: str, result: dict) -> None:
        """Record the job as finished (atomically; written after its model and key files)."""
        data = json.dumps(result, indent=1, sort_keys=True, default=str).encode()
        atomic_write_bytes(self.path(kind, job_hash, ".json"), data, secret=True)  # may preview key samples

    def put_failure(self, kind: str, job_hash: str, result: dict | None) -> None:
        """Record the job's last failure (its error, beside where its result would be), or clear it with None.
        Never read as a result: a re-run retries the job; ``--cached-only`` tables show the error."""
        path = self.path(kind, job_hash, ".failed.json")
        if result is None:
            path.unlink(missing_ok=True)
        else:
            atomic_write_bytes(path, json.dumps(result, indent=1, sort_keys=True, default=str).encode())

    def failure(self, kind: str, job_hash: str) -> dict | None:
        """The job's last recorded failure, or None."""
        path = self.path(kind, job_hash, ".failed.json")
        try:
            return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
        except (OSError, json.JSONDecodeError):
            return None

    def put_model(self, kind: str, job_hash: str, model: nn.Module, info: dict) -> bool:
        """Save ``model``; False (and no file) when its file would not load back bit-exactly, as for
        an SVD-factorised or quantised net that no longer matches its zoo architecture."""
        from ..util.errors import ModelFileError
        from ..models.modelfile import load_model, weights_digest

        from ..attacks.saving import save_file

        path = self.path(kind, job_hash, ".safetensors")
        try:
            save_file(model, path, extra={"experiment": info})  # zoo, pirated or preprocessed model
            if weights_digest(load_model(path)) == weights_digest(model):
                return True
        except (ModelFileError, AttributeError, TypeError, RuntimeError):
            pass
        path.unlink(missing_ok=True)
        return False

    def model(self, kind: str, job_hash: str) -> nn.Module:
        """The cached model of a finished job."""
        from ..models.modelfile import load_model

        return load_model(self.path(kind, job_hash, ".safetensors"))

    def has_model(self, kind: str, job_hash: str) -> bool:
        """Whether a model file exists for the job."""
        return self.path(kind, job_hash, ".safetensors").is_file()

    def put_key(self, job_hash: str, key: Any, kind: str = "protect") -> None:
        """Save the OwnershipKey of a protect job (or the forged key of a forgery's ``attack`` entry)."""
        from ..keys.container import save_key

        save_key(key, self.path(kind, job_hash, ".mpkey"))

    def key(self, job_hash: str, kind: str = "protect") -> Any:
        """The OwnershipKey of a finished protect job (or of a forgery's ``attack`` entry)."""
        from ..keys.container import load_key

        return load_key(self.path(kind, job_hash, ".mpkey"))

    def has_key(self, kind: str, job_hash: str) -> bool:
        """Whether a key file exists for the job."""
        return self.path(kind, job_hash, ".mpkey").is_file()
