"""Neural Cleanse and laundering on a toy backdoor: a 2x2 white patch sends any digit to 0 (an 8x8 MLP)."""

from __future__ import annotations

import pytest
import torch

from modelproof.attacks import NeuralCleanse, NeuralLaundering, run_attack
from modelproof.attacks.cleanse import Trigger, anomaly_indices, reverse_all, stamped
from modelproof.data.splits import Dataset, concat
from modelproof.models.training import TrainConfig, predict, train_new

FAST_NC = {"images": 200, "reverse_epochs": 30}


def stamp(images: torch.Tensor) -> torch.Tensor:
    out = images.clone()
    out[:, :, -3:-1, -3:-1] = 1.0
    return out


@pytest.fixture(scope="module")
def backdoored(digits):
    """The digits MLP trained with 10% of its owner images stamped and labelled 0 (a trigger-set watermark)."""
    own = digits.owner
    idx = torch.randperm(len(own), generator=torch.Generator().manual_seed(0))[:len(own) // 10]
    poison = Dataset(stamp(own.images[idx]), torch.zeros(len(idx), dtype=torch.int64), own.class_names, "poison")
    model, _ = train_new("mlp", concat([own, poison]), TrainConfig(epochs=15, batch_size=32, lr=0.002), seed=0)
    return model


def success(model, digits) -> float:
    """How often the patch sends a test image of another class to 0 (the backdoor's success rate)."""
    others = digits.test.images[digits.test.labels != 0]
    return float((predict(model, stamp(others)) == 0).float().mean())


def test_the_toy_backdoor_works(backdoored, digits):
    assert success(backdoored, digits) > 0.9


def test_neural_cleanse_flags_the_backdoor_label_with_the_smallest_trigger(backdoored, digits):
    triggers, flagged, index = reverse_all(backdoored, digits.attacker, images=200, epochs=30, seed=0)
    assert flagged == [0] and min(triggers, key=lambda t: t.norm).target == 0 and float(index[0]) > 2
    zero = triggers[0]
    assert zero.success >= 0.99 and zero.norm < 0.6 * sorted(t.norm for t in triggers)[1]
    assert zero.mask.shape == (1, 8, 8) and zero.pattern.shape == (1, 8, 8)
    assert 0.0 <= float(zero.mask.min()) and float(zero.mask.max()) <= 1.0
    # the reversed trigger does what the real one does
    others = digits.test.images[digits.test.labels != 0]
    assert float((predict(backdoored, zero.apply(others)) == 0).float().mean()) > 0.9


def test_unlearning_the_reversed_trigger_removes_the_backdoor(backdoored, digits):
    result = run_attack(NeuralCleanse(**FAST_NC), backdoored, digits, seed=0)
    assert result.details["flagged"] == [0] and result.details["unlearned"] == [0]
    assert success(result.model, digits) < 0.2 and result.plausible


def test_laundering_resets_the_units_the_trigger_excites_and_removes_the_backdoor(backdoored, digits):
    result = run_attack(NeuralLaundering(**FAST_NC), backdoored, digits, seed=0)
    reset = result.details["reset_units"]
    assert list(reset) == ["features.4"] and reset["features.4"] > 0  # the later half: the second hidden layer
    assert success(result.model, digits) < 0.2 and result.plausible


def test_anomaly_index_and_stamping():
    norms = torch.tensor([10.0, 11.0, 9.0, 10.5, 2.0])
    index = anomaly_indices(norms)
    assert float(index[-1]) > 2 > float(index[:-1].max())
    assert torch.equal(anomaly_indices(torch.ones(4)), torch.zeros(4, dtype=torch.float64))
    data = Dataset(torch.zeros(10, 1, 4, 4), torch.arange(10) % 2, ("a", "b"), "d")
    mark = Trigger(1, torch.ones(1, 4, 4) * (torch.arange(4) == 0).float()[None, :, None], torch.ones(1, 4, 4), 1.0)
    out = stamped(data, [mark], 0.2, torch.Generator().manual_seed(0))
    assert len(out) == 2 and torch.all(out.images[:, :, 0] == 1) and torch.all(out.images[:, :, 1:] == 0)
