"""A population folder: model files plus ``manifest.json``, read and written safely.

Every member has a file in the folder (a modelproof model file for networks, an estimator file for
forests and the like, or the user's own ``.safetensors`` / ``.onnx`` model added with
``references add``) and a manifest entry: name, kind, architecture, seed, role (selection or
calibration), how it was made (the recipe, or "added"), weight digest, test accuracy and seconds.
The manifest is rewritten atomically after every member, so an interrupted build loses at most
the model it was training. Writers share the folder safely: each write holds the manifest's lock
(``manifest.json.lock``, waited for) and merges the members another process recorded meanwhile (a
``references add`` during a build, two builds into one cache), so no member is lost from the manifest.
Nothing in a population folder is ever unpickled.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from ..data.splits import Dataset
from ..util.errors import ConfigError, ModelFileError
from ..util.files import atomic_write_bytes
from ..util.locks import exclusive, silently
from .calibration import Reference
from .mix import CALIBRATION, RECIPE, ROLES, SELECTION

FORMAT, FORMAT_VERSION, MANIFEST = "modelproof-references", 1, "manifest.json"


@dataclass
class Population:
    """A population folder and its manifest (``members``: one dict per model, in the order they were made)."""

    root: Path
    dataset: str
    input_shape: tuple[int, int, int]
    num_classes: int
    split: dict = field(default_factory=dict)
    recipe: str = RECIPE
    members: list[dict] = field(default_factory=list)
    diversity: dict = field(default_factory=dict)

    @classmethod
    def create(cls, root: str | Path, dataset: str, data: Dataset, split: dict | None = None) -> Population:
        """A new, empty population for ``data`` in ``root`` (or the one already there, checked to match)."""
        root = Path(root)
        info = {"data_digest": data.digest(), "images": len(data), **(split or {})}
        if (root / MANIFEST).is_file():
            found = cls.open(root)
            if tuple(found.input_shape) != tuple(data.input_shape) or found.num_classes != data.num_classes:
                raise ConfigError(f"{root} holds references for inputs {found.input_shape} with {found.num_classes} "
                                  f"classes, not {data.input_shape} with {data.num_classes}; use another --out")
            if found.split.get("data_digest") not in (None, info["data_digest"]) or found.recipe != RECIPE:
                raise ConfigError(f"{root} holds references trained on other data or with recipe {found.recipe!r}; "
                                  "use another folder (a population is made for one dataset split)")
            return found
        pop = cls(root, dataset, tuple(data.input_shape), data.num_classes, info)  # type: ignore[arg-type]
        pop.save()
        return pop

    @classmethod
    def open(cls, root: str | Path) -> Population:
        """The population in ``root`` (ConfigError when it has no readable manifest)."""
        root = Path(root)
        path = root / MANIFEST
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"{root} is not a reference population (no {MANIFEST}); make one with "
                              "`modelproof references build`") from None
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(f"{path}: unreadable manifest ({exc})") from None
        if not isinstance(d, dict) or d.get("format") != FORMAT or d.get("format_version") != FORMAT_VERSION:
            raise ConfigError(f"{path}: not a modelproof reference manifest (format {d.get('format')!r})")
        try:
            return cls(root, str(d["dataset"]), tuple(int(s) for s in d["input_shape"]), int(d["num_classes"]),  # type: ignore[arg-type]
                       dict(d.get("split", {})), str(d.get("recipe", "")), list(d.get("members", [])),
                       dict(d.get("diversity", {})))
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"{path}: manifest misses a field or has a bad one ({exc})") from None

    def save(self) -> None:
        """Write the manifest atomically, under its lock, after taking in the members another process recorded
        since this one read it (ours win where a name is in both)."""
        with exclusive(self.root / MANIFEST, "reference manifest", wait=silently):
            if (self.root / MANIFEST).is_file():
                ours = {m["name"] for m in self.members}
                theirs = [m for m in Population.open(self.root).members if m["name"] not in ours]
                self.members = theirs + self.members
            self._write()

    def _write(self) -> None:
        d = {"format": FORMAT, "format_version": FORMAT_VERSION, "dataset": self.dataset,
             "input_shape": list(self.input_shape), "num_classes": self.num_classes, "split": self.split,
             "recipe": self.recipe, "members": self.members, "diversity": self.diversity}
        atomic_write_bytes(self.root / MANIFEST, (json.dumps(d, indent=1, sort_keys=True) + "\n").encode())

    def names(self) -> set[str]:
        """Names of the members recorded whose file is present."""
        return {m["name"] for m in self.members if (self.root / m["file"]).is_file()}

    def record(self, entry: dict) -> None:
        """Add (or replace) one member's entry and write the manifest."""
        if entry.get("role") not in ROLES:
            raise ConfigError(f"a reference's role must be one of {', '.join(ROLES)}, got {entry.get('role')!r}")
        self.members = [m for m in self.members if m["name"] != entry["name"]] + [entry]
        self.save()

    def entries(self, role: str, for_arch: str | None = None) -> list[dict]:
        """Members of ``role`` (selection: the general ones plus those serving ``for_arch``)."""
        if role not in ROLES:
            raise ConfigError(f"role must be one of {', '.join(ROLES)}, got {role!r}")
        present = self.names()
        return [m for m in self.members if m["role"] == role and m["name"] in present
                and (m.get("for_arch") in (None, for_arch) or role == CALIBRATION)]

    def references(self, role: str, for_arch: str | None = None) -> list[Reference]:
        """The members of ``role`` opened as :class:`~modelproof.references.calibration.Reference` objects."""
        return [open_member(self.root, m) for m in self.entries(role, for_arch)]


def open_member(root: Path, entry: dict) -> Reference:
    """One manifest entry as a Reference (its digest checked against the file)."""
    from ..models.modelfile import load_model, weights_digest
    from ..suspects.local import TorchSuspect, open_suspect
    from .estimators import load_estimator

    path = root / entry["file"]
    trusted = entry.get("source") == "trained"
    if entry.get("estimator"):
        model = load_estimator(path, identity=entry["name"])
        digest, suspect = model.digest(), model
    elif path.suffix.lower() == ".safetensors":
        net = load_model(path)
        digest, suspect = weights_digest(net), TorchSuspect(net, identity=entry["name"])
    else:
        suspect = open_suspect(path)
        digest = _file_digest(path)
    if entry.get("digest") and digest != entry["digest"]:
        raise ModelFileError(f"{path}: weights digest {digest[:12]} differs from the manifest's {entry['digest'][:12]}; "
                             "the file was changed after it was recorded")
    return Reference(suspect, entry["name"], entry["kind"], digest, trusted=trusted)


def _file_digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def add_models(root: str | Path, paths: list[str | Path], *, role: str = CALIBRATION,
               test: Dataset | None = None) -> list[dict]:
    """Copy the user's own models (``.safetensors`` modelproof model files or ``.onnx``) into the population.

    Each is checked to read the population's images (shape and classes), its digest recorded, and it
    gets ``role``. A model already present (same digest) is refused, so no model serves twice.
    """
    from ..models.modelfile import load_model, weights_digest
    from ..suspects.local import open_suspect

    pop = Population.open(root)
    if role not in ROLES:
        raise ConfigError(f"--role must be one of {', '.join(ROLES)}, got {role!r}")
    added = []
    for spec in paths:
        src = Path(spec)
        if src.suffix.lower() not in (".safetensors", ".onnx") or not src.is_file():
            raise ConfigError(f"cannot add {spec}: expected an existing .safetensors model file or .onnx file")
        if src.suffix.lower() == ".safetensors":
            net = load_model(src)
            digest, kind = weights_digest(net), str(getattr(getattr(net, "record", None), "arch", "torch"))
        else:
            digest, kind = _file_digest(src), "onnx"
        suspect = open_suspect(src)
        shape = tuple(getattr(suspect, "input_shape", pop.input_shape) or pop.input_shape)
        if shape != tuple(pop.input_shape) or int(getattr(suspect, "num_classes", pop.num_classes)) != pop.num_classes:
            raise ConfigError(f"{spec} reads inputs {shape} with {getattr(suspect, 'num_classes', '?')} classes; the "
                              f"population's are {tuple(pop.input_shape)} with {pop.num_classes}")
        if any(m.get("digest") == digest for m in pop.members):
            raise ConfigError(f"{spec} is already in {root} (same digest); a model serves one role once")
        name = f"user-{src.stem}"
        if name in {m["name"] for m in pop.members}:
            name = f"{name}-{digest[:8]}"
        dest = pop.root / f"{name}{src.suffix.lower()}"
        shutil.copyfile(src, dest)
        accuracy = None
        if test is not None:
            accuracy = float((suspect.predict(test.images) == test.labels).float().mean())
        entry = {"name": name, "kind": kind, "role": role, "file": dest.name, "digest": digest, "source": "added",
                 "seed": None, "recipe": "added by the user", "test_accuracy": accuracy, "for_arch": None}
        pop.record(entry)
        added.append(entry)
    return added


def default_root() -> Path:
    """Where default populations live: ``$MODELPROOF_CACHE``, else ``$XDG_CACHE_HOME/modelproof``, else
    ``~/.cache/modelproof``; then ``references/``."""
    import os

    base = os.environ.get("MODELPROOF_CACHE")
    if not base:
        xdg = os.environ.get("XDG_CACHE_HOME")
        base = str(Path(xdg) / "modelproof") if xdg else str(Path.home() / ".cache" / "modelproof")
    return Path(base) / "references"


def default_dir(dataset: str, data: Dataset) -> Path:
    """The cache folder of ``data``'s default population: keyed by dataset, split (data digest) and recipe."""
    shape = "x".join(str(s) for s in data.input_shape)
    return default_root() / f"{dataset}-{shape}-{data.digest()[:12]}-{RECIPE}"


__all__ = ["CALIBRATION", "MANIFEST", "Population", "SELECTION", "add_models", "default_dir",
           "default_root", "open_member"]
