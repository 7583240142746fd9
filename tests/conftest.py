"""Shared fixtures: the bundled digits split once, and one small trained CNN per session."""

from __future__ import annotations

import pytest
import torch

from modelproof.data import Splits, load_splits
from modelproof.training import TrainConfig, train_new

# Tiny models gain nothing from a second thread, and oversubscribed threads make timings erratic.
torch.set_num_threads(1)

FAST = TrainConfig(epochs=15, batch_size=32, lr=0.002, optimizer="adam")


@pytest.fixture(scope="session")
def digits() -> Splits:
    """Digits at their native 8x8, split owner/attacker/test with seed 0."""
    return load_splits("digits", seed=0)


@pytest.fixture(scope="session")
def trained_cnn(digits):
    """A Keras-style CNN trained on the digits owner split (a few seconds)."""
    model, _ = train_new("cnn", digits.owner, FAST, seed=0)
    return model
