"""Protections: the Protection base and registry, watermarks (change the model) and fingerprints (read it)."""
