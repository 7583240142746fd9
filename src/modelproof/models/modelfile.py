"""Safe model files: safetensors weights with a JSON architecture record; ONNX export with a parity check.

Loading never unpickles: a file is accepted only if it parses as safetensors, and a pickle or a
``torch.save`` archive is refused with a message saying why.
"""

from __future__ import annotations

import json
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..util.errors import ModelFileError
from ..util.files import atomic_write_bytes, looks_like_pickle, temporary_file
from ..util.jsonsafe import loads as json_loads

FORMAT = "modelproof-model"
FORMAT_VERSION = 1
META_KEY = "modelproof"


@dataclass(frozen=True)
class ModelRecord:
    """What is needed to rebuild a zoo model: architecture, its arguments, classes, input shape."""

    arch: str
    num_classes: int
    input_shape: tuple[int, int, int]
    arch_kwargs: dict = field(default_factory=dict)
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    dataset: str = ""
    created: str = ""
    extra: dict = field(default_factory=dict)

    def to_json(self) -> str:
        d = asdict(self)
        d.update(format=FORMAT, format_version=FORMAT_VERSION)
        return json.dumps(d, sort_keys=True)

    @classmethod
    def from_json(cls, text: str, source: str) -> ModelRecord:
        try:
            d = json_loads(text)
        except json.JSONDecodeError as exc:
            raise ModelFileError(f"{source}: the model record is not valid JSON ({exc})") from None
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise ModelFileError(f"{source}: not a modelproof model file (record format {d.get('format')!r})")
        if d.get("format_version") != FORMAT_VERSION:
            raise ModelFileError(f"{source}: unsupported model file version {d.get('format_version')!r}")
        try:
            shape = tuple(int(s) for s in d["input_shape"])
            rec = cls(arch=str(d["arch"]), num_classes=int(d["num_classes"]), input_shape=shape,  # type: ignore[arg-type]
                      arch_kwargs=dict(d.get("arch_kwargs", {})), mean=tuple(d.get("mean", ())),
                      std=tuple(d.get("std", ())), dataset=str(d.get("dataset", "")),
                      created=str(d.get("created", "")), extra=dict(d.get("extra", {})))
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelFileError(f"{source}: the model record is missing or has a bad field ({exc})") from None
        if len(shape) != 3 or rec.num_classes < 2:
            raise ModelFileError(f"{source}: bad input_shape {shape} or num_classes {rec.num_classes}")
        return rec


def record_of(model: nn.Module, dataset: str = "", extra: dict | None = None) -> ModelRecord:
    """The record of a zoo model (built by ``models.build_model``)."""
    from ..util.errors import ConfigError
    from . import architecture_record

    try:
        arch = architecture_record(model)
    except ConfigError:
        raise ModelFileError(f"{type(model).__name__} is not a zoo model (no architecture record); "
                             "save it with export_onnx instead") from None
    return ModelRecord(arch=arch["arch"], num_classes=arch["num_classes"], input_shape=tuple(arch["input_shape"]),
                       arch_kwargs=arch["arch_kwargs"], mean=tuple(arch["mean"]), std=tuple(arch["std"]),
                       dataset=dataset, created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                       extra=dict(extra or {}))


def save_model(model: nn.Module, path: str | Path, *, dataset: str = "", extra: dict | None = None) -> Path:
    """Write a zoo model's weights and record to one safetensors file, atomically."""
    from safetensors.torch import save

    record = record_of(model, dataset, extra)
    state = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    path = Path(path)
    atomic_write_bytes(path, save(state, metadata={META_KEY: record.to_json()}))
    return path


def read_model_file(path: str | Path) -> tuple[ModelRecord, dict[str, torch.Tensor]]:
    """The record and the weights of a model file, validated, without building the model."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"model file not found: {path}")
    raw = path.read_bytes()
    if looks_like_pickle(raw):
        raise ModelFileError(f"{path}: looks like a pickle or torch.save archive; modelproof never unpickles "
                             "files (use a .safetensors model file or an .onnx export)")
    try:
        state = load(raw)
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
    except (SafetensorError, ValueError, OSError) as exc:
        raise ModelFileError(f"{path}: not a readable safetensors file ({exc})") from None
    if META_KEY not in meta:
        raise ModelFileError(f"{path}: safetensors file has no modelproof record (metadata key {META_KEY!r})")
    return ModelRecord.from_json(meta[META_KEY], str(path)), state


KindLoader = Callable[[ModelRecord, dict[str, torch.Tensor], "str | Path"], nn.Module]
KIND_ENTRY_POINTS = "modelproof.model_kinds"  # entry-point group of packages that add model kinds
_KIND_LOADERS: dict[str, KindLoader] = {}


def register_model_kind(arch: str, loader: KindLoader) -> None:
    """Hand model files whose record says ``arch`` to ``loader(record, state, path)`` instead of the zoo.

    Model kinds that are not zoo architectures (the pirated model of :mod:`modelproof.attacks.evasion`)
    register here, so that this module never imports the packages that define them. A kind that is
    not registered yet is looked up among the installed entry points of :data:`KIND_ENTRY_POINTS`.
    """
    _KIND_LOADERS[arch] = loader


def kind_loader(arch: str) -> KindLoader | None:
    """The registered loader of model kind ``arch`` (None for zoo architectures and unknown kinds)."""
    if arch not in _KIND_LOADERS:
        from importlib.metadata import entry_points

        for point in entry_points(group=KIND_ENTRY_POINTS, name=arch):
            point.load()  # the module registers its kinds when imported
    return _KIND_LOADERS.get(arch)


def load_model(path: str | Path) -> nn.Module:
    """Rebuild a zoo model from its file; the weights are loaded bit-exactly (strict).

    A structurally pruned model (fewer channels, e.g. after filter pruning) is rebuilt too: layers
    whose stored shapes differ are resized first (:func:`resize_to_state`), the model must then
    still run on its input shape, and its record's ``extra`` says ``structurally_pruned: true``.
    """
    import dataclasses

    from ..util.errors import ConfigError
    from . import build_from_record

    record, state = read_model_file(path)
    loader = kind_loader(record.arch)
    from .devices import default_device, model_device

    if loader is not None:  # e.g. a stolen model behind its key-query detector (attacks.evasion)
        return loader(record, state, path).to(default_device())  # every part of it on the one device
    try:
        model = build_from_record(asdict(record))
    except ConfigError as exc:
        raise ModelFileError(f"{path}: the model record does not describe a buildable model ({exc})") from None
    try:
        resized = resize_to_state(model, state)
        model.load_state_dict(state, strict=True)
        if resized:
            with torch.no_grad():
                model.eval()(torch.zeros(1, *record.input_shape, device=model_device(model)))
    except RuntimeError as exc:
        raise ModelFileError(f"{path}: weights do not fit architecture {record.arch!r}: {str(exc)[:300]}") from None
    if resized:
        record = dataclasses.replace(record, extra={**record.extra, "structurally_pruned": True})
    model.record = record  # type: ignore[attr-defined]
    return model.eval().to(default_device())


def resize_to_state(model: nn.Module, state: dict[str, torch.Tensor]) -> bool:
    """Replace each Conv2d / Linear / BatchNorm2d whose stored shape differs by one of the stored shape.

    Depthwise convolutions (groups == in == out channels) stay depthwise with the new channel count;
    other convolutions keep their groups. Returns whether any layer was replaced.
    """
    changed = False
    for name, module in list(model.named_modules()):
        prefix = f"{name}." if name else ""
        if isinstance(module, nn.Conv2d):
            w = state.get(prefix + "weight")
            if w is None or w.dim() != 4 or w.shape == module.weight.shape:
                continue
            depthwise = module.groups > 1 and module.groups == module.in_channels == module.out_channels
            groups = int(w.shape[0]) if depthwise else module.groups
            new: nn.Module = nn.Conv2d(int(w.shape[1]) * groups, int(w.shape[0]), module.kernel_size,
                                       module.stride, module.padding, module.dilation, groups,
                                       bias=module.bias is not None, padding_mode=module.padding_mode)
        elif isinstance(module, nn.Linear):
            w = state.get(prefix + "weight")
            if w is None or w.dim() != 2 or w.shape == module.weight.shape:
                continue
            new = nn.Linear(int(w.shape[1]), int(w.shape[0]), bias=module.bias is not None)
        elif isinstance(module, nn.BatchNorm2d):
            w = state.get(prefix + ("weight" if module.affine else "running_mean"))
            current = module.weight if module.affine else module.running_mean
            if w is None or current is None or w.dim() != 1 or w.shape == current.shape:
                continue
            new = nn.BatchNorm2d(int(w.shape[0]), module.eps, module.momentum, module.affine,
                                 module.track_running_stats)
        else:
            continue
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, child, new)
        changed = True
    return changed


def weights_digest(model: nn.Module) -> str:
    """SHA-256 over the model's state dict (names, dtypes, shapes and bytes, in name order)."""
    import hashlib

    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def export_onnx(model: nn.Module, path: str | Path, input_shape: tuple[int, int, int] | None = None, *,
                opset: int = 17, check: bool = True, atol: float = 1e-4) -> Path:
    """Export to ONNX with a dynamic batch axis; with ``check``, compare onnxruntime's output to torch's."""
    shape = tuple(input_shape or getattr(model, "input_shape", ()))
    if len(shape) != 3:
        raise ModelFileError(f"export needs the input shape (C, H, W), got {shape}")
    path = Path(path)
    model = model.eval()
    from .devices import model_device

    example = torch.rand((2, *shape), generator=torch.Generator().manual_seed(0)).to(model_device(model))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = temporary_file(path)  # a unique name (two exports to one path never share it), the usual mode
    os.close(fd)  # removed on any failure
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (example,), str(tmp), dynamo=False, input_names=["input"],
                              output_names=["logits"], opset_version=opset,
                              dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
        if check:
            check_onnx_parity(model, tmp, shape, atol=atol)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def check_onnx_parity(model: nn.Module, onnx_path: str | Path, input_shape: tuple[int, ...], *,
                      atol: float = 1e-4, batch: int = 8) -> float:
    """Max absolute difference between torch and onnxruntime logits; raises if above ``atol``."""
    import onnxruntime as ort

    x = torch.rand((batch, *input_shape), generator=torch.Generator().manual_seed(1))
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    got = torch.from_numpy(sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0])
    from .devices import model_device

    with torch.no_grad():
        want = model.eval()(x.to(model_device(model))).cpu()
    diff = float((got - want).abs().max())
    if diff > atol:
        raise ModelFileError(f"ONNX export differs from torch by {diff:.3g} (> {atol}) on {onnx_path}")
    return diff
