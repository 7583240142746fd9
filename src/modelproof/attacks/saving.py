"""Writing an attacked model: a modelproof model file when a zoo record still describes it, else ONNX.

Fine-tuned, weight-pruned, weight-quantised, overwritten and extracted models keep their zoo
architecture and save as ``.safetensors`` model files; a filter-pruned model does too (``load_model``
rebuilds the narrower layers from the stored shapes). SVD-compressed models have layers no zoo
record describes, so they are written as ONNX (``.onnx``). torch's dynamic-quantised modules export
to neither format: :func:`save_attacked` says so and names the weight-only mode that does. A pirated
model and a preprocessed model (a zoo model behind its detector or its input transforms) are model
files of their own kinds, never ONNX. :func:`output_suffixes` tells, before an attack runs, which
of the two formats its model will fit.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from ..util.errors import ModelFileError
from ..models.modelfile import export_onnx, save_model
from .base import Attack
from .chain import Chain
from .quantization import is_dynamic_quantised

BOTH = (".safetensors", ".onnx")


def output_suffixes(attack: Attack) -> tuple[str, ...]:
    """The file types (``.safetensors``, ``.onnx``) that can hold ``attack``'s model, before it runs."""
    if isinstance(attack, Chain):  # every step must fit
        return tuple(x for x in BOTH if all(x in output_suffixes(s) for s in attack.steps))
    if attack.name == "svd":
        return (".onnx",)
    if attack.name == "quantize" and getattr(attack, "mode", None) == "dynamic":
        return ()
    if attack.kind in ("evasion", "preprocessing"):
        return (".safetensors",)
    return BOTH


def is_zoo_savable(model: nn.Module) -> bool:
    """Whether a zoo record rebuilds ``model``: it has an ``arch`` and the zoo model's parameter names."""
    from ..models import build_model

    arch = getattr(model, "arch", None)
    if not isinstance(arch, str) or is_dynamic_quantised(model):
        return False
    fresh = build_model(arch, int(model.num_classes), tuple(model.input_shape),  # type: ignore[arg-type]
                        **dict(getattr(model, "arch_kwargs", {})))
    return set(fresh.state_dict()) == set(model.state_dict())


def save_attacked(model: nn.Module, path: str | Path, *, attack: str, dataset: str = "",
                  extra: dict | None = None) -> Path:
    """Write ``model`` to ``path``: ONNX when it ends in ``.onnx``, else a modelproof model file.

    Raises ModelFileError, naming the way out, when the model cannot be written in that format.
    """
    path = Path(path)
    if is_wrapped(model):
        return save_file(model, path, dataset=dataset, extra=extra)
    if is_dynamic_quantised(model):
        raise ModelFileError(f"the {attack} attack's model holds torch dynamic-quantised layers, which neither a "
                             "model file nor ONNX can store; use --param mode=weights for a savable int8 model")
    if path.suffix.lower() == ".onnx":
        return export_onnx(model, path, tuple(getattr(model, "input_shape", ())) or None)
    if not is_zoo_savable(model):
        raise ModelFileError(f"the {attack} attack's model has layers no zoo record describes; write it as ONNX "
                             f"(--out {path.with_suffix('.onnx')})")
    return save_model(model, path, dataset=dataset, extra=extra)


def is_wrapped(model: nn.Module) -> bool:
    """Whether ``model`` is a zoo model behind a detector (pirate) or input transforms (preprocessed)."""
    from .evasion.pirate import PiratedModel
    from .preprocessing import PreprocessedModel

    return isinstance(model, (PiratedModel, PreprocessedModel))


def save_file(model: nn.Module, path: str | Path, *, dataset: str = "", extra: dict | None = None) -> Path:
    """Write ``model`` as a modelproof model file of its kind: pirated, preprocessed or a zoo model."""
    from .evasion.pirate import PiratedModel
    from .preprocessing import PreprocessedModel, save_preprocessed

    if isinstance(model, PiratedModel):
        from .evasion.saving import save_pirate

        return save_pirate(model, path, dataset=dataset, extra=extra)
    if isinstance(model, PreprocessedModel):
        return save_preprocessed(model, path, dataset=dataset, extra=extra)
    return save_model(model, path, dataset=dataset, extra=extra)
