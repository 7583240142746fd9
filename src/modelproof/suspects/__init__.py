"""Suspects: anything that answers labels for a batch of images; the query wrapper and log; local and HTTP adapters."""
