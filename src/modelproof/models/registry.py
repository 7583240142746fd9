"""The zoo's table of architectures and ``build_model``: validated, seeded, rebuildable construction.

``build_model`` checks every argument with a message naming the bad value, then builds the model
under a forked RNG seeded with ``seed`` (the caller's global RNG is left untouched), and stamps it
with ``arch`` (canonical name) and ``arch_kwargs`` (the architecture's keyword arguments, defaults
filled in, JSON-serialisable), so that ``build_model(model.arch, model.num_classes,
model.input_shape, **model.arch_kwargs)`` rebuilds the same architecture.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import torch
from torch import nn

from ..util.checks import check_int
from ..util.errors import ConfigError
from . import dpn, googlenet, mobilenet, preact, resnet, small, vgg
from .base import ZooModel
from .layers import require_min_side


@dataclass(frozen=True)
class ArchSpec:
    """One architecture: its factory, a one-line description, its keyword defaults, its minimum side."""

    factory: Callable[..., ZooModel]
    description: str
    defaults: Mapping[str, int | float] = field(default_factory=dict)
    min_side: int = 1


_SPECS: dict[str, ArchSpec] = {
    "mlp": ArchSpec(small.MLP, "Keras mnist_mlp: two dense layers of 512 ReLU units with dropout 0.2",
                    {"hidden": 512, "dropout": 0.2}, small.MIN_SIDE["mlp"]),
    "cnn": ArchSpec(small.CNN, "Keras mnist_cnn: conv 32 and 64 (3x3), max pool, dense 128, dropout",
                    {"hidden": 128, "conv_dropout": 0.25, "dense_dropout": 0.5}, small.MIN_SIDE["cnn"]),
    "cnn-bn": ArchSpec(small.CNNBN, "small CNN with BatchNorm: conv 16 and 32 maps (3x3, padded), BatchNorm, "
                       "max pool", {"width": 16}, small.MIN_SIDE["cnn-bn"]),
    "irnn": ArchSpec(small.IRNN, "IRNN (Le et al. 2015): 100-unit ReLU RNN over pixel rows, identity "
                     "recurrent init", {"hidden": 100}, small.MIN_SIDE["irnn"]),
    "lenet1": ArchSpec(small.LeNet1, "LeNet-1: conv 4 and 12 maps (5x5), tanh, average pooling",
                       {}, small.MIN_SIDE["lenet1"]),
    "lenet3": ArchSpec(small.LeNet3, "LeNet-3 (LeNet-4 family): conv 6 and 16 maps (5x5), dense 120, ReLU",
                       {}, small.MIN_SIDE["lenet3"]),
    "lenet5": ArchSpec(small.LeNet5, "LeNet-5: conv 6 and 16 maps (5x5), dense 120 and 84, ReLU",
                       {}, small.MIN_SIDE["lenet5"]),
    **{f"vgg{d}": ArchSpec(partial(vgg.VGG, depth=d), f"VGG-{d} with BatchNorm, CIFAR-style, global "
                           "average pool, 512 features", {}, vgg.MIN_SIDE) for d in (11, 13, 16, 19)},
    "resnet18": ArchSpec(resnet.resnet18, "ResNet-18, CIFAR-style (3x3 stride-1 stem), BasicBlocks 2-2-2-2",
                         {}, resnet.MIN_SIDE),
    "resnet34": ArchSpec(resnet.resnet34, "ResNet-34, CIFAR-style (3x3 stride-1 stem), BasicBlocks 3-4-6-3",
                         {}, resnet.MIN_SIDE),
    "resnet101": ArchSpec(resnet.resnet101, "ResNet-101, CIFAR-style (3x3 stride-1 stem), Bottlenecks "
                          "3-4-23-3", {}, resnet.MIN_SIDE),
    "resnet152": ArchSpec(resnet.resnet152, "ResNet-152, CIFAR-style (3x3 stride-1 stem), Bottlenecks "
                          "3-8-36-3", {}, resnet.MIN_SIDE),
    "resnet20": ArchSpec(resnet.resnet20, "ResNet-20 (He et al. 2016 CIFAR net): 16/32/64 channels, 3 blocks "
                         "each", {}, resnet.MIN_SIDE),
    "preact-resnet18": ArchSpec(preact.preact_resnet18, "Pre-activation ResNet-18, CIFAR-style, blocks 2-2-2-2",
                                {}, preact.MIN_SIDE),
    "preact-resnet34": ArchSpec(preact.preact_resnet34, "Pre-activation ResNet-34, CIFAR-style, blocks 3-4-6-3",
                                {}, preact.MIN_SIDE),
    "wrn-22-4": ArchSpec(partial(preact.wide_resnet, depth=22, widen=4), "Wide ResNet WRN-22-4: 64/128/256 "
                         "channels, 3 pre-activation blocks each", {"dropout": 0.0}, preact.MIN_SIDE),
    "mobilenetv2": ArchSpec(mobilenet.MobileNetV2, "MobileNetV2, CIFAR-style strides (stride-1 stem and "
                            "second stage)", {}, mobilenet.MIN_SIDE),
    "googlenet": ArchSpec(googlenet.GoogLeNet, "GoogLeNet, CIFAR-style (3x3 stem to 192, inception 3a-5b), "
                          "global average pool, 1024 features", {}, googlenet.MIN_SIDE),
    "dpn26": ArchSpec(dpn.dpn26, "DPN-26, CIFAR-style dual path network: blocks 2-2-2-2, grouped 3x3, "
                      "2432 features", {}, dpn.MIN_SIDE),
}

ARCHITECTURES: tuple[str, ...] = tuple(_SPECS)


def _canonical(name: object) -> str:
    """The registered spelling of ``name`` (case-insensitive, ``_`` read as ``-``), or ConfigError."""
    key = name.strip().lower().replace("_", "-") if isinstance(name, str) else None
    if key not in _SPECS:
        raise ConfigError(f"unknown architecture {name!r}; expected one of: {', '.join(ARCHITECTURES)}")
    return key


def _check_input_shape(input_shape: object) -> tuple[int, int, int]:
    """(C, H, W) with C in (1, 3) and positive H, W."""
    ok = isinstance(input_shape, Sequence) and not isinstance(input_shape, str) and len(input_shape) == 3 \
        and all(isinstance(s, int) and not isinstance(s, bool) for s in input_shape)
    if not ok or min(input_shape) < 1:  # type: ignore[arg-type]
        raise ConfigError(f"input_shape must be (channels, height, width) of positive integers, got {input_shape!r}")
    shape = tuple(int(s) for s in input_shape)  # type: ignore[union-attr]
    if shape[0] not in (1, 3):
        raise ConfigError(f"input_shape {shape}: channels must be 1 (grey) or 3 (RGB), got {shape[0]}")
    return shape  # type: ignore[return-value]


def _check_stats(what: str, values: object, channels: int, positive: bool) -> list[float] | None:
    """None, or one finite number per channel (strictly positive for ``std``)."""
    if values is None:
        return None
    try:
        out = [float(v) for v in values]  # type: ignore[union-attr]
    except (TypeError, ValueError):
        raise ConfigError(f"{what} must be a sequence of {channels} numbers, got {values!r}") from None
    if len(out) != channels or not all(math.isfinite(v) for v in out) or (positive and min(out) <= 0):
        need = "positive " if positive else "finite "
        raise ConfigError(f"{what} must hold {channels} {need}number(s), one per input channel, got {values!r}")
    return out


def _check_kwargs(arch: str, spec: ArchSpec, kwargs: Mapping[str, object]) -> dict[str, int | float]:
    """The architecture's keyword arguments with defaults filled in, type-checked against the defaults."""
    unknown = sorted(set(kwargs) - set(spec.defaults))
    if unknown:
        accepted = ", ".join(spec.defaults) or "none"
        raise ConfigError(f"unknown keyword argument(s) {', '.join(map(repr, unknown))} for architecture "
                          f"{arch!r}; accepted: {accepted}")
    out: dict[str, int | float] = dict(spec.defaults)
    for key, value in kwargs.items():
        default = spec.defaults[key]
        if isinstance(default, int):
            out[key] = check_int(f"{arch}: {key}", value, 1)
        elif isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ConfigError(f"{arch}: {key} must be a number, got {value!r}")
        else:
            out[key] = float(value)
    return out


def build_model(name: str, num_classes: int, input_shape: Sequence[int], *, seed: int = 0,
                mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                **kwargs: Any) -> ZooModel:
    """Build zoo architecture ``name`` for ``num_classes`` classes and images of ``input_shape`` (C, H, W).

    Weights are a pure function of ``seed``; the global RNG state is left unchanged. ``mean`` and
    ``std`` (one per channel) set the model's internal normalisation of its [0,1] inputs. Extra
    keyword arguments are architecture options (see ``ArchSpec.defaults``). Raises ConfigError for
    an unknown name, an unusable shape, class count, statistic or option.
    """
    arch = _canonical(name)
    spec = _SPECS[arch]
    num_classes = check_int("num_classes", num_classes, 2)
    shape = _check_input_shape(input_shape)
    require_min_side(arch, shape, spec.min_side)
    mean_ = _check_stats("mean", mean, shape[0], positive=False)
    std_ = _check_stats("std", std, shape[0], positive=True)
    seed = check_int("seed", seed, 0)
    if seed >= 2**63:
        raise ConfigError(f"seed must be below 2**63, got {seed}")
    options = _check_kwargs(arch, spec, kwargs)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = spec.factory(shape, num_classes, mean_, std_, **options)
    model.arch = arch
    model.arch_kwargs = dict(options)
    from .devices import default_device

    return model.to(default_device())


def describe(name: str) -> str:
    """A one-line description of architecture ``name``."""
    return _SPECS[_canonical(name)].description


def min_side(name: str) -> int:
    """The smallest square input side architecture ``name`` accepts."""
    return _SPECS[_canonical(name)].min_side


def architecture_record(model: nn.Module) -> dict[str, Any]:
    """A JSON-serialisable record from which :func:`build_from_record` rebuilds ``model``'s architecture."""
    arch = getattr(model, "arch", None)
    if not isinstance(model, ZooModel) or not isinstance(arch, str):
        raise ConfigError(f"{type(model).__name__} was not built by build_model, so it has no architecture record")
    return {
        "arch": arch,
        "num_classes": int(model.num_classes),
        "input_shape": list(model.input_shape),
        "arch_kwargs": dict(getattr(model, "arch_kwargs", {})),
        "mean": model.normalize.mean.flatten().tolist(),
        "std": model.normalize.std.flatten().tolist(),
    }


def build_from_record(record: Mapping[str, Any], *, seed: int = 0) -> ZooModel:
    """Rebuild the architecture described by an :func:`architecture_record` (fresh weights from ``seed``)."""
    missing = [k for k in ("arch", "num_classes", "input_shape") if k not in record]
    if missing:
        raise ConfigError(f"architecture record lacks {', '.join(missing)}; got keys {sorted(record)}")
    kwargs = record.get("arch_kwargs") or {}
    if not isinstance(kwargs, Mapping):
        raise ConfigError(f"architecture record: arch_kwargs must be a mapping, got {kwargs!r}")
    shape = record["input_shape"]
    return build_model(record["arch"], record["num_classes"],
                       tuple(shape) if isinstance(shape, list) else shape,
                       seed=seed, mean=record.get("mean"), std=record.get("std"), **dict(kwargs))
