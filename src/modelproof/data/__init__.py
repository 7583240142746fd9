"""Datasets: the Dataset type (float images in [0,1], NCHW, integer labels), owner/attacker/test splits, file readers and downloads."""
