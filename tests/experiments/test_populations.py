"""Positive and negative suspect populations on digits: names, kinds, the 3-point rule, the disk cache."""

from __future__ import annotations

from fractions import Fraction

import pytest
import torch

from modelproof.experiments.populations import NEGATIVE, POSITIVE, matching_rates, negative_suspects, positive_suspects
from modelproof.models.modelfile import weights_digest
from modelproof.models.training import TrainConfig, evaluate

pytest.importorskip("torch_pruning")


@pytest.fixture(scope="module")
def positives(digits, trained_cnn, tmp_path_factory):
    cache = tmp_path_factory.mktemp("pos")
    made = positive_suspects(trained_cnn, digits, cache=cache, finetune_epochs=1, prune_epochs=1,
                             weight_rates=(0.1, 0.2), filter_rates=(Fraction(1, 16),))
    return cache, made


def test_positive_suspects_are_the_papers_post_processings(positives, digits, trained_cnn):
    _, made = positives
    names = [s.name for s in made]
    assert names[:4] == ["FTLL", "FTAL", "RTLL", "RTAL"]
    assert {s.group for s in made} <= {"FTLL", "FTAL", "RTLL", "RTAL", "WP", "FP"}
    assert all(s.kind == POSITIVE and s.model is not None for s in made)
    base = evaluate(trained_cnn, digits.test)
    for s in made[4:]:  # pruned suspects obey the 3-point accuracy-loss rule
        assert base - s.accuracy <= 0.03 + 1e-9 and s.name.startswith(("WP p=", "FP c="))
    for s in made:
        assert s.accuracy == pytest.approx(evaluate(s.model, digits.test))
        assert weights_digest(s.model) != weights_digest(trained_cnn)


def test_positive_cache_resumes_bit_exactly(positives, digits, trained_cnn):
    cache, made = positives
    assert len(list(cache.glob("*.safetensors"))) >= len(made)
    again = positive_suspects(trained_cnn, digits, cache=cache, finetune_epochs=1, prune_epochs=1,
                              weight_rates=(0.1, 0.2), filter_rates=(Fraction(1, 16),))
    assert [s.name for s in again] == [s.name for s in made]
    for a, b in zip(made, again):
        assert weights_digest(a.model) == weights_digest(b.model)  # filter-pruned ones too (smaller layers)


def test_negative_suspects_and_cache(digits, tmp_path):
    config = TrainConfig(epochs=3, batch_size=32, lr=0.002)
    kwargs = dict(arch="cnn", seeds=[1], other_archs={"mlp": [2]}, forest_seeds=[0], config=config,
                  cache=tmp_path)
    made = negative_suspects(digits, **kwargs)
    assert [s.name for s in made] == ["cnn seed=1", "mlp seed=2", "RF seed=0"]
    assert [s.group for s in made] == ["same architecture", "other architecture", "random forest"]
    assert all(s.kind == NEGATIVE for s in made) and made[2].model is None
    assert all(0.5 < s.accuracy <= 1.0 for s in made)
    again = negative_suspects(digits, **kwargs)
    assert weights_digest(again[0].model) == weights_digest(made[0].model)
    rates = matching_rates(made, digits.test.images, digits.test.labels)
    assert rates == {s.name: pytest.approx(s.accuracy) for s in made}
    x = torch.rand(5, *digits.input_shape)
    assert made[2].predict(x).dtype == torch.int64
