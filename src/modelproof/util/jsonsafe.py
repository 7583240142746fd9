"""JSON from untrusted bytes: nesting too deep for the parser is a ValueError like any other malformed JSON.

Python's parser raises RecursionError on about a thousand nested arrays; a hostile server, key file or
report can send that. :func:`loads` turns it into ``ValueError`` so that every reader's existing
``except ValueError`` answers with its own one-line error instead of a traceback.
"""

from __future__ import annotations

import json
from typing import Any


class TooDeep(ValueError):
    """JSON nested deeper than the parser can follow."""


def loads(raw: bytes | bytearray | str) -> Any:
    """``json.loads(raw)``; :class:`TooDeep` (a ValueError) instead of RecursionError."""
    try:
        return json.loads(raw)
    except RecursionError:
        raise TooDeep("JSON nested too deeply") from None



__all__ = ["TooDeep", "loads"]
