"""How the server's process uses glibc's allocator (Linux; a no-op elsewhere).

By default glibc gives threads their own heaps ("arenas", up to 8 per core) and raises its mmap threshold
to the size of the largest block freed (up to 32 MiB): after one big request, buffers of tens of MB come
from a heap instead of their own mappings, and what they free stays reserved by that heap. A server whose
worker threads read, decode and answer multi-MB bodies then grows far beyond what it holds at once.
Fixing the threshold at 1 MiB (every larger block is its own mapping, returned to the system when freed)
and using at most two arenas keeps the process near what it holds.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter numbers (malloc.h)
M_ARENA_MAX = -8
MMAP_THRESHOLD = 2 ** 20
ARENAS = 2


def tune_heap() -> bool:
    """Set the mmap threshold and the arena count for this process; whether glibc took them."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (e.g. musl): nothing to tune
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_ARENA_MAX, ARENAS))
