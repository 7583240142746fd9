"""The HTTP server: serve a model file over the Open Inference Protocol (V2).

Its names load on first use: the JSON parser processes import ``modelproof.serving.parsers``, which must
not pull in torch and the web stack through this package.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__all__ = ["ServedModel", "create_app", "listening_socket", "serve"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(import_module(".server", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
