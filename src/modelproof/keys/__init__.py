"""Ownership keys: the OwnershipKey, its file format and encryption, the bounds on its null, signing
and commitments."""

from __future__ import annotations

from .key import OwnershipKey, canonical_json, key_from_model
from .container import is_encrypted, load_key, save_key
from .nulls import clopper_pearson_upper, is_calibrated, prediction_upper_bound, tail_of
from .signing import ReportError, generate_signing_key, load_public_key, load_signing_key, save_signing_key
from .commitments import CommitmentError, check_commitment, earliest_claim, read_commitment, write_commitment

__all__ = [
    "CommitmentError", "OwnershipKey", "ReportError", "canonical_json", "check_commitment",
    "clopper_pearson_upper", "earliest_claim", "generate_signing_key", "is_calibrated", "is_encrypted",
    "key_from_model", "load_key", "load_public_key", "load_signing_key", "prediction_upper_bound",
    "read_commitment", "save_key", "save_signing_key", "tail_of", "write_commitment"
]
