"""Protections: the Protection base and its registry; watermarks (they change the model) and
fingerprints (they read it) register themselves in ``watermarks/`` and ``fingerprints/``."""

from __future__ import annotations

from .base import PROTECTIONS, Protected, Protection, discover_protections, make_protection, register_protection, registered

__all__ = [
    "PROTECTIONS", "Protected", "Protection", "discover_protections", "make_protection",
    "register_protection", "registered"
]
