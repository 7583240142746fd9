"""How visible the blind watermark is: SSIM, PSNR and the largest pixel change per key sample, and
a Figure-8-style picture (source | key sample | difference magnified x5).

SSIM is kornia's (the same as training uses); PSNR is 10 log10(1 / MSE) for images in [0, 1]
(an identical pair is capped at 100 dB).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ....util.files import atomic_write_bytes
from .joint import ssim_per_image

PSNR_CAP = 100.0
MAGNIFY = 5.0


def psnr_per_image(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """PSNR in dB of each image pair (N,), capped at 100 dB."""
    mse = (a - b).pow(2).flatten(1).mean(dim=1)
    return torch.where(mse > 0, 10 * torch.log10(1.0 / mse.clamp(min=1e-30)), torch.full_like(mse, PSNR_CAP)).clamp(max=PSNR_CAP)


@torch.no_grad()
def imperceptibility(sources: torch.Tensor, samples: torch.Tensor) -> dict:
    """Mean and minimum SSIM and PSNR between each key sample and its source, and the largest change."""
    ssim, psnr = ssim_per_image(sources, samples), psnr_per_image(sources, samples)
    change = (samples - sources).abs().flatten(1)
    return {"ssim_mean": float(ssim.mean()), "ssim_min": float(ssim.min()),
            "psnr_mean": float(psnr.mean()), "psnr_min": float(psnr.min()),
            "max_pixel_change": float(change.max()), "mean_pixel_change": float(change.mean())}


def grid_png(sources: torch.Tensor, samples: torch.Tensor, path: str | Path, rows: int = 8, scale: int = 4) -> Path:
    """Write a PNG with one row per pair: source, key sample, |difference| x5 (clipped), 2-pixel gaps."""
    from io import BytesIO

    from PIL import Image

    n = min(rows, len(sources))
    diff = ((samples[:n] - sources[:n]).abs() * MAGNIFY).clamp(0, 1)
    c, h, w = sources.shape[1:]
    gap = 2
    board = torch.ones(c, n * (h + gap) - gap, 3 * (w + gap) - gap)
    for i in range(n):
        for j, img in enumerate((sources[i], samples[i], diff[i])):
            board[:, i * (h + gap):i * (h + gap) + h, j * (w + gap):j * (w + gap) + w] = img
    array = (board.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    image = Image.fromarray(array[..., 0] if c == 1 else array)
    image = image.resize((image.width * scale, image.height * scale), Image.Resampling.NEAREST)
    buffer = BytesIO()
    image.save(buffer, format="PNG")
    path = Path(path)
    atomic_write_bytes(path, buffer.getvalue(), secret=True)  # key samples: as secret as the key
    return path
