"""The verdict warns when the suspect's answers on the key are (nearly) one label; the decision stays the test's."""

from __future__ import annotations

import torch

from modelproof.keys.key import OwnershipKey
from modelproof.verification.report import summary
from modelproof.verification.verifier import concentration_warning, verify


class Answers:
    """A suspect that answers ``answer(i)`` for the i-th distinct key input (inputs carry their index)."""

    num_classes, input_shape, identity = 10, (1, 4, 4), "fake:answers"

    def __init__(self, answer) -> None:
        self.answer = answer

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        return torch.tensor([self.answer(round(1000 * float(x[0, 0, 0]))) for x in images], dtype=torch.int64)


def key(labels: list[int]) -> OwnershipKey:
    inputs = torch.zeros(len(labels), 1, 4, 4)
    inputs[:, 0, 0, 0] = torch.arange(len(labels), dtype=torch.float32) / 1000  # each input names its index
    return OwnershipKey(inputs=inputs, labels=torch.tensor(labels), method="test-trigger", params={},
                        num_classes=10, input_shape=(1, 4, 4), null_match_prob=0.1, null_source="1/10: test",
                        model_digest="0" * 64)


def test_a_collapsed_suspect_owned_on_a_one_target_key_is_flagged():
    """A student that answers 7 for everything is "owned" on a key whose targets are all 7: exact, but misleading."""
    verdict = verify(key([7] * 60), Answers(lambda i: 7), alpha=0.01)
    assert verdict.decision == "owned" and verdict.matches == 60  # the decision is the exact test's, unchanged
    assert verdict.top_answer_share == 1.0
    assert "(nearly) one label: label 7 for 60 of 60 (100%)" in verdict.warning
    assert "collapsed student" in verdict.warning and "accuracy on ordinary inputs" in verdict.warning
    assert f"warning:  {verdict.warning}" in summary(verdict).splitlines()
    assert verdict.to_dict()["warning"] == verdict.warning


def test_a_working_copy_on_a_varied_key_is_not_flagged_and_a_concentrated_one_is():
    labels = [i % 10 for i in range(60)]
    copy = verify(key(labels), Answers(lambda i: labels[i]), alpha=0.01)
    assert copy.decision == "owned" and copy.warning is None and copy.top_answer_share == 0.1
    assert "warning" not in summary(copy)
    # answers 3 for 42 of 60 inputs (70%) while the key labels 10% of them 3: concentrated; the other 20 answers
    # match, so the exact test still says owned (24 of 60 at null 0.1), and the verdict says why to look closer
    biased = verify(key(labels), Answers(lambda i: 3 if i < 40 else labels[i]), alpha=0.01)
    assert biased.decision == "owned" and "concentrated on one class: label 3 for 42 of 60" in biased.warning
    assert "match the 10% of the key labelled 3" in biased.warning


def test_thresholds_and_small_samples():
    seven = torch.tensor([7] * 10)
    # a watermarked model that learnt 60% of a one-target key answers 7 no more often than the key says: no warning
    share, warning = concentration_warning(torch.tensor([7] * 6 + [1, 2, 3, 4]), seven)
    assert share == 0.6 and warning is None
    assert concentration_warning(torch.tensor([7] * 9 + [1]), seven)[1] is not None  # 90%: one label
    assert concentration_warning(torch.tensor([7] * 9), torch.tensor([7] * 9)) == (None, None)  # fewer than 10
    # a sequential run that stops early still warns on what it asked
    verdict = verify(key([7] * 60), Answers(lambda i: 7), alpha=0.01, mode="sequential")
    assert verdict.queries < 60 and verdict.warning is not None
