"""Checkpoints of a long protection, so that an interrupted ``protect`` resumes where it stopped.

The blind watermark's Algorithm 1 trains for 100 epochs: hours on a CPU for an MNIST CNN. A run
given a :class:`Resume` writes, after an epoch (at most once a minute, and after the last), everything the next
epoch depends on (the networks,
the optimisers and the scheduler, the random generators, the history) into one file, atomically and
owner-only; a run of the same protection on the same model and data, with the same secret and
parameters, reads it and goes on from the next epoch, and ends with the same weights, bit for bit on
the CPU, as a run never interrupted. A checkpoint of another run (its tag differs: a digest of the
starting weights, the data and the settings, never the secret itself) or one that cannot be read is
ignored and replaced. ``modelproof protect`` keeps it in ``OUT.resume/`` beside its output folder,
encrypted with the key's passphrase when one is given (it holds the unfinished key's material), and
removes it once the folder is written; when no secret was given, the random one it drew is kept there
too (:func:`kept_secret`), so that the same command run again goes on.

A long *search* keeps its pieces instead (:func:`kept_piece`): the IGSM and CW-L2 fingerprints move
their candidates chunk by chunk, and a chunk that took a minute or more is kept under a digest of
everything it depends on (the model's weights, the method's settings, the chunk's starting points and
target labels), so that a run stopped after hours of selection goes on from its last chunk and
chooses the same key.

The file is safetensors (tensors) with the rest as JSON in its metadata: nothing is ever unpickled.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors
from torch import nn

from ..util.errors import ModelproofError
from ..util.files import atomic_write_bytes

META = "modelproof_checkpoint"
VERSION = 1
# A checkpoint at most this often (and after the last epoch): an encrypted one costs about 0.5 s (scrypt),
# as much as a whole epoch of a small model, and a stop then loses at most a minute of training.
SAVE_EVERY_S = 60.0


@dataclass(frozen=True)
class Resume:
    """Where a protection keeps its checkpoints, and the passphrase that encrypts them (None: plain);
    ``every_s``: the least time between two checkpoints (None: :data:`SAVE_EVERY_S`)."""

    folder: Path
    passphrase: str | None = None
    every_s: float | None = None

    def due(self, since: float, last: bool) -> bool:
        """Whether to write a checkpoint ``since`` seconds after the previous one (always after the ``last`` epoch)."""
        return last or since >= (SAVE_EVERY_S if self.every_s is None else self.every_s)

    def path(self, name: str) -> Path:
        """The checkpoint file of the part ``name`` (e.g. "blind")."""
        return Path(self.folder) / f"{name}.ckpt"


def kept_secret(resume: Resume, draw: Callable[[], str]) -> str:
    """The random secret of a run with no secret given: the one kept in ``resume``'s folder by the run it
    goes on from, else ``draw()``, kept there (owner-only, encrypted with the passphrase) for the next one."""
    path = Path(resume.folder) / "secret"
    if path.is_file():
        try:
            raw = _read(path, resume.passphrase)
            if raw:
                return raw.decode()
        except (ModelproofError, OSError, UnicodeDecodeError):
            pass  # not this run's: draw a new one (the checkpoint's tag will not match either)
    secret = draw()
    _write(path, secret.encode(), resume.passphrase)
    return secret


def kept_piece(resume: Resume | None, part: str, tag: str | None,
               compute: Callable[[], dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """``compute()``'s tensors, or those an earlier run kept under ``tag`` in ``resume``'s folder (a piece of a
    long search). A fresh result is kept when computing it took at least ``resume``'s least time between
    checkpoints (a minute by default: a piece of seconds costs little to redo, and writing an encrypted one
    takes about half a second); without ``resume`` nothing is kept."""
    if resume is None or tag is None:
        return compute()
    path = resume.path(f"{part}-{tag[:16]}")
    found = load_checkpoint(path, tag, resume.passphrase)
    if found is not None:
        return found[0]
    start = time.perf_counter()
    tensors = compute()
    if resume.due(time.perf_counter() - start, last=False):
        save_checkpoint(path, tag, tensors, {}, resume.passphrase)
    return tensors


def _write(path: Path, raw: bytes, passphrase: str | None) -> None:
    """``raw`` to ``path``, atomically, owner-only, encrypted with ``passphrase`` when one is given."""
    if passphrase is not None:
        from ..keys.container import encrypt_bytes

        raw = encrypt_bytes(raw, passphrase)
    atomic_write_bytes(Path(path), raw, secret=True)


def _read(path: Path, passphrase: str | None) -> bytes:
    """What :func:`_write` wrote (KeyFileError when it does not decrypt with ``passphrase``)."""
    raw = Path(path).read_bytes()
    if passphrase is None:
        return raw
    from ..keys.container import decrypt_bytes

    return decrypt_bytes(raw, passphrase, source=f"checkpoint {Path(path).name}")


def run_tag(settings: dict, tensors: Iterable[torch.Tensor]) -> str:
    """A digest of the JSON ``settings`` and the bytes of ``tensors``: what a checkpoint must match to be resumed."""
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode())
    for t in tensors:
        t = t.detach().cpu().contiguous()
        digest.update(f"{t.dtype}{tuple(t.shape)}".encode())
        digest.update(memoryview(t.reshape(-1).view(torch.uint8).numpy()))
    return digest.hexdigest()


def module_tensors(prefix: str, module: nn.Module) -> dict[str, torch.Tensor]:
    """The module's state (parameters and buffers), named under ``prefix``."""
    return {f"{prefix}.{k}": v for k, v in module.state_dict().items()}


def optimizer_tensors(prefix: str, opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """An optimiser's state as named tensors and JSON (its parameter groups and any non-tensor state)."""
    state = opt.state_dict()
    tensors, scalars = {}, {}
    for index, values in state["state"].items():
        for name, value in values.items():
            if torch.is_tensor(value):
                tensors[f"{prefix}.{index}.{name}"] = value
            else:
                scalars.setdefault(str(index), {})[name] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def restore_optimizer(opt: torch.optim.Optimizer, prefix: str, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    """Load what :func:`optimizer_tensors` saved into ``opt``."""
    state: dict[int, dict] = {}
    for name, value in tensors.items():
        if name.startswith(prefix + "."):
            index, field = name[len(prefix) + 1:].split(".", 1)
            state.setdefault(int(index), {})[field] = value
    for index, values in meta["scalars"].items():
        state.setdefault(int(index), {}).update(values)
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def restore_module(module: nn.Module, prefix: str, tensors: dict[str, torch.Tensor]) -> None:
    """Load what :func:`module_tensors` saved into ``module`` (on its device)."""
    start = len(prefix) + 1
    module.load_state_dict({k[start:]: v for k, v in tensors.items() if k.startswith(prefix + ".")})


def training_state(modules: dict[str, nn.Module], optimizers: dict[str, torch.optim.Optimizer],
                   schedulers: dict[str, Any], generator: torch.Generator) -> tuple[dict[str, torch.Tensor], dict]:
    """Everything a training loop goes on from, as named tensors and JSON: the modules, the optimisers, the
    schedulers, ``generator`` and torch's global generator (the one dropout draws from)."""
    tensors = {k: v for name, module in modules.items() for k, v in module_tensors(name, module).items()}
    meta: dict = {name: s.state_dict() for name, s in schedulers.items()}  # every name once, at the top
    for name, opt in optimizers.items():
        saved, meta[name] = optimizer_tensors(name, opt)
        tensors.update(saved)
    tensors.update({"rng.gen": generator.get_state(), "rng.global": torch.get_rng_state()})
    return tensors, meta


def restore_training_state(tensors: dict[str, torch.Tensor], meta: dict, modules: dict[str, nn.Module],
                           optimizers: dict[str, torch.optim.Optimizer], schedulers: dict[str, Any],
                           generator: torch.Generator) -> None:
    """Load what :func:`training_state` saved into the same objects, and set torch's global generator."""
    for name, module in modules.items():
        restore_module(module, name, tensors)
    for name, opt in optimizers.items():
        restore_optimizer(opt, name, tensors, meta[name])
    for name, scheduler in schedulers.items():
        scheduler.load_state_dict(meta[name])
    generator.set_state(tensors["rng.gen"])
    torch.set_rng_state(tensors["rng.global"])


def save_checkpoint(path: Path, tag: str, tensors: dict[str, torch.Tensor], meta: dict,
                    passphrase: str | None = None) -> None:
    """Write ``tensors`` and the JSON ``meta`` under ``tag``, atomically, owner-only, encrypted with ``passphrase``."""
    plain = {k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}
    _write(path, save_tensors(plain, metadata={META: json.dumps({"version": VERSION, "tag": tag, **meta})}),
           passphrase)


def load_checkpoint(path: Path, tag: str, passphrase: str | None = None) -> tuple[dict[str, torch.Tensor], dict] | None:
    """(tensors, meta) of the checkpoint at ``path`` written under ``tag``; None when there is none, it
    belongs to another run, or it cannot be read (damaged, or another passphrase): the run starts over."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        raw = _read(path, passphrase)
        from ..keys.container import safetensors_metadata

        meta = json.loads(safetensors_metadata(raw, "checkpoint")[META])
        if meta.get("version") != VERSION or meta.get("tag") != tag:
            return None
        return load_tensors(raw), meta
    except (ModelproofError, SafetensorError, OSError, ValueError, KeyError, TypeError):
        return None  # an unreadable checkpoint only means starting over
