"""Model files of the kinds that wrap a zoo model: the pirate behind its detector, a model behind input transforms.

Such a file is one safetensors file: the wrapper's state dict (the zoo model's weights under
``model.*``, plus whatever the wrapper adds) and a record whose ``arch`` names the kind and whose
``extra[arch]`` holds the wrapper's settings and the zoo model's architecture record under ``model``.
``models.modelfile.load_model`` hands it to the loader the kind registered; :func:`inner_model`
rebuilds the zoo model inside with its weights, narrower layers of a filter-pruned one included.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
from torch import nn

from ..models.modelfile import META_KEY, ModelRecord, resize_to_state
from ..util.errors import ConfigError, ModelFileError
from ..util.files import atomic_write_bytes


def write_wrapper(wrapper: nn.Module, inner: nn.Module, path: str | Path, *, arch: str, settings: dict,
                  what: str, no_onnx: str, dataset: str = "", extra: dict | None = None) -> Path:
    """Write ``wrapper`` (around the zoo model ``inner``) as a model file of kind ``arch``, atomically.

    ``what`` names the model in errors ("a pirated model"); ``no_onnx`` says why ONNX cannot hold it."""
    from safetensors.torch import save

    from ..models import architecture_record

    path = Path(path)
    if path.suffix.lower() == ".onnx":
        raise ModelFileError(f"{what} cannot be exported to ONNX ({no_onnx}); write it as a model file "
                             f"(--out {path.with_suffix('.safetensors')})")
    try:
        record_of_inner = architecture_record(inner)
    except ConfigError:
        raise ModelFileError(f"the model inside ({type(inner).__name__}) is not a zoo model, so {what} cannot be "
                             "written as a model file") from None
    record = ModelRecord(arch=arch, num_classes=int(record_of_inner["num_classes"]),
                         input_shape=tuple(record_of_inner["input_shape"]),  # type: ignore[arg-type]
                         mean=tuple(record_of_inner["mean"]), std=tuple(record_of_inner["std"]), dataset=dataset,
                         created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                         extra={**dict(extra or {}), arch: {**settings, "model": record_of_inner}})
    state = {k: v.detach().cpu().contiguous().clone() for k, v in wrapper.state_dict().items()}
    atomic_write_bytes(path, save(state, metadata={META_KEY: record.to_json()}))
    return path


def inner_model(record: ModelRecord, state: dict[str, torch.Tensor], source: str | Path) -> tuple[dict, nn.Module]:
    """(the wrapper's settings, the zoo model inside with its weights) of a file of kind ``record.arch``."""
    from ..models import build_from_record

    settings = record.extra.get(record.arch)
    try:
        model = build_from_record(dict(settings["model"]))  # type: ignore[index]
    except (KeyError, TypeError, ValueError, ConfigError) as exc:
        raise ModelFileError(f"{source}: the {record.arch} record is missing or has a bad field ({exc})") from None
    inner_state = {k[len("model."):]: v for k, v in state.items() if k.startswith("model.")}
    try:
        resize_to_state(model, inner_state)  # a filter-pruned model keeps its narrower layers
        model.load_state_dict(inner_state, strict=True)
    except RuntimeError as exc:
        raise ModelFileError(f"{source}: the weights of the model inside do not fit its record: "
                             f"{str(exc)[:300]}") from None
    return dict(settings), model  # type: ignore[arg-type]
