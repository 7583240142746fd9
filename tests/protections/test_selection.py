"""The Selection judges: counting which judges answer each candidate with its key label."""

import pytest
import torch

from modelproof.protections.selection import MAX_CANDIDATES, Judge, Selection, budget, projected_candidates
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


def test_choose_draws_oversample_times_the_key_then_what_the_measured_yield_says_is_missing():
    selection = Selection(judges(0), oversample=2)  # the judge answers 0: candidates labelled 0 are dropped
    draw, calls = counting_draw([[0, 1, 0, 1, 0, 0], [1, 1, 1, 1, 1, 1]])
    chosen, record = selection.choose("m", 3, draw, default_oversample=9, rule="r")
    # 2 of 6 survived: 1 missing at a yield of 1 in 3 is 3 candidates, a tenth to spare: 4 (2 x 1 would be 2)
    assert calls == [(0, 6), (1, 4)]
    assert chosen["labels"].tolist() == [1, 1, 1] and record["tried"] == 10 and record["kept"] == 6
    assert record["oversample"] == 2 and record["rounds"] == 2 and record["references"] == ["digest-0"]
    assert record["budget"] == 3 * MAX_CANDIDATES


def periodic_draw(period: int):
    """An endless draw: candidate number t (over all draws) is labelled 1 when t % period == 0, else 0."""
    calls, drawn = [], [0]

    def draw(round_: int, count: int) -> dict:
        calls.append(count)
        index = torch.arange(drawn[0], drawn[0] + count)
        drawn[0] += count
        return {"inputs": index.float().view(-1, 1, 1, 1), "labels": (index % period == 0).long()}
    return draw, calls


def test_choose_goes_past_the_former_fixed_cap_while_the_yield_fills_the_key_within_the_budget():
    """Yield 1 in 40 with oversample 4: the former cap (4 x 4 x 10 = 160 candidates) kept 4 of 10 and
    refused; the yield-driven search fills the key within MAX_CANDIDATES x 10."""
    draw, calls = periodic_draw(40)
    chosen, record = Selection(judges(0), oversample=4).choose("m", 10, draw, default_oversample=9, rule="r")
    assert chosen["labels"].tolist() == [1] * 10 and len(set(chosen["inputs"].flatten().tolist())) == 10
    assert 160 < record["tried"] <= 1.2 * 400 and record["tried"] <= budget(10, 4)
    assert calls == [40, 40, 80, 160, 88]  # each draw at most what was tried; the last what 1 in 40 leaves


def test_choose_refuses_long_before_the_budget_when_nothing_survives():
    """Nothing survives: once the optimistic yield (99% bound on 0 of those tried) projects more than the
    budget of 512 x 100 candidates, the search refuses; doubling its draws, it has tried 3,200, not 51,200."""
    calls = []

    def draw(round_: int, count: int) -> dict:
        calls.append(count)
        return {"inputs": torch.rand(count, 1, 2, 2), "labels": torch.zeros(count, dtype=torch.int64)}
    with pytest.raises(ConfigError, match=r"m: only 0 of 3,200 candidates survived .* in 4 draw\(s\).* needs 100: "
                                          r"measured yield none; filling the key would take about [\d,]+ "
                                          r"candidates .* over the budget of 51,200 \(512 per key input\); raise "
                                          r"--oversample \(now 4\) above 128"):
        Selection(judges(0), oversample=4).choose("m", 100, draw, default_oversample=9, rule="r")
    assert calls == [400, 400, 800, 1600]


def test_projection_is_optimistic_and_the_budget_grows_with_an_explicit_oversample():
    assert projected_candidates(10, 100, 10) == 100.0
    assert 100 < projected_candidates(5, 100, 10) < 200  # the 99% upper bound on 1 in 20 is above 1 in 20
    assert projected_candidates(0, 100, 1) > 100 and projected_candidates(0, 10**6, 1) < float("inf")
    assert budget(100, 32) == 100 * MAX_CANDIDATES and budget(100, 256) == 100 * 4 * 256


def test_choose_prefers_the_largest_value_when_asked():
    draw, _ = counting_draw([[1, 1, 1, 1]])
    chosen, _ = Selection(judges(0)).choose("m", 2, draw, default_oversample=2, rule="r", prefer="score")
    assert chosen["score"].tolist() == [3, 2]


def test_choose_refuses_with_the_counts_when_the_candidates_run_out():
    draw, calls = counting_draw([[0, 1], [0], []])
    with pytest.raises(ConfigError, match=r"m: only 1 of 3 candidates survived .* in 3 draw\(s\).* needs 2: "
                                          r"measured yield 1 in 3; the candidates ran out"):
        Selection(judges(0), oversample=1).choose("m", 2, draw, default_oversample=4, rule="r")
    assert len(calls) == 3


def test_choose_drops_an_input_found_twice():
    def draw(round_: int, count: int) -> dict:
        return {"inputs": torch.zeros(count, 1, 1, 1), "labels": torch.ones(count, dtype=torch.int64)}
    with pytest.raises(ConfigError, match="only 1 of"):
        Selection(judges(0)).choose("m", 2, draw, default_oversample=2, rule="r")


def test_partial_spends_the_budget_and_returns_the_survivors_it_found():
    """Yield 1 in 40 with a budget of 4 x 40 = 160 candidates for 10 inputs: without ``partial`` refused;
    with it the search tries all 160 (the projection does not stop it) and returns the 4 survivors."""
    with pytest.raises(ConfigError, match="only 4 of 160"):
        Selection(judges(0), oversample=4).choose("m", 10, periodic_draw(40)[0], default_oversample=9,
                                                  rule="r", per_input=16)
    draw, calls = periodic_draw(40)
    chosen, record = Selection(judges(0), oversample=4).choose("m", 10, draw, default_oversample=9, rule="r",
                                                               per_input=16, partial=True)
    assert chosen["labels"].tolist() == [1] * 4 and record["tried"] == sum(calls) == 160
    assert record["kept"] == 4 and record["budget"] == 160


def test_partial_with_no_survivor_is_still_refused():
    def draw(round_: int, count: int) -> dict:
        return {"inputs": torch.rand(count, 1, 2, 2), "labels": torch.zeros(count, dtype=torch.int64)}
    with pytest.raises(ConfigError, match="only 0 of 80 candidates"):
        Selection(judges(0)).choose("m", 5, draw, default_oversample=4, rule="r", per_input=16, partial=True)


def test_a_smaller_per_input_budget_refuses_sooner():
    assert budget(10, 4, per_input=16) == 160 and budget(10, 8, per_input=16) == 320
    with pytest.raises(ConfigError, match=r"over the budget of 160 \(16 per key input\)"):
        Selection(judges(0), oversample=4).choose("m", 10, periodic_draw(1000)[0], default_oversample=9,
                                                  rule="r", per_input=16)
