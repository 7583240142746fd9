"""modelproof: prove that a suspect image classifier is yours, and measure how well the proof survives attacks."""

from __future__ import annotations

__version__ = "0.1.0"
