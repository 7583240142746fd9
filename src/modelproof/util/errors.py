"""The package's own exception types: every error a user can cause is one of these."""

from __future__ import annotations


class ModelproofError(Exception):
    """Base class: a user-facing error whose message names the bad value and what was expected."""


class DataError(ModelproofError):
    """A dataset is missing, corrupt or malformed, or a split is impossible."""


class ModelFileError(ModelproofError):
    """A model file is missing, unsafe (e.g. a pickle) or inconsistent with its record."""


class ConfigError(ModelproofError):
    """A parameter is out of range or of the wrong kind."""


class KeyRefused(ConfigError):
    """No sound key can be made for this model with these settings: too few candidates survived key
    selection, or the key fails its self-check. A result, not a fault: the experiment grid records it."""


class KeyFileError(ModelproofError):
    """An ownership key file is missing, corrupt, tampered with or undecryptable."""


class SuspectError(ModelproofError):
    """A suspect answered malformed output, failed, or exhausted its query budget."""
