"""DAWN in the server: alter a keyed share of the answers and log them per client.

:class:`DawnServing` holds the rule (:class:`~modelproof.protections.watermarks.dawn.DawnRule`), the log
folder (:mod:`~modelproof.protections.watermarks.dawn_log`) and the served model's weight digest (the
key built from the log names it). Every infer and ``:predict`` answer goes through :meth:`answer`: the
labels and scores given are the altered ones, and the watermarked pairs are appended to the asking
client's file before the answer leaves.

The client is the remote address of the connection. This server has no authentication of its own;
behind a gateway that authenticates its users, ``client_header`` names the request header the gateway
sets to the user's identity (a client reaching this server directly could set it to anything: use it
only behind such a gateway). A thief who spreads its queries over many addresses spreads its
watermarked pairs over as many logs; the owner can merge them when they are known to be one party.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
from fastapi import Request

from ..protections.watermarks.dawn import DEFAULT_RATE, DawnRule
from ..protections.watermarks.dawn_log import DawnPair, append_pairs, check_client
from ..util.errors import ConfigError


def model_digest(path: str | Path) -> str:
    """The served model's identity in the log: its weight digest (.safetensors) or the file's SHA-256 (.onnx)."""
    path = Path(path)
    if path.suffix.lower() == ".safetensors":
        from ..models.modelfile import load_model, weights_digest

        return weights_digest(load_model(path))
    return hashlib.sha256(path.read_bytes()).hexdigest()


class DawnServing:
    """The DAWN rule and log of one server (see the module docstring)."""

    def __init__(self, secret: str | bytes, log_dir: str | Path, *, model: str, rate: float = DEFAULT_RATE,
                 client_header: str | None = None) -> None:
        self.rule = DawnRule(secret, rate)
        self.log_dir = Path(log_dir)
        if self.log_dir.exists() and not self.log_dir.is_dir():
            raise ConfigError(f"--dawn-log {self.log_dir} exists and is not a folder")
        self.log_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.model = model
        if client_header is not None and (not client_header.strip() or any(c in client_header for c in ": \r\n")):
            raise ConfigError(f"--dawn-client-header must be a header name, got {client_header!r}")
        self.client_header = client_header.lower() if client_header else None
        self.answered = self.altered = 0

    def __repr__(self) -> str:
        return f"DawnServing(rate={self.rule.rate:g}, log={str(self.log_dir)!r})"

    def client(self, request: Request) -> str:
        """Who asked: the gateway's identity header when configured (400 when missing), else the remote address."""
        from .bodies import Reject

        if self.client_header is not None:
            value = request.headers.get(self.client_header)
            if not value:
                raise Reject(400, f"this server needs the {self.client_header!r} header naming the client")
            try:
                return check_client(value)
            except ConfigError as exc:
                raise Reject(400, str(exc)) from None
        return request.client.host if request.client and request.client.host else "unknown"

    def answer(self, client: str, images: np.ndarray, logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(scores, labels) to answer ``client`` for NCHW ``images``; the watermarked pairs are logged first."""
        scores, labels, mask, q = self.rule.alter(images, logits)
        answers = np.asarray(logits).argmax(axis=1)
        rows = np.flatnonzero(mask)
        append_pairs(self.log_dir, [DawnPair(client=client, image=q[i], answer=int(answers[i]), label=int(labels[i]),
                                             classes=int(scores.shape[1]), model=self.model, rate=self.rule.rate)
                                    for i in rows])
        self.answered += len(labels)
        self.altered += len(rows)
        return scores.astype(np.float32), labels.astype(np.int64)


__all__ = ["DawnServing", "model_digest"]
