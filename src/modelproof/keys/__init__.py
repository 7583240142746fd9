"""Ownership keys: the OwnershipKey, its file format and encryption, the bounds on its null, signing and commitments."""
