"""A DAWN key from a thief's log: calibrated, owns a student that learnt the altered answers, refuses weak logs."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from modelproof.attacks.extraction import Extraction
from modelproof.models.modelfile import weights_digest
from modelproof.models.training import TrainConfig, train_new
from modelproof.protections.watermarks.dawn import DawnModel, DawnRule, PairSink, quantised
from modelproof.protections.watermarks.dawn_log import log_pairs
from modelproof.references.calibration import Reference
from modelproof.references.dawn_key import dawn_key, floor_null, min_pairs
from modelproof.suspects.local import SklearnSuspect, TorchSuspect, train_random_forest
from modelproof.util.errors import ConfigError
from modelproof.verification.verifier import verify

SECRET = "the-dawn-key-test-secret-0123456789"
FAST = TrainConfig(epochs=15, batch_size=32, lr=0.002, optimizer="adam")
TAIL = 1e-3  # eight references carry this tail (the default 1e-4 is sized for a population of 24)


@pytest.fixture(scope="module")
def references(digits) -> list[Reference]:
    """Eight independent models of four kinds, trained on the owner's split."""
    refs = [Reference(TorchSuspect(m := train_new(a, digits.owner, FAST, seed=s)[0]), f"{a}-{s}", a, weights_digest(m))
            for a, s in (("mlp", 31), ("mlp", 32), ("mlp", 33), ("cnn", 34))]
    refs += [Reference(train_random_forest(digits.owner, seed=s), f"forest-{s}", "forest") for s in (35, 36)]
    x, y = digits.owner.images.reshape(len(digits.owner), -1).numpy(), digits.owner.labels.numpy()
    for c in (0.1, 1.0):
        est = LogisticRegression(C=c, max_iter=300).fit(x, y)
        refs.append(Reference(SklearnSuspect(est, digits.input_shape, 10, identity=f"logistic-{c}"), f"logistic-{c}",
                              "logistic"))
    return refs


@pytest.fixture(scope="module")
def theft(trained_cnn, digits):
    """A label-only MLP student of the CNN served behind DAWN (rate 0.2), and the pairs its client was logged."""
    sink = PairSink()
    attack = Extraction(student="mlp", answers="labels", epochs=80)
    outcome = attack.perform(DawnModel(trained_cnn, DawnRule(SECRET, 0.2), sink), digits.attacker, seed=0)
    pairs = log_pairs(sink.pairs, client="203.0.113.7", classes=10, model=weights_digest(trained_cnn), rate=0.2)
    return outcome, pairs


def test_student_of_the_altered_answers_is_owned_an_independent_model_is_not(theft, references, trained_cnn, digits):
    outcome, pairs = theft
    assert outcome.queries == len(digits.attacker) and len(pairs) > 60
    made = dawn_key(pairs, references, client="203.0.113.7", served=TorchSuspect(trained_cnn), tail=TAIL)
    key = made.key
    assert key.method == "dawn" and len(key) == len(pairs) and key.params["calibration"]["tail"] == TAIL
    assert 0 < key.null_match_prob < 0.25 and "Student-t prediction bound" in key.null_source
    assert made.summary["served_model_matches"] <= 2  # the owner's model answers otherwise, as it must
    assert verify(key, TorchSuspect(outcome.model)).decision == "owned"
    independent = train_new("mlp", digits.attacker, FAST, seed=41)[0]  # trained on the true labels
    for suspect in (TorchSuspect(independent), train_random_forest(digits.attacker, seed=42), TorchSuspect(trained_cnn)):
        assert verify(key, suspect).decision == "not owned"


def test_key_inputs_are_the_logged_queries_with_the_answered_labels(theft, references):
    _, pairs = theft
    key = dawn_key(pairs + pairs[:5], references, client="c", tail=TAIL).key  # a re-asked input counts once
    assert len(key) == len(pairs)
    assert np.array_equal(quantised(key.inputs), np.stack([p.image for p in pairs]))
    assert torch.equal(key.labels, torch.tensor([p.label for p in pairs]))
    assert key.model_digest == pairs[0].model and key.params["repeats"] == 5


def test_too_few_pairs_are_refused_before_any_reference_is_asked(theft, references):
    _, pairs = theft
    need = min_pairs(len(references), 0.01, TAIL)
    assert floor_null(need, len(references), TAIL) ** need < 0.01 - TAIL
    assert floor_null(need - 1, len(references), TAIL) ** (need - 1) >= 0.01 - TAIL
    with pytest.raises(ConfigError, match=f"was given {need - 1} watermarked answer.*at least {need}"):
        dawn_key(pairs[:need - 1], references, client="c", tail=TAIL)
    with pytest.raises(ConfigError, match="holds no watermarked answers"):
        dawn_key([], references, client="c", tail=TAIL)


class Parrot:
    """A reference that answers the logged label on all but every ``skip``-th key input (offset by ``shift``)."""

    def __init__(self, pairs, skip: int, shift: int) -> None:
        self.table = {p.image.tobytes(): (i, p.label) for i, p in enumerate(pairs)}
        self.skip, self.shift = skip, shift
        self.num_classes, self.input_shape, self.identity = 10, (1, 8, 8), f"parrot {shift}"

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        out = []
        for q in quantised(images):
            i, label = self.table.get(q.tobytes(), (0, 0))
            out.append(label if (i + self.shift) % self.skip else (label + 1) % 10)
        return torch.tensor(out)


def test_references_that_answer_the_logged_labels_refuse_the_key(theft, references):
    _, pairs = theft
    parrots = [Reference(Parrot(pairs, 25, i), f"parrot-{i}", "parrot") for i in range(8)]  # 96% each
    with pytest.raises(ConfigError, match="answer client 'c''s logged labels too often"):
        dawn_key(pairs, parrots, client="c", tail=TAIL)


def test_a_served_model_that_answers_the_logged_labels_did_not_make_the_log(theft, references):
    outcome, pairs = theft
    with pytest.raises(ConfigError, match="served model itself answers"):
        dawn_key(pairs, references, client="c", served=TorchSuspect(outcome.model), tail=TAIL)


def test_a_log_of_two_served_models_needs_one_chosen(theft, references):
    _, pairs = theft
    other = [dataclasses.replace(p, model="cd" * 32) for p in pairs[:3]]
    with pytest.raises(ConfigError, match="answers of 2 served models"):
        dawn_key(pairs + other, references, client="c", tail=TAIL)
    key = dawn_key(pairs + other, references, client="c", model_digest=pairs[0].model, tail=TAIL).key
    assert len(key) == len(pairs) and key.params["other_models"] == 3
