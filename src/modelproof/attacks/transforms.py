"""Input transforms a pirate puts in front of a stolen model, as pure functions on [0, 1] image batches.

Each transform maps a float batch ``[N, C, H, W]`` in [0, 1] to one of the same shape, dtype and
device, in [0, 1]. A transform is described by a JSON-friendly step ``{"transform": name, ...}``
(:func:`check_step` validates one; :func:`apply_steps` applies a list in order), which is what a
preprocessed model file stores.

- ``jpeg``: each image encoded as a JPEG at ``quality`` (1-95) and decoded again with Pillow, as
  WRT's ``JPEGCompression`` (pixels rounded to 8 bits first; grey images as mode ``L``);
- ``gaussian``: convolution with a normalised Gaussian of standard deviation ``std`` pixels, kernel
  side ``ceil(6 std + 1)`` made odd (WRT's ``GaussianSmoothingPreprocessor``: truncated at 3 std);
- ``mean`` / ``median``: the mean or median of each ``size`` x ``size`` window (odd or even sides; an
  even window reaches one pixel further right and down, as scipy's ``median_filter`` on a 2 x 2);
- ``bits``: bit-depth reduction, ``round(x (2^b - 1)) / (2^b - 1)`` (Xu et al. 2018, feature squeezing);
- ``quantize``: [0, 1] cut into ``levels`` equal bins, each value replaced by its bin's centre (WRT's
  ``InputQuantization``; WRT leaves the top bin alone by an off-by-one, here every bin is mapped).

Windows at the border see the border pixels repeated (replicate padding): WRT pads with zeros, which
darkens the border of a light image; on MNIST-like images with a black background both agree.
"""

from __future__ import annotations

import io
import math

import numpy as np
import torch
import torch.nn.functional as F

from ..util.errors import ConfigError

TRANSFORMS = ("jpeg", "gaussian", "mean", "median", "bits", "quantize")
FLAT = ("jpeg", "bits", "quantize")  # piecewise constant: no useful gradient
_ARGS = {"jpeg": "quality", "gaussian": "std", "mean": "size", "median": "size", "bits": "bits",
         "quantize": "levels"}


def check_step(step: object) -> dict:
    """A validated copy of one transform step, e.g. ``{"transform": "jpeg", "quality": 95}``; else ConfigError."""
    if not isinstance(step, dict) or step.get("transform") not in TRANSFORMS:
        raise ConfigError(f"a transform step must be a mapping with transform one of {', '.join(TRANSFORMS)}, "
                          f"got {step!r}")
    name = step["transform"]
    arg = _ARGS[name]
    extra = sorted(set(step) - {"transform", arg})
    if extra or arg not in step:
        raise ConfigError(f"transform {name!r} takes exactly one parameter {arg!r}, got {step!r}")
    value = step[arg]
    number = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(float(value))
    if name == "gaussian":
        if not number or not 0.0 < float(value) <= 10.0:
            raise ConfigError(f"gaussian smoothing std must be a number in (0, 10] pixels, got {value!r}")
        return {"transform": name, arg: float(value)}
    low, high = {"jpeg": (1, 95), "mean": (2, 15), "median": (2, 15), "bits": (1, 8), "quantize": (2, 256)}[name]
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ConfigError(f"{name} {arg} must be an integer in [{low}, {high}], got {value!r}")
    return {"transform": name, arg: int(value)}


def apply_steps(images: torch.Tensor, steps: list[dict], *, straight_through: bool = False) -> torch.Tensor:
    """``images`` passed through every (validated) step in order.

    With ``straight_through`` the steps without a useful gradient (JPEG, bit depth, quantisation) pass
    the gradient through unchanged (``x + (t(x) - x).detach()``, BPDA), so that a gradient attack can
    still run on the preprocessed model; the smoothing filters keep their own gradient.
    """
    for step in steps:
        out = apply_step(images, step)
        if straight_through and step["transform"] in FLAT and images.requires_grad:
            out = images + (out - images).detach()
        images = out
    return images


def apply_step(images: torch.Tensor, step: dict) -> torch.Tensor:
    """One transform step on a [N, C, H, W] batch in [0, 1]."""
    name = step["transform"]
    if name == "jpeg":
        return jpeg(images, step["quality"])
    if name == "gaussian":
        return gaussian_blur(images, step["std"])
    if name == "mean":
        return window_filter(images, step["size"], "mean")
    if name == "median":
        return window_filter(images, step["size"], "median")
    if name == "bits":
        return reduce_bits(images, step["bits"])
    return quantize_levels(images, step["levels"])


def jpeg(images: torch.Tensor, quality: int) -> torch.Tensor:
    """Each image JPEG-encoded at ``quality`` and decoded (Pillow); 1 channel as ``L``, 3 as ``RGB``."""
    from PIL import Image

    channels = images.shape[1]
    if channels not in (1, 3):
        raise ConfigError(f"JPEG compression needs 1 or 3 channels, got {channels}")
    pixels = (images.detach().clamp(0, 1) * 255.0).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    out = np.empty_like(pixels)
    for i, img in enumerate(pixels):
        buffer = io.BytesIO()
        Image.fromarray(img[..., 0] if channels == 1 else img, mode="L" if channels == 1 else "RGB").save(
            buffer, format="JPEG", quality=int(quality))
        buffer.seek(0)
        decoded = np.asarray(Image.open(buffer).convert("L" if channels == 1 else "RGB"))
        out[i] = decoded[..., None] if channels == 1 else decoded
    return torch.from_numpy(out).permute(0, 3, 1, 2).to(images.device, torch.float32) / 255.0


def gaussian_kernel(std: float, device: torch.device | None = None) -> torch.Tensor:
    """The normalised 1-D Gaussian of ``std`` pixels, side ``ceil(6 std + 1)`` made odd."""
    side = math.ceil(6 * std + 1)
    side += 1 - side % 2
    x = torch.arange(side, dtype=torch.float32, device=device) - (side - 1) / 2
    kernel = torch.exp(-0.5 * (x / std) ** 2)
    return kernel / kernel.sum()


def gaussian_blur(images: torch.Tensor, std: float) -> torch.Tensor:
    """Separable Gaussian smoothing of every channel (replicate padding)."""
    kernel = gaussian_kernel(std, images.device).to(images.dtype)
    pad = (len(kernel) - 1) // 2
    c = images.shape[1]
    x = F.pad(images, (pad, pad, pad, pad), mode="replicate")
    x = F.conv2d(x, kernel.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    x = F.conv2d(x, kernel.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)
    return x.clamp(0.0, 1.0)


def window_filter(images: torch.Tensor, size: int, reduce: str) -> torch.Tensor:
    """The ``reduce`` ("mean" or "median") of each ``size`` x ``size`` window, same output size."""
    n, c, h, w = images.shape
    before, after = (size - 1) // 2, size // 2
    x = F.pad(images, (before, after, before, after), mode="replicate")
    windows = F.unfold(x, kernel_size=size).view(n, c, size * size, h * w)
    out = windows.mean(dim=2) if reduce == "mean" else windows.median(dim=2).values
    return out.view(n, c, h, w)


def reduce_bits(images: torch.Tensor, bits: int) -> torch.Tensor:
    """Bit-depth reduction to ``bits`` bits per value (2^bits levels including 0 and 1)."""
    top = float(2 ** int(bits) - 1)
    return torch.round(images * top) / top


def quantize_levels(images: torch.Tensor, levels: int) -> torch.Tensor:
    """Each value replaced by the centre of its bin among ``levels`` equal bins of [0, 1]."""
    index = torch.floor(images * levels).clamp(0, levels - 1)
    return (index + 0.5) / levels
