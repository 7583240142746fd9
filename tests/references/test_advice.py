"""A refusal says what the references matched and which change would help, computed from the bound."""

from __future__ import annotations

from modelproof.keys.nulls import prediction_upper_bound
from modelproof.references.advice import passes, refusal_advice


def test_too_few_references_is_named_not_the_epochs():
    """The issue's case: 4 references matching none of a perfect key, refused: more references help."""
    text = refusal_advice([0, 0, 0, 0], 40, 40, alpha=0.01, tail=0.001)
    assert "matched the key on 0/40, 0/40, 0/40, 0/40" in text and "protected model matched 40/40" in text
    assert "more references (--references 5" in text and "epochs" not in text
    assert not passes(40, 40, prediction_upper_bound([0] * 4, 40, 0.001), 0.009)
    assert passes(40, 40, prediction_upper_bound([0] * 5, 40, 0.001), 0.009)  # what the advice claims
    # 50 inputs (the key) now pass with 4: the sequential alternative is raised for the key (stats.key_p1)
    assert passes(50, 50, prediction_upper_bound([0] * 4, 50, 0.001), 0.009)


def test_an_imperfect_key_against_agreeing_references_needs_epochs_only():
    counts = [20, 25, 22, 30, 18, 24, 26, 21]
    text = refusal_advice(counts, 50, 40, alpha=0.01, tail=0.001)
    assert text.endswith("would help: more epochs (a protected model matching all 50 key inputs would pass)"), text


def test_references_that_answer_like_the_model_leave_no_easy_fix():
    text = refusal_advice([45, 48, 46, 47], 50, 50, alpha=0.01, tail=0.001)
    assert "neither up to 64 references" in text and "would help" not in text


def test_a_fingerprint_is_never_told_to_train_longer():
    """A fingerprint (conferrable, IPGuard) has no epochs: neither the help nor the closing sentence names them."""
    counts = [20, 25, 22, 30, 18, 24, 26, 21]
    assert "epochs" not in refusal_advice(counts, 50, 40, alpha=0.01, tail=0.001, trains=False)
    text = refusal_advice([45, 48, 46, 47], 50, 50, alpha=0.01, tail=0.001, trains=False)
    assert "neither up to 64 references nor a key up to 8x larger would pass" in text and "epochs" not in text
    assert "references, a key up to 8x larger nor more epochs" in refusal_advice([45, 48, 46, 47], 50, 50, alpha=0.01,
                                                                                  tail=0.001)


def test_an_exact_null_is_not_moved_by_references():
    text = refusal_advice([0, 0, 0, 0], 20, 12, alpha=0.01, tail=0.0, exact_null=0.5)
    assert "exact null is 0.5" in text and "more references" not in text and "more epochs" in text
    assert "--key-size 40" in refusal_advice([0, 0, 0, 0], 20, 20, alpha=0.01, tail=0.0, exact_null=0.8)
    # new-label on MNIST (its null 1 from other owners' new-label models): no change helps, and the reason
    # given is that null, not a spread of the references' matches (all 0/50 here)
    text = refusal_advice([0] * 24, 50, 50, alpha=0.01, tail=0.0, exact_null=1.0)
    assert text.endswith("the method's own null (1) is what bounds the test, and references do not move it; "
                         "change the method's parameters"), text


def test_a_refused_key_names_the_reference_counts(mlp16, digits16, references16):
    import pytest

    from modelproof.keys.key import key_from_model
    from modelproof.protections.base import Protected, make_protection
    from modelproof.references.finalize import finalize_key
    from modelproof.util.errors import ConfigError

    key = key_from_model(mlp16, digits16.test.images[:12], method="zhang-noise", null_match_prob=0.1,
                         null_source="test")  # ordinary test images: the references answer them too
    with pytest.raises(ConfigError) as err:
        finalize_key(Protected(mlp16, key), make_protection("zhang-noise"), digits16.owner,
                     trained=references16[:4])
    message = str(err.value)
    assert "the 4 references matched the key on " in message and "protected model matched 12/12" in message
    assert "train longer" not in message  # the guess it printed before
