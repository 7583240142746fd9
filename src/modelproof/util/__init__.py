"""Shared plumbing: the package's exception types, argument checks, progress lines and safe file writes."""
