"""Experiments: suspect populations, fingerprint metrics over them, and their plots.

``populations`` builds labelled positive (post-processed) and negative (independent) suspects;
``modelproof.metrics`` holds the pure metric functions; ``plots`` draws robustness and uniqueness
curves. Modules are imported on use (matplotlib and torch-pruning are optional extras).
"""
