"""Fingerprints: protections that read the model without changing it (IPGuard and its baselines)."""
