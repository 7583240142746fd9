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


def loads_arrays(raw: bytes | bytearray, dtype: str | None = None) -> Any:
    """:func:`loads` for a worker process: each v2 ``inputs[i].data`` list of numbers comes back as a numpy
    array (cheap to send between processes); errors come back as a short ValueError / :class:`TooDeep`.
    With ``dtype="float32"``, float arrays, and integer arrays that float32 holds exactly (|v| < 2**24),
    come back as float32: half the bytes to send, and what the model takes."""
    import numpy as np

    try:
        body = loads(raw)
    except TooDeep:
        raise
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(str(exc)[:300]) from None  # not the JSONDecodeError: it would carry the whole body back
    inputs = body.get("inputs") if isinstance(body, dict) else None
    for inp in inputs if isinstance(inputs, list) else []:
        if isinstance(inp, dict) and isinstance(inp.get("data"), list):
            try:
                arr = np.asarray(inp["data"])
            except (ValueError, RecursionError):
                continue
            if arr.dtype.kind in "iuf":
                exact = arr.dtype.kind == "f" or arr.size == 0 or int(np.abs(arr).max()) < 2 ** 24
                inp["data"] = arr.astype(dtype, copy=False) if dtype and exact else arr
    return body


__all__ = ["TooDeep", "loads", "loads_arrays"]
