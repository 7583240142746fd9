"""DAWN (Szyller, Atli, Marchal, Asokan, ACM Multimedia 2021): the serving side of an extraction-proof watermark.

A label-only student distilled from a 99%-accurate model carries almost nothing of it that an
independent model lacks: its labels on natural images are nearly the ground truth. DAWN changes
the *answers* instead of the model. The server answers a small keyed share ``rate`` of the queries
with a keyed wrong label and logs those (input, answered label) pairs per client; a student trained
on the answers memorises them, an independent model almost never gives those wrong labels. The
owner then verifies a suspect on the logged pairs of the client suspected of theft
(:mod:`modelproof.references.dawn_key`). It protects an API, not weights: a thief who holds the
weights never asks the API (pair DAWN with a weight watermark for that).

**The rule** (:class:`DawnRule`), deterministic per input, so that a re-asked input gets the same
answer and averaging repeated queries reveals nothing:

- canonical form (:func:`quantised`): the float32 NCHW image the server decoded, each value rounded
  to the grid ``k / 65535`` (``rint(x * 65535)`` in float64, exact for float32 inputs) and written as
  little-endian uint16 after a domain tag and the shape. JSON round trips of the float32 values do
  not change it, and 8-bit images (``k / 255 = 257 k / 65535``) land exactly on grid points, far from
  any rounding boundary;
- ``h = HMAC-SHA256(secret, canonical bytes)``; the input is watermarked when the big-endian
  integer of ``h[0:8]`` is below ``rate * 2**64``;
- the wrong label: ``h[8:16] mod (C - 1)`` indexes the C - 1 labels other than the model's answer
  (uniform among them up to 2**-59).

The default rate 0.005 is the default of the authors' reference filter (``probability = 5 / 1000``).
Their filter also draws the watermark from the remaining HMAC bits, by using them to seed a shuffle of
the prediction vector, which leaves the top-1 label unchanged about once in C; here the label is
always another one. For score answers (logits or probabilities) the model's top-1 score and the
chosen label's score are swapped: the vector keeps its values (a probability vector stays one) and
its argmax is the wrong label.
"""

from __future__ import annotations

import hashlib
import hmac
import struct

import numpy as np
import torch
from torch import nn

from ...util.errors import ConfigError

DOMAIN = b"modelproof-dawn/1\n"
GRID = 65535             # values are rounded to k / GRID; 8-bit images lie on the grid (GRID = 257 * 255)
DEFAULT_RATE = 0.005     # the authors' reference filter: probability 5 / 1000
MIN_SECRET = 16          # characters (or bytes) of the secret


def check_rate(rate: object) -> float:
    """``rate`` as a float in (0, 1], else ConfigError naming it."""
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 < float(rate) <= 1:
        raise ConfigError(f"the DAWN rate must be a number in (0, 1] (the share of answers altered), got {rate!r}")
    return float(rate)


def check_dawn_secret(secret: object) -> bytes:
    """The secret as bytes; ConfigError (never showing it) when it is not text/bytes of at least MIN_SECRET."""
    if isinstance(secret, str):
        secret = secret.encode("utf-8")
    if not isinstance(secret, (bytes, bytearray)):
        raise ConfigError(f"the DAWN secret must be text or bytes, got {type(secret).__name__}")
    if len(secret) < MIN_SECRET:
        raise ConfigError(f"the DAWN secret must be at least {MIN_SECRET} characters (it decides which answers are "
                          f"altered: a guessable one lets a client find and drop them), got {len(secret)}")
    return bytes(secret)


def _numpy(images: object) -> np.ndarray:
    arr = images.detach().cpu().numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
    if arr.ndim != 4:
        raise ConfigError(f"DAWN needs a batch of images (N, C, H, W), got shape {tuple(arr.shape)}")
    return arr


def quantised(images: object) -> np.ndarray:
    """The canonical form of a batch (N, C, H, W) of values in [0, 1]: uint16 ``rint(x * 65535)``."""
    arr = _numpy(images).astype(np.float64)
    if not np.isfinite(arr).all() or arr.min(initial=0.0) < 0.0 or arr.max(initial=0.0) > 1.0:
        raise ConfigError("DAWN inputs must be finite values in [0, 1]")
    return np.rint(arr * GRID).astype(np.uint16)


def dequantised(q: np.ndarray) -> torch.Tensor:
    """Float32 images from their canonical form (what the key asks a suspect)."""
    return torch.from_numpy((np.asarray(q, dtype=np.float32) / np.float32(GRID)).astype(np.float32))


def canonical_bytes(q: np.ndarray) -> bytes:
    """The bytes one canonical image (C, H, W) is hashed as: domain tag, shape, little-endian uint16 values."""
    q = np.asarray(q)
    if q.ndim != 3 or q.dtype != np.uint16:
        raise ConfigError(f"a canonical image is uint16 (C, H, W), got {q.dtype} {tuple(q.shape)}")
    return DOMAIN + struct.pack("<3I", *q.shape) + q.astype("<u2", copy=False).tobytes()


class DawnRule:
    """Which answers to alter and to what (see the module docstring); never shows its secret."""

    def __init__(self, secret: str | bytes, rate: float = DEFAULT_RATE) -> None:
        self._secret = check_dawn_secret(secret)
        self.rate = check_rate(rate)
        self._bound = min(int(self.rate * 2 ** 64), 2 ** 64)

    def __repr__(self) -> str:
        return f"DawnRule(rate={self.rate:g})"

    def digests(self, q: np.ndarray) -> list[bytes]:
        """HMAC-SHA256 of each canonical image of the batch ``q`` (N, C, H, W)."""
        return [hmac.new(self._secret, canonical_bytes(image), hashlib.sha256).digest() for image in q]

    def decide(self, q: np.ndarray, answers: np.ndarray, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
        """(watermarked mask, labels to answer) for canonical images ``q`` whose model answers are ``answers``."""
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
            raise ConfigError(f"DAWN needs at least 2 classes, got {num_classes!r}")
        answers = np.asarray(answers, dtype=np.int64).reshape(-1)
        if len(answers) != len(q):
            raise ConfigError(f"{len(q)} images but {len(answers)} answers")
        mask = np.zeros(len(q), dtype=bool)
        labels = answers.copy()
        for i, h in enumerate(self.digests(q)):
            if int.from_bytes(h[:8], "big") < self._bound:
                mask[i] = True
                other = int.from_bytes(h[8:16], "big") % (num_classes - 1)
                labels[i] = other if other < answers[i] else other + 1
        return mask, labels

    def alter(self, images: object, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The answers to give for ``images`` whose model scores are ``scores`` (N, C).

        Returns (scores with the top-1 and the chosen label's values swapped on watermarked rows, the labels
        answered, the watermarked mask, the canonical images ``q``).
        """
        scores = np.array(scores, copy=True)
        if scores.ndim != 2:
            raise ConfigError(f"scores must be (N, classes), got shape {tuple(scores.shape)}")
        q = quantised(images)
        answers = scores.argmax(axis=1)
        mask, labels = self.decide(q, answers, int(scores.shape[1]))
        rows = np.flatnonzero(mask)
        top, chosen = scores[rows, answers[rows]].copy(), scores[rows, labels[rows]].copy()
        scores[rows, answers[rows]], scores[rows, labels[rows]] = chosen, top
        return scores, labels, mask, q


class PairSink:
    """Where a :class:`DawnModel` keeps its watermarked answers: (canonical image, model answer, answered label).

    Shared, never copied, by copies of the model (an attack works on a deep copy of its victim; the
    server's log is one whatever copy answered).
    """

    def __init__(self) -> None:
        self.pairs: list[tuple[np.ndarray, int, int]] = []
        self.answered = 0

    def __deepcopy__(self, memo: dict) -> PairSink:
        return self


class DawnModel(nn.Module):
    """A model behind the DAWN rule, for simulations: its outputs are the answers a DAWN server gives.

    Every watermarked answer goes to ``sink`` (a :class:`PairSink`), as the server's log keeps them for
    one client (duplicates of a re-asked input included); ``sink.answered`` counts every answer.
    """

    def __init__(self, model: nn.Module, rule: DawnRule, sink: PairSink | None = None) -> None:
        super().__init__()
        self.model, self.rule = model, rule
        self.sink = PairSink() if sink is None else sink
        for name in ("num_classes", "input_shape"):
            if hasattr(model, name):
                setattr(self, name, getattr(model, name))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scores = self.model(x)
        altered, labels, mask, q = self.rule.alter(x, scores.detach().float().cpu().numpy())
        answers = scores.argmax(dim=1).cpu().numpy()
        self.sink.answered += len(x)
        self.sink.pairs += [(q[i], int(answers[i]), int(labels[i])) for i in np.flatnonzero(mask)]
        return torch.from_numpy(altered).to(device=scores.device, dtype=scores.dtype)


__all__ = ["DEFAULT_RATE", "DawnModel", "DawnRule", "PairSink", "GRID", "canonical_bytes", "check_dawn_secret", "check_rate",
           "dequantised", "quantised"]
