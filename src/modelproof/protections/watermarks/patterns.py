"""Trigger patterns as pure functions on tensors, all randomness drawn from the owner's secret.

- :func:`secret_generator`: a ``torch.Generator`` derived from (secret, purpose) by SHA-256, so
  the same secret regenerates the same key and different purposes draw independent streams.
- :func:`white_blocks`: Zhang et al.'s content trigger as the piracy paper describes it (white round
  blocks, 4 of radius 3 on 28x28 MNIST), at random positions in every image.
- :func:`stamp_logo`: a user's logo stamped at one fixed, secret-drawn position.
- :func:`noise_pattern` and :func:`add_pattern`: one Gaussian field per secret (white, or smooth
  from a coarse grid), added with a strength.
- :func:`abstract_images`: Adi et al.'s abstract images, procedurally generated (smooth random
  colour fields overlaid with random ellipses and strokes); no downloads.
- :func:`photo_patches`: crops of scikit-learn's two bundled photographs, "unrelated" natural images.

Every function returns float32 NCHW images in [0, 1].
"""

from __future__ import annotations

import hashlib
import math

import torch
import torch.nn.functional as F

from ...util.errors import ConfigError


def check_secret(secret: object) -> int | str:
    """The secret as given if it is an int or a non-empty string, else ConfigError."""
    if isinstance(secret, bool) or not isinstance(secret, (int, str)) or (isinstance(secret, str) and not secret):
        raise ConfigError(f"secret must be an integer or a non-empty string, got {secret!r}")
    return secret


def secret_generator(secret: int | str, purpose: str) -> torch.Generator:
    """A CPU generator seeded by SHA-256 of (secret, purpose); independent streams per purpose.

    The secret is read as text, so 42 and "42" are one secret and the command line (text) and the
    Python API (int or text) agree.
    """
    digest = hashlib.sha256(f"modelproof-secret/{check_secret(secret)}/{purpose}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & (2 ** 63 - 1))


def _grid(h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    return ys, xs


def white_blocks(images: torch.Tensor, gen: torch.Generator, *, count: int = 4, radius: int = 3) -> torch.Tensor:
    """Copies of ``images`` with ``count`` white discs of ``radius`` pixels each, centres drawn per image
    so that every disc lies inside the image."""
    n, c, h, w = images.shape
    if 2 * radius + 1 > min(h, w):
        raise ConfigError(f"blocks of radius {radius} do not fit in {h}x{w} images (need 2*radius+1 <= {min(h, w)})")
    ys, xs = _grid(h, w)
    cy = torch.randint(radius, h - radius, (n, count), generator=gen).float()
    cx = torch.randint(radius, w - radius, (n, count), generator=gen).float()
    dist2 = (ys[None, None] - cy[..., None, None]) ** 2 + (xs[None, None] - cx[..., None, None]) ** 2
    mask = (dist2 <= radius ** 2 + 0.5).any(dim=1, keepdim=True)  # (n, 1, h, w)
    return torch.where(mask, torch.ones(()), images).contiguous()


def stamp_logo(images: torch.Tensor, logo: torch.Tensor, alpha: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Copies of ``images`` with ``logo`` (C, h, w) blended in by ``alpha`` (1, h, w) at one position
    drawn from ``gen`` (the same for every image)."""
    _, c, h, w = images.shape
    lh, lw = logo.shape[-2:]
    if lh > h or lw > w:
        raise ConfigError(f"the logo ({lh}x{lw}) is larger than the images ({h}x{w})")
    top = int(torch.randint(0, h - lh + 1, (1,), generator=gen))
    left = int(torch.randint(0, w - lw + 1, (1,), generator=gen))
    out = images.clone()
    region = out[:, :, top:top + lh, left:left + lw]
    out[:, :, top:top + lh, left:left + lw] = alpha * logo.expand(c, lh, lw) + (1 - alpha) * region
    return out.clamp_(0.0, 1.0)


def load_logo(path: str, channels: int, side: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A logo image file as (logo (C, s, s), alpha (1, s, s)) resized to ``side`` pixels.

    Transparency comes from the file's alpha channel; without one, dark pixels (below 0.1 in every
    channel) are transparent, so a light logo on black stamps only the logo.
    """
    import numpy as np
    from PIL import Image

    try:
        with Image.open(path) as im:
            rgba = torch.from_numpy(np.array(im.convert("RGBA"), dtype=np.float32) / 255.0).permute(2, 0, 1)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read logo image {path!r}: {exc}") from None
    rgb, alpha = rgba[:3], rgba[3:]
    if bool((alpha >= 1).all()):
        alpha = (rgb.max(dim=0, keepdim=True).values >= 0.1).float()
    logo = rgb if channels == 3 else (0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2])[None]
    both = F.interpolate(torch.cat([logo, alpha])[None], size=(side, side), mode="bilinear",
                         align_corners=False, antialias=True)[0].clamp(0, 1)
    return both[:-1].contiguous(), both[-1:].contiguous()


def noise_pattern(shape: tuple[int, int, int], gen: torch.Generator, cells: int | None = None) -> torch.Tensor:
    """One Gaussian field of ``shape`` (C, H, W) with unit standard deviation: the secret's pattern.

    ``cells=None``: white noise, one independent N(0, 1) value per pixel. ``cells=k``: a smooth field,
    a k x k grid of N(0, 1) values per channel upsampled bicubically and rescaled to unit deviation
    (its structure survives the pooling of small convolutional networks).
    """
    if cells is None:
        return torch.randn(shape, generator=gen)
    c, h, w = shape
    field = F.interpolate(torch.randn(1, c, cells, cells, generator=gen), size=(h, w), mode="bicubic",
                          align_corners=False)[0]
    return field / field.std().clamp(min=1e-6)


def add_pattern(images: torch.Tensor, pattern: torch.Tensor, strength: float) -> torch.Tensor:
    """``clip(x + strength * pattern, 0, 1)``: the noise trigger (Zhang et al.) and key sample (Zhong et al.)."""
    return (images + strength * pattern).clamp(0.0, 1.0)


def abstract_images(n: int, shape: tuple[int, int, int], gen: torch.Generator) -> torch.Tensor:
    """``n`` abstract images: a smooth random field (2x2 to 5x5 cells, bicubic) in each channel, then
    2-5 random filled ellipses and strokes of random colours painted over it."""
    c, h, w = shape
    ys, xs = _grid(h, w)
    side = float(min(h, w))
    out = torch.empty(n, c, h, w)
    for i in range(n):
        cells = int(torch.randint(2, 6, (1,), generator=gen))
        field = torch.rand(1, c, cells, cells, generator=gen)
        img = F.interpolate(field, size=(h, w), mode="bicubic", align_corners=False)[0].clamp(0, 1)
        for _ in range(int(torch.randint(2, 6, (1,), generator=gen))):
            u = torch.rand(7, generator=gen)
            colour = torch.rand(c, 1, 1, generator=gen)
            cy, cx = u[0] * (h - 1), u[1] * (w - 1)
            if u[6] < 0.5:  # ellipse with random radii and angle
                ry, rx, ang = side * (0.08 + 0.3 * u[2]), side * (0.08 + 0.3 * u[3]), math.pi * u[4]
                dy, dx = ys - cy, xs - cx
                a = (dx * torch.cos(ang) + dy * torch.sin(ang)) / rx
                b = (-dx * torch.sin(ang) + dy * torch.cos(ang)) / ry
                mask = a ** 2 + b ** 2 <= 1
            else:  # stroke: a thick segment from (cy, cx) to a second random point
                ey, ex = u[2] * (h - 1), u[3] * (w - 1)
                thick = side * (0.04 + 0.08 * u[4])
                vy, vx = ey - cy, ex - cx
                t = (((ys - cy) * vy + (xs - cx) * vx) / (vy ** 2 + vx ** 2 + 1e-6)).clamp(0, 1)
                mask = (ys - cy - t * vy) ** 2 + (xs - cx - t * vx) ** 2 <= thick ** 2
            img = torch.where(mask[None], colour, img)
        out[i] = img
    return out


def photo_patches(n: int, shape: tuple[int, int, int], gen: torch.Generator) -> torch.Tensor:
    """``n`` random square crops (1/8 to 1/2 of the short side) of scikit-learn's two bundled
    photographs (china.jpg, flower.jpg), resized to ``shape``; grey (ITU-R 601 luma) for one channel."""
    from sklearn.datasets import load_sample_images

    photos = [torch.from_numpy(im.copy()).permute(2, 0, 1).float() / 255.0 for im in load_sample_images().images]
    c, h, w = shape
    out = torch.empty(n, c, h, w)
    for i in range(n):
        photo = photos[int(torch.randint(0, len(photos), (1,), generator=gen))]
        ph, pw = photo.shape[-2:]
        s = int(torch.randint(min(ph, pw) // 8, min(ph, pw) // 2 + 1, (1,), generator=gen))
        top = int(torch.randint(0, ph - s + 1, (1,), generator=gen))
        left = int(torch.randint(0, pw - s + 1, (1,), generator=gen))
        crop = photo[:, top:top + s, left:left + s]
        if c == 1:
            crop = (0.299 * crop[0] + 0.587 * crop[1] + 0.114 * crop[2])[None]
        out[i] = F.interpolate(crop[None], size=(h, w), mode="bilinear", align_corners=False, antialias=True)[0]
    return out.clamp_(0.0, 1.0)


def match_channels(images: torch.Tensor, channels: int) -> torch.Tensor:
    """Grey -> RGB by repetition, RGB -> grey by luma; unchanged when the counts agree."""
    if images.shape[1] == channels:
        return images
    if channels == 3 and images.shape[1] == 1:
        return images.repeat(1, 3, 1, 1)
    if channels == 1 and images.shape[1] == 3:
        return (0.299 * images[:, :1] + 0.587 * images[:, 1:2] + 0.114 * images[:, 2:]).clamp(0, 1)
    raise ConfigError(f"cannot convert {images.shape[1]}-channel images to {channels} channels")
