"""The new-label watermark (Zhong et al.) on 16x16 digits with the demo's MLP."""

from __future__ import annotations

import pytest
import torch

from modelproof.experiments.demo import DEMO_CONFIG
from modelproof.util.errors import ConfigError
from modelproof.models.modelfile import load_model, save_model
from modelproof.models import build_model
from modelproof.protections.base import make_protection
from modelproof.suspects.local import TorchSuspect
from modelproof.models.training import evaluate, predict, train_new
from modelproof.verification.verifier import verify
from modelproof.protections.watermarks.new_label import NewLabel, OriginalClasses, extend_head, predict_original



@pytest.fixture(scope="module")
def protected(mlp16, digits16):
    return NewLabel(**NewLabel.demo_params).protect(mlp16, digits16.owner, seed=0, test=digits16.test)


def test_model_gets_one_more_output_and_verifies_owned(protected, mlp16):
    model, key = protected.model, protected.key
    assert model.head.out_features == 11 and model.num_classes == 11 and mlp16.num_classes == 10
    assert key.num_classes == 11 and (key.labels == 10).all()
    assert protected.report["key_accuracy"] >= 0.9
    verdict = verify(key, TorchSuspect(model))
    assert verdict.decision == "owned" and verdict.p_value < 1e-6
    sequential = verify(key, TorchSuspect(model), mode="sequential")
    assert sequential.decision == "owned" and sequential.queries <= 10


def test_still_answers_the_original_classes(protected, mlp16, digits16):
    model, test = protected.model, digits16.test
    assert evaluate(model, test) >= evaluate(mlp16, test) - 0.02  # full argmax: a Delta answer is an error
    assert float((predict(model, test.images) == 10).float().mean()) <= 0.02
    original = predict_original(model, test.images)
    assert int(original.max()) < 10 and float((original == test.labels).float().mean()) >= evaluate(model, test)
    wrapped = OriginalClasses(model)
    assert wrapped.num_classes == 10 and wrapped(test.images[:4]).shape == (4, 10)
    assert protected.report["accuracy_original_classes"] >= protected.report["accuracy_after"]


def test_independent_models_are_not_claimed(protected, digits16, negatives16):
    negatives = list(negatives16)
    # a suspect with C+1 outputs: another owner's new-label model (other secret, other seed)
    other = make_protection("new-label", **{**NewLabel.demo_params, "secret": "someone else"})
    negatives.append(TorchSuspect(other.protect(negatives[0].model, digits16.owner, seed=1).model))
    for negative in negatives:
        assert verify(protected.key, negative).decision == "not owned", negative.identity


def test_null_is_justified(protected):
    key = protected.key
    assert 1 / 11 <= key.null_match_prob < 0.5
    assert "never does" in key.null_source and "Clopper-Pearson" in key.null_source
    assert not any("secret" in name for name in key.params)  # neither the secret nor a hash of it


def test_saved_model_reloads_with_eleven_outputs(protected, tmp_path, digits16):
    path = save_model(protected.model, tmp_path / "nl.safetensors", dataset="digits")
    again = load_model(path)
    assert again.num_classes == 11
    assert torch.equal(predict(again, digits16.test.images), predict(protected.model, digits16.test.images))


def test_extend_head_keeps_answers(mlp16, digits16):
    extended = extend_head(build_model("mlp", 10, (1, 16, 16), seed=0), torch.Generator())
    assert extended.head.out_features == 11
    copy = train_new("mlp", digits16.owner, DEMO_CONFIG, seed=0)[0]
    extend_head(copy, torch.Generator().manual_seed(0))
    same = (predict(copy, digits16.test.images) == predict(mlp16, digits16.test.images)).float().mean()
    assert float(same) >= 0.99


def test_same_secret_same_key(digits16):
    first = NewLabel(secret="alice").samples(digits16.owner)
    again = NewLabel(secret="alice").samples(digits16.owner)
    other = NewLabel(secret="bob").samples(digits16.owner)
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not torch.equal(first[1], other[1])
    assert first[0].shape[0] == round(0.01 * len(digits16.owner)) and first[1].shape[0] == 50


def test_scratch_mode(digits16):
    untrained = build_model("mlp", 10, (1, 16, 16), seed=3)
    result = NewLabel(secret="s", mode="scratch", alpha=0.1, beta=0.3, epochs=20, lr=0.003).protect(
        untrained, digits16.owner, seed=3, test=digits16.test)
    assert result.model.num_classes == 11 and result.report["accuracy_after"] >= 0.9
    assert verify(result.key, TorchSuspect(result.model)).decision == "owned"


def test_null_prob_override(mlp16, digits16):
    result = NewLabel(secret="s", null_prob=0.5, alpha=0.05, beta=0.3, epochs=3).protect(mlp16, digits16.owner)
    assert result.key.null_match_prob == 0.5 and "given by the owner" in result.key.null_source


@pytest.mark.parametrize("params,fragment", [
    ({"alpha": 0.0}, "alpha"), ({"alpha": 1.0}, "alpha"), ({"beta": -0.1}, "beta"),
    ({"null_prob": 1.5}, "null_prob"), ({"key_size": 0}, "key_size"), ({"mode": "x"}, "mode"),
])
def test_bad_params(params, fragment):
    with pytest.raises(ConfigError, match=fragment):
        NewLabel(**params)


def test_too_much_data_asked(mlp16, digits16):
    with pytest.raises(ConfigError, match="exceed"):
        NewLabel(secret="s", alpha=0.99, key_size=50).protect(mlp16, digits16.owner)


def test_under_selection_alpha_and_decoys_not_given_become_the_selected_recipe():
    """Issue 22: with alpha 0.01 and one decoy, 9 of 10 secrets were refused on the digits MLP under selection;
    the selected recipe (0.05, 3 decoys) applies only where the caller gave no value, and is what the key records."""
    from modelproof.protections.watermarks.new_label import (DEFAULT_ALPHA, DEFAULT_DECOYS, SELECTED_ALPHA,
                                                             SELECTED_DECOYS)

    plain = NewLabel(secret="s")
    assert (plain.alpha, plain.decoys) == (DEFAULT_ALPHA, DEFAULT_DECOYS) == (0.01, 1)
    tuned = plain.selected_recipe()
    assert (tuned.alpha, tuned.decoys) == (SELECTED_ALPHA, SELECTED_DECOYS) == (0.05, 3)
    assert tuned.params()["alpha"] == 0.05 and tuned.params()["decoys"] == 3 and "_defaulted" not in tuned.params()
    assert plain.alpha == 0.01  # the caller's object is unchanged
    given = NewLabel(secret="s", alpha=0.02, decoys=0).selected_recipe()
    assert (given.alpha, given.decoys) == (0.02, 0)
    half = NewLabel(secret="s", decoys=2).selected_recipe()
    assert (half.alpha, half.decoys) == (0.05, 2)
    assert tuned.samples.__self__ is tuned and tuned.gen("x").initial_seed() == plain.gen("x").initial_seed()
