"""Where torch runs: the device (cpu, cuda, mps or auto) and the number of intra-op threads.

Commands take ``--device`` and ``--threads`` and call :func:`configure`; models built or loaded by a
command are then placed on :func:`default_device`. Library code makes every tensor on its model's
device (:func:`model_device`). Results are deterministic for a seed and a thread count on the CPU
(what this project measured); another device or thread count may change the last bits of a float.
"""

from __future__ import annotations

import os
from contextvars import ContextVar

import torch
from torch import nn

from ..util.errors import ConfigError

DEVICES = ("cpu", "cuda", "mps", "auto")
_DEFAULT: ContextVar[torch.device] = ContextVar("modelproof_device", default=torch.device("cpu"))


def default_threads() -> int:
    """``OMP_NUM_THREADS`` when set, else half the CPUs this process may use, between 1 and 4.

    Small models gain little from more threads, and on a shared machine torch's default (every core)
    made training 9x slower than one thread (21.1 s against 2.4 s measured here).
    """
    env = os.environ.get("OMP_NUM_THREADS", "")
    if env.isdigit() and int(env) > 0:
        return int(env)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(4, cores // 2))


def resolve_device(name: str) -> torch.device:
    """``cpu``, ``cuda``, ``mps``, or ``auto`` (cuda when available, else mps, else cpu); ConfigError when absent."""
    if name not in DEVICES:
        raise ConfigError(f"device must be one of {', '.join(DEVICES)}, got {name!r}")
    mps = getattr(torch.backends, "mps", None)
    has_mps = mps is not None and mps.is_available()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "mps" if has_mps else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' is not available here (no CUDA build of torch or no GPU); use --device cpu")
    if name == "mps" and not has_mps:
        raise ConfigError("device 'mps' is not available here (Apple GPUs only); use --device cpu")
    return torch.device(name)


def configure(device: str = "cpu", threads: int | None = None) -> torch.device:
    """Set torch's intra-op threads (``default_threads()`` when None) and the default device; returns it.

    On CUDA it also turns TF32 off (torch lets convolutions use it by default): no mixed or reduced
    precision anywhere, so a verdict cannot depend on the device.
    """
    threads = default_threads() if threads is None else threads
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ConfigError(f"threads must be a positive integer, got {threads!r}")
    torch.set_num_threads(threads)
    chosen = resolve_device(device)
    if chosen.type == "cuda":  # float32 throughout: TF32 rounding could move a point across a key's boundary
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    _DEFAULT.set(chosen)
    return chosen


def default_device() -> torch.device:
    """The device chosen by :func:`configure` (cpu unless a command chose another)."""
    return _DEFAULT.get()


def model_device(model: nn.Module) -> torch.device:
    """The device of ``model``'s parameters (cpu for a model without any)."""
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


__all__ = ["DEVICES", "default_threads", "resolve_device", "configure", "default_device", "model_device"]
