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


def counting_draw(labels_per_round):
    """A draw returning, per round, candidates labelled as given (inputs: their round and position)."""
    calls = []

    def draw(round_: int, count: int) -> dict:
        calls.append((round_, count))
        labels = torch.tensor(labels_per_round[round_][:count], dtype=torch.int64)
        inputs = torch.arange(len(labels), dtype=torch.float32).view(-1, 1, 1, 1) / 10 + round_
        return {"inputs": inputs, "labels": labels, "score": torch.arange(len(labels))}
    return draw, calls


def test_choose_draws_oversample_times_the_missing_inputs_until_enough_survive():
    selection = Selection(judges(0), oversample=2)  # the judge answers 0: candidates labelled 0 are dropped
    draw, calls = counting_draw([[0, 1, 0, 1, 0, 0], [1, 1, 1, 1, 1, 1]])
    chosen, record = selection.choose("m", 3, draw, default_oversample=9, rule="r")
    assert calls == [(0, 6), (1, 2)]  # 2 survived the first round, 2 x 1 more were drawn
    assert chosen["labels"].tolist() == [1, 1, 1] and record["tried"] == 8 and record["kept"] == 4
    assert record["oversample"] == 2 and record["rounds"] == 2 and record["references"] == ["digest-0"]


def test_choose_prefers_the_largest_value_when_asked():
    draw, _ = counting_draw([[1, 1, 1, 1]])
    chosen, _ = Selection(judges(0)).choose("m", 2, draw, default_oversample=2, rule="r", prefer="score")
    assert chosen["score"].tolist() == [3, 2]


def test_choose_refuses_with_the_counts_when_too_few_survive():
    draw, calls = counting_draw([[0, 1]] + [[0]] * 6 + [[1]])  # at most 4 x 1 x 2 = 8 candidates are tried
    with pytest.raises(ConfigError, match=r"m: only 1 of 8 candidates survived .* in 7 draw\(s\).* needs 2: raise "
                                          r"--oversample \(now 1\)"):
        Selection(judges(0), oversample=1).choose("m", 2, draw, default_oversample=4, rule="r")
    assert len(calls) == 7


def test_choose_drops_an_input_found_twice():
    def draw(round_: int, count: int) -> dict:
        return {"inputs": torch.zeros(count, 1, 1, 1), "labels": torch.ones(count, dtype=torch.int64)}
    with pytest.raises(ConfigError, match="only 1 of"):
        Selection(judges(0)).choose("m", 2, draw, default_oversample=2, rule="r")
