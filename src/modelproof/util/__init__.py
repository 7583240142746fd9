"""Shared plumbing: the package's exception types, argument checks, progress lines and safe file writes."""

from __future__ import annotations

from .errors import ConfigError, DataError, KeyFileError, ModelFileError, ModelproofError, SuspectError
from .checks import check_int
from .files import atomic_write_bytes, looks_like_pickle
from .progress import progress_bar, task

__all__ = [
    "ConfigError", "DataError", "KeyFileError", "ModelFileError", "ModelproofError", "SuspectError",
    "atomic_write_bytes", "check_int", "looks_like_pickle", "progress_bar", "task"
]
