"""The Selection judges: counting which judges answer each candidate with its key label."""

import pytest
import torch

from modelproof.protections.selection import Judge, Selection
from modelproof.util.errors import ConfigError


class Constant:
    """A suspect answering one label for every input."""

    def __init__(self, label: int):
        self.label = label

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        return torch.full((images.shape[0],), self.label, dtype=torch.long)


def judges(*labels: int) -> tuple[Judge, ...]:
    return tuple(Judge(f"constant {label}", f"digest-{i}", Constant(label)) for i, label in enumerate(labels))


def test_answers_counts_the_judges_that_give_each_label():
    selection = Selection(judges(1, 1, 2))
    inputs = torch.zeros(4, 1, 4, 4)
    labels = torch.tensor([1, 2, 3, 1])
    assert selection.answers(inputs, labels).tolist() == [2, 1, 0, 2]
    assert selection.unanswered(inputs, labels).tolist() == [False, False, True, False]


def test_record_names_the_rule_counts_and_digests_but_no_inputs():
    record = Selection(judges(0, 5)).record("unanswered", tried=40, kept=10)
    assert record == {"rule": "unanswered", "tried": 40, "kept": 10, "references": ["digest-0", "digest-1"]}


@pytest.mark.parametrize("oversample", [0, -3, True])
def test_bad_oversample_is_refused_with_the_value(oversample):
    with pytest.raises(ConfigError, match="oversample"):
        Selection(judges(0), oversample=oversample)


def test_no_judges_is_refused():
    with pytest.raises(ConfigError, match="at least one"):
        Selection(())


def test_mismatched_labels_are_an_error():
    with pytest.raises(ValueError, match="3 inputs but 2 labels"):
        Selection(judges(0)).answers(torch.zeros(3, 1, 2, 2), torch.tensor([0, 1]))
