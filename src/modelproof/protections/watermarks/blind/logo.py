"""The owner's logo l, the identity the encoder hides in every key sample: an image file or a text.

- :func:`logo_from_file`: any image Pillow reads, converted to grey (luma) or RGB and resized to
  the input size (bilinear), as a float tensor (C, H, W) in [0, 1].
- :func:`logo_from_text`: the text (the paper's example is "TEST") drawn white on black with
  Pillow's default font, scaled so that it fills the width, then resized to the input size.

Neither reads the network or the global RNG; the same file or text gives the same tensor.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ....util.errors import ConfigError

DEFAULT_TEXT = "TEST"
_RENDER_HEIGHT = 64  # text is drawn at this height, then resized down (sharper than drawing small)


def _to_tensor(image, shape: tuple[int, int, int]) -> torch.Tensor:
    from PIL import Image

    c, h, w = shape
    image = image.convert("L" if c == 1 else "RGB").resize((w, h), Image.Resampling.BILINEAR)
    array = np.asarray(image, dtype=np.float32) / 255.0
    tensor = torch.from_numpy(array.copy())
    return (tensor[None] if c == 1 else tensor.permute(2, 0, 1)).contiguous()


def logo_from_file(path: str | Path, shape: tuple[int, int, int]) -> torch.Tensor:
    """The image at ``path`` as a logo of ``shape`` (C, H, W); ConfigError if it is not a readable image."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"logo file not found: {path}")
    try:
        with Image.open(path) as im:
            im.load()
            return _to_tensor(im, shape)
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise ConfigError(f"logo {str(path)!r} is not an image Pillow can read ({type(exc).__name__})") from None


def logo_from_text(text: str, shape: tuple[int, int, int]) -> torch.Tensor:
    """``text`` rendered white on black and resized to ``shape`` (C, H, W)."""
    from PIL import Image, ImageDraw, ImageFont

    if not isinstance(text, str) or not text.strip() or len(text) > 64:
        raise ConfigError(f"logo text must be 1 to 64 characters, not blank, got {text!r}")
    try:
        font = ImageFont.load_default(size=_RENDER_HEIGHT)
    except TypeError:  # Pillow < 10.1 has only the fixed bitmap font
        font = ImageFont.load_default()
    probe = ImageDraw.Draw(Image.new("L", (1, 1)))
    left, top, right, bottom = probe.textbbox((0, 0), text, font=font)
    canvas = Image.new("L", (max(1, right - left) + 8, max(1, bottom - top) + 8), 0)
    ImageDraw.Draw(canvas).text((4 - left, 4 - top), text, fill=255, font=font)
    c, h, w = shape
    scale = w / canvas.width  # fit the width, centre vertically on a black image of the input's aspect
    fitted = canvas.resize((w, max(1, min(h, round(canvas.height * scale)))), Image.Resampling.LANCZOS)
    board = Image.new("L", (w, h), 0)
    board.paste(fitted, (0, (h - fitted.height) // 2))
    return _to_tensor(board, shape)


def make_logo(shape: tuple[int, int, int], *, path: str | Path | None = None, text: str | None = None) -> torch.Tensor:
    """The logo from a file (``path``) or a text (``text``, default "TEST"); not both."""
    if path is not None and text is not None:
        raise ConfigError("give a logo file or a logo text, not both")
    return logo_from_file(path, shape) if path is not None else logo_from_text(text or DEFAULT_TEXT, shape)
