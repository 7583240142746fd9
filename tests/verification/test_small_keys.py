"""A key too small for the default sequential alternative (issue 22.3: make the refusal rare): p1 is raised
from the key's size and level, so a key that proves its model in the fixed test proves it sequentially too."""

from __future__ import annotations

import torch

from modelproof.keys.key import OwnershipKey
from modelproof.protections.base import Protected
from modelproof.verification.selfcheck import self_check
from modelproof.verification.stats import default_p1
from modelproof.verification.verifier import can_prove, verify


class Answers:
    """A suspect that gives the key's labels except to the key inputs numbered in ``misses``."""

    num_classes, input_shape, identity = 10, (1, 4, 4), "fake:answers"

    def __init__(self, labels: torch.Tensor, misses: set[int] = frozenset()) -> None:
        self.labels, self.misses = labels, misses

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        index = [round(1000 * float(x[0, 0, 0])) for x in images]
        return torch.tensor([(int(self.labels[i]) + 1) % 10 if i in self.misses else int(self.labels[i])
                             for i in index], dtype=torch.int64)


def small_key(n: int = 69, null: float = 0.897) -> OwnershipKey:
    """The Keras CNN conferrable key of 6 December in shape: 69 inputs at a calibrated null of 0.897."""
    inputs = torch.zeros(n, 1, 4, 4)
    inputs[:, 0, 0, 0] = torch.arange(n, dtype=torch.float32) / 1000  # each input names its index
    return OwnershipKey(inputs=inputs, labels=torch.arange(n) % 10, method="test-fingerprint", params={},
                        num_classes=10, input_shape=(1, 4, 4), null_match_prob=null, null_source=f"{null}: test",
                        model_digest="0" * 64)


def test_a_small_key_with_a_high_null_proves_a_full_match_in_both_modes():
    key = small_key()
    assert can_prove(key, 0.01, "fixed") and can_prove(key, 0.01, "sequential")
    assert not can_prove(key, 0.01, "sequential", p1=default_p1(0.897))  # what refused such keys before
    copy = Answers(key.labels)
    fixed, sequential = verify(key, copy), verify(key, copy, mode="sequential")
    assert fixed.decision == sequential.decision == "owned" and sequential.queries == 69
    assert default_p1(0.897) < sequential.p1 <= 0.99 and sequential.e_value >= 100
    # one miss: still owned by the exact test (p 0.005), no longer by the sequential one, which loses more per miss
    missed = Answers(key.labels, {5})
    assert verify(key, missed).decision == "owned"
    assert verify(key, missed, mode="sequential").decision == "not owned"


def test_the_self_check_accepts_such_a_key_and_still_refuses_one_too_small_for_any_p1():
    class Model(torch.nn.Module):
        """Answers each key input with its label (a protected model that learnt its key)."""

        num_classes, input_shape = 10, (1, 4, 4)

        def __init__(self, key):
            super().__init__()
            self.register_buffer("labels", key.labels.clone())

        def forward(self, x):
            return torch.nn.functional.one_hot(self.labels[(1000 * x[:, 0, 0, 0]).round().long()], 10).float()

    key = small_key()
    assert self_check(Protected(model=Model(key), key=key), key) == []
    tiny = small_key(n=20, null=0.97)  # a full match: 0.97^20 = 0.54; no p1 up to 0.99 reaches 1/alpha either
    problems = self_check(Protected(model=Model(tiny), key=tiny), tiny)
    assert [p.split(":")[0] for p in problems] == ["fixed", "sequential"]
