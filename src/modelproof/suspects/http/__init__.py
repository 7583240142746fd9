"""The HTTP suspect: an Open Inference Protocol (V2) client, its codecs and its transport."""

from __future__ import annotations

from .client import HttpSuspect

__all__ = [
    "HttpSuspect"
]
