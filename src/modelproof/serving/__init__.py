"""The HTTP server: serve a model file over the Open Inference Protocol (V2)."""

from __future__ import annotations

from .server import ServedModel, create_app, listening_socket, serve

__all__ = [
    "ServedModel", "create_app", "listening_socket", "serve"
]
