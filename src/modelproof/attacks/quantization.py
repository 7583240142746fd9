"""Quantisation to int8, as deployed models often are.

``mode="dynamic"`` (default): torch's dynamic quantisation of every Linear
(``torch.ao.quantization.quantize_dynamic``, int8 weights per tensor, activations quantised on the
fly at inference) and int8 weights for every Conv2d. Eager dynamic quantisation has no convolution
kernel, so conv weights are quantised and dequantised per output channel (symmetric, 127 levels a
side): exactly the values a deployed int8 convolution holds. The result runs in torch and answers
labels, but torch cannot export ``quantized::linear_dynamic`` to ONNX nor save it as a zoo model file.

``mode="weights"``: weight-only int8: every Conv2d and Linear weight is quantised and dequantised per
output channel; activations stay float. The result is an ordinary float model (the zoo architecture
with int8-representable weights) that saves as a model file and exports to ONNX.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

from ..data.splits import Dataset
from .base import Attack, AttackLog, Param, check_choice, prunable_layers

MODES = ("dynamic", "weights")


def int8_per_channel(weight: torch.Tensor) -> torch.Tensor:
    """Symmetric int8 quantise-dequantise of ``weight`` with one scale per output channel (dim 0)."""
    flat = weight.detach().reshape(weight.shape[0], -1)
    scale = flat.abs().amax(dim=1) / 127.0
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    q = torch.clamp(torch.round(flat / scale[:, None]), -127, 127)
    return (q * scale[:, None]).reshape(weight.shape).to(weight.dtype)


def fake_quantise(model: nn.Module, types: tuple[type[nn.Module], ...]) -> int:
    """Replace the weights of every layer of ``types`` by their int8 values, in place; returns the count."""
    layers = prunable_layers(model, include=types)
    with torch.no_grad():
        for _, m in layers:
            m.weight.copy_(int8_per_channel(m.weight))
    return len(layers)


def dynamic_int8(model: nn.Module) -> nn.Module:
    """``quantize_dynamic`` of every Linear to int8, in place (torch's deprecation warnings silenced)."""
    engines = torch.backends.quantized.supported_engines
    if torch.backends.quantized.engine == "none":
        torch.backends.quantized.engine = next(e for e in ("x86", "fbgemm", "qnnpack") if e in engines)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8, inplace=True)


def is_dynamic_quantised(model: nn.Module) -> bool:
    """Whether ``model`` holds torch dynamic-quantised modules (not savable as a model file or ONNX)."""
    return any(type(m).__module__.startswith("torch.ao.nn.quantized") for m in model.modules())


class Quantisation(Attack):
    """int8 quantisation: dynamic (Linear) plus int8 conv weights, or weight-only int8 everywhere."""

    name = "quantize"
    description = "int8 quantisation: torch dynamic int8 Linear + int8 conv weights, or weight-only int8"
    PARAMS = (Param("mode", "str", "'dynamic' (torch quantize_dynamic on Linear) or 'weights' (weight-only, "
                                   "savable and ONNX-exportable)"),)

    def __init__(self, mode: str = "dynamic") -> None:
        self.mode = check_choice("mode", mode, MODES)

    def _run(self, model: nn.Module, data: Dataset, seed: int, log: AttackLog) -> nn.Module:
        if self.mode == "weights":
            n = fake_quantise(model, (nn.Conv2d, nn.Linear))
            log.details.update(int8_weight_layers=n)
            return model
        n_conv = fake_quantise(model, (nn.Conv2d,))
        n_linear = len(prunable_layers(model, include=(nn.Linear,)))
        out = dynamic_int8(model.cpu())  # torch's dynamic int8 kernels exist on the CPU only
        log.details.update(int8_conv_layers=n_conv, dynamic_int8_linear_layers=n_linear)
        return out
