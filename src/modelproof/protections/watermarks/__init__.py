"""Watermarks: protections that change the model (trigger sets, new label, frontier stitching, blind)."""
