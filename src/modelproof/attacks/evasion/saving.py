"""A pirated model as one modelproof model file: safetensors weights (stolen model and detector) + JSON record.

The record's ``arch`` is ``pirate``; its ``extra["pirate"]`` holds the stolen model's architecture
record (``models.architecture_record``), tau, the answer seed, the number of per-class
discriminators and the heatmap method. The weights are the pirate's state dict: ``model.*`` (the
stolen model, bit-exact), ``discriminators.<c>.*`` and ``alphas``. ``modelfile.load_model`` hands
such a file to :func:`load_pirate`, so ``serve``, ``verify`` and ``open_suspect`` treat a pirated
model like any other model file. ONNX cannot hold it (Grad-CAM needs a backward pass at inference).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import torch

from ...util.errors import ConfigError, ModelFileError
from ...models.modelfile import META_KEY, ModelRecord, register_model_kind, resize_to_state
from ...util.files import atomic_write_bytes
from .dcgan import Discriminator
from .pirate import PiratedModel

PIRATE_ARCH = "pirate"


def save_pirate(pirate: PiratedModel, path: str | Path, *, dataset: str = "", extra: dict | None = None) -> Path:
    """Write ``pirate`` to ``path`` (``.safetensors``), atomically."""
    from safetensors.torch import save

    from ...models import architecture_record

    path = Path(path)
    if path.suffix.lower() == ".onnx":
        raise ModelFileError("a pirated model cannot be exported to ONNX (its detector computes Grad-CAM "
                             f"gradients at inference); write it as a model file (--out {path.with_suffix('.safetensors')})")
    try:
        inner = architecture_record(pirate.model)
    except ConfigError:
        raise ModelFileError(f"the stolen model ({type(pirate.model).__name__}) is not a zoo model, so the "
                             "pirated model cannot be written as a model file") from None
    record = ModelRecord(arch=PIRATE_ARCH, num_classes=int(inner["num_classes"]),
                         input_shape=tuple(inner["input_shape"]),  # type: ignore[arg-type]
                         mean=tuple(inner["mean"]), std=tuple(inner["std"]), dataset=dataset,
                         created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                         extra={**dict(extra or {}), "pirate": {**pirate.detector_record(), "model": inner}})
    state = {k: v.detach().contiguous().clone() for k, v in pirate.state_dict().items()}
    atomic_write_bytes(path, save(state, metadata={META_KEY: record.to_json()}))
    return path


def load_pirate(record: ModelRecord, state: dict[str, torch.Tensor], source: str | Path) -> PiratedModel:
    """Rebuild the pirated model of a file whose record says ``arch: pirate`` (weights loaded strictly)."""
    from ...models import build_from_record

    info = record.extra.get("pirate")
    try:
        inner_record, classes = dict(info["model"]), int(info["classes"])  # type: ignore[index]
        tau, answer_seed = float(info["tau"]), int(info["answer_seed"])  # type: ignore[index]
        width = float(info.get("width", 1.0))  # type: ignore[union-attr]
        model = build_from_record(inner_record)
    except (KeyError, TypeError, ValueError, ConfigError) as exc:
        raise ModelFileError(f"{source}: the pirate record is missing or has a bad field ({exc})") from None
    inner_state = {k[len("model."):]: v for k, v in state.items() if k.startswith("model.")}
    try:
        resize_to_state(model, inner_state)  # a filter-pruned stolen model keeps its narrower layers
        model.load_state_dict(inner_state, strict=True)
    except RuntimeError as exc:
        raise ModelFileError(f"{source}: the stolen model's weights do not fit its record: {str(exc)[:300]}") from None
    side = tuple(int(s) for s in record.input_shape[1:])
    discriminators = [Discriminator((1, *side), width) for _ in range(classes)]  # type: ignore[arg-type]
    pirate = PiratedModel(model, discriminators, torch.zeros(classes), tau=tau, answer_seed=answer_seed,
                          width=width)
    try:
        pirate.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ModelFileError(f"{source}: the detector's weights do not fit the record: {str(exc)[:300]}") from None
    for p in pirate.discriminators.parameters():
        p.requires_grad_(False)
    pirate.record = dataclasses.replace(record)  # type: ignore[attr-defined]
    return pirate.eval()


register_model_kind(PIRATE_ARCH, load_pirate)
