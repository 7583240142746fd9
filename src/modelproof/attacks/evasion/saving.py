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
from pathlib import Path

import torch

from ...util.errors import ModelFileError
from ...models.modelfile import ModelRecord, register_model_kind
from ..wrapped import inner_model, write_wrapper
from .dcgan import Discriminator
from .pirate import PiratedModel

PIRATE_ARCH = "pirate"


def save_pirate(pirate: PiratedModel, path: str | Path, *, dataset: str = "", extra: dict | None = None) -> Path:
    """Write ``pirate`` to ``path`` (``.safetensors``), atomically."""
    return write_wrapper(pirate, pirate.model, path, arch=PIRATE_ARCH, settings=pirate.detector_record(),
                         what="a pirated model", no_onnx="its detector computes Grad-CAM gradients at inference",
                         dataset=dataset, extra=extra)


def load_pirate(record: ModelRecord, state: dict[str, torch.Tensor], source: str | Path) -> PiratedModel:
    """Rebuild the pirated model of a file whose record says ``arch: pirate`` (weights loaded strictly)."""
    info, model = inner_model(record, state, source)
    try:
        classes, tau, answer_seed = int(info["classes"]), float(info["tau"]), int(info["answer_seed"])
        width = float(info.get("width", 1.0))
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelFileError(f"{source}: the pirate record is missing or has a bad field ({exc})") from None
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
