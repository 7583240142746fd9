"""The blind watermark of Li et al. (ACSAC 2019): encoder, discriminator and host trained together.

Modules: :mod:`.networks` (encoder U-Net, discriminator), :mod:`.logo` (logo from a file or a text),
:mod:`.joint` (Algorithm 1), :mod:`.secret` (encoder + logo + sources saved beside the key),
:mod:`.imperceptibility` (SSIM, PSNR, Figure-8 grid), :mod:`.watermark` (the ``blind`` Protection).
"""

from __future__ import annotations

from .secret import BlindSecret, load_secret, save_secret, secret_path
from .watermark import BlindWatermark

__all__ = ["BlindSecret", "BlindWatermark", "load_secret", "save_secret", "secret_path"]
