"""Shared fixtures: the bundled digits split once (8x8 and 16x16), a small trained CNN, the demo's MLP and
the negatives that have nothing to do with it, each built once per session."""

from __future__ import annotations

import pytest
import torch

from modelproof.data.splits import Splits, load_splits
from modelproof.experiments.demo import DEMO_CONFIG
from modelproof.suspects.local import TorchSuspect, train_random_forest
from modelproof.models.training import TrainConfig, train_new

# Tiny models gain nothing from a second thread, and oversubscribed threads make timings erratic.
torch.set_num_threads(1)

FAST = TrainConfig(epochs=15, batch_size=32, lr=0.002, optimizer="adam")


@pytest.fixture(scope="session", autouse=True)
def reference_cache(tmp_path_factory):
    """Default reference populations go to a folder of this session (or $MODELPROOF_TEST_CACHE, kept between
    runs), never the user's cache."""
    import os

    before = os.environ.get("MODELPROOF_CACHE")
    os.environ["MODELPROOF_CACHE"] = os.environ.get("MODELPROOF_TEST_CACHE") or str(tmp_path_factory.mktemp("cache"))
    yield os.environ["MODELPROOF_CACHE"]
    if before is None:
        os.environ.pop("MODELPROOF_CACHE", None)
    else:
        os.environ["MODELPROOF_CACHE"] = before


@pytest.fixture(scope="session")
def digits() -> Splits:
    """Digits at their native 8x8, split owner/attacker/test with seed 0."""
    return load_splits("digits", seed=0)


@pytest.fixture(scope="session")
def trained_cnn(digits):
    """A Keras-style CNN trained on the digits owner split (a few seconds)."""
    model, _ = train_new("cnn", digits.owner, FAST, seed=0)
    return model


@pytest.fixture(scope="session")
def digits16() -> Splits:
    """Digits resized to 16x16 (the demo's size, where Zhang et al.'s round blocks fit)."""
    return load_splits("digits", size=16, seed=0)


@pytest.fixture(scope="session")
def mlp16(digits16):
    """The demo's MLP trained on the 16x16 owner split with seed 0 (tests must not mutate it)."""
    return train_new("mlp", digits16.owner, DEMO_CONFIG, seed=0)[0]


@pytest.fixture(scope="session")
def references16(digits16) -> list:
    """The reference population ``protect`` trains by default for the 16x16 MLP (never the negatives)."""
    from modelproof.references.population import train_references

    return train_references(digits16.owner, owner_arch="mlp", seed=0)[0]


@pytest.fixture(scope="session")
def negatives16(digits16) -> list:
    """Suspects unrelated to ``mlp16``: the same MLP from seeds 1 and 2, and a random forest."""
    nets = [TorchSuspect(train_new("mlp", digits16.owner, DEMO_CONFIG, seed=s)[0]) for s in (1, 2)]
    return nets + [train_random_forest(digits16.owner, seed=0)]
