"""Parameter checks shared by the models, protections and fingerprints: one clear ConfigError each."""

from __future__ import annotations

from .errors import ConfigError


def check_int(name: str, value: object, minimum: int) -> int:
    """``value`` if it is an integer (not a bool) >= ``minimum``, else a ConfigError naming it."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)
