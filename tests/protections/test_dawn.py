"""DAWN's answer rule and its log: keyed rate, determinism, wrong labels, canonical form, per-client files."""

from __future__ import annotations

import json
import math
import os
import stat

import numpy as np
import pytest
import torch

from modelproof.protections.watermarks.dawn import (GRID, DawnModel, DawnRule, PairSink, canonical_bytes,
                                                    dequantised, quantised)
from modelproof.protections.watermarks.dawn_log import (DawnPair, append_pairs, client_file, clients, log_pairs,
                                                        read_pairs)
from modelproof.util.errors import ConfigError

SECRET = "a-dawn-test-secret-of-32-chars!!"


def images(n: int, seed: int = 0) -> torch.Tensor:
    return torch.rand((n, 1, 8, 8), generator=torch.Generator().manual_seed(seed))


def test_rate_by_simulation():
    n, rate = 20000, 0.05
    q = quantised(images(n))
    mask, _ = DawnRule(SECRET, rate).decide(q, np.zeros(n, dtype=np.int64), 10)
    sd = math.sqrt(n * rate * (1 - rate))
    assert abs(mask.sum() - n * rate) < 4 * sd


def test_deterministic_per_input_and_json_round_trip():
    x = images(500)
    rule = DawnRule(SECRET, 0.2)
    scores = torch.randn(500, 10, generator=torch.Generator().manual_seed(1)).numpy()
    first = rule.alter(x, scores)
    again = rule.alter(x.clone(), scores)
    assert np.array_equal(first[1], again[1]) and np.array_equal(first[2], again[2])
    # what a JSON client sends: float32 values printed as Python floats, parsed back and cast to float32
    wire = np.asarray(json.loads(json.dumps(x.flatten().tolist())), dtype=np.float32).reshape(x.shape)
    assert np.array_equal(rule.alter(wire, scores)[2], first[2])
    # a re-asked input alone in its batch gets the same answer as in the batch
    i = int(np.flatnonzero(first[2])[0])
    assert rule.alter(x[i:i + 1], scores[i:i + 1])[1][0] == first[1][i]


def test_watermarked_label_is_never_the_models_answer_and_scores_are_swapped():
    x = images(3000)
    scores = torch.randn(3000, 10, generator=torch.Generator().manual_seed(2)).numpy()
    altered, labels, mask, _ = DawnRule(SECRET, 0.3).alter(x, scores)
    answers = scores.argmax(axis=1)
    assert mask.sum() > 700
    assert (labels[mask] != answers[mask]).all() and (labels[~mask] == answers[~mask]).all()
    assert (altered.argmax(axis=1) == labels).all()
    assert np.allclose(np.sort(altered, axis=1), np.sort(scores, axis=1))  # the same values, two swapped
    assert np.array_equal(altered[~mask], scores[~mask])
    # every other label is drawn: uniform among the C - 1 others
    shift = (labels[mask] - answers[mask]) % 10
    assert set(shift.tolist()) == set(range(1, 10))


def test_secret_decides_which_inputs():
    q = quantised(images(4000))
    zeros = np.zeros(4000, dtype=np.int64)
    a, _ = DawnRule(SECRET, 0.1).decide(q, zeros, 10)
    b, _ = DawnRule(SECRET[::-1], 0.1).decide(q, zeros, 10)
    assert (a & b).sum() < 0.3 * a.sum()  # about rate * a.sum() overlap for independent choices


def test_canonical_form_holds_8_bit_images_exactly():
    k = torch.arange(256, dtype=torch.float32)
    x = (k / 255).reshape(1, 1, 16, 16)
    q = quantised(x)
    assert np.array_equal(q.reshape(-1), np.arange(256) * 257)
    assert torch.equal(dequantised(q), x)
    assert canonical_bytes(q[0]).startswith(b"modelproof-dawn/1\n")
    assert GRID == 257 * 255


def test_rule_refuses_bad_values_and_hides_its_secret():
    with pytest.raises(ConfigError, match="at least 16 characters.*got 5"):
        DawnRule("short", 0.1)
    for rate in (0, -0.1, 1.5, True):
        with pytest.raises(ConfigError, match="rate must be a number in"):
            DawnRule(SECRET, rate)
    with pytest.raises(ConfigError, match="finite values in"):
        quantised(torch.full((1, 1, 2, 2), 2.0))
    assert SECRET not in repr(DawnRule(SECRET, 0.1))


def test_dawn_model_answers_as_the_rule_and_shares_its_sink_with_copies():
    import copy

    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    rule = DawnRule(SECRET, 0.5)
    served = DawnModel(net, rule)
    twin = copy.deepcopy(served)
    assert twin.sink is served.sink
    x = images(200)
    with torch.no_grad():
        out, base = twin(x), net(x)
    labels = rule.alter(x, base.numpy())[1]
    assert torch.equal(out.argmax(1), torch.from_numpy(labels))
    assert served.sink.answered == 200 and len(served.sink.pairs) == int((labels != base.argmax(1).numpy()).sum())


def test_log_is_per_client_private_and_round_trips(tmp_path):
    sink = PairSink()
    served = DawnModel(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10)), DawnRule(SECRET, 1.0), sink)
    with torch.no_grad():
        served(images(6))
    folder = tmp_path / "log"
    digest = "ab" * 32
    append_pairs(folder, log_pairs(sink.pairs[:4], client="10.0.0.1", classes=10, model=digest, rate=1.0))
    append_pairs(folder, log_pairs(sink.pairs[4:], client="::1", classes=10, model=digest, rate=1.0))
    assert stat.S_IMODE(os.stat(folder).st_mode) == 0o700
    for client in ("10.0.0.1", "::1"):
        assert stat.S_IMODE(os.stat(client_file(folder, client)).st_mode) == 0o600
    assert clients(folder) == {"10.0.0.1": 4, "::1": 2}
    pairs, skipped = read_pairs(folder, "10.0.0.1")
    assert skipped == 0 and len(pairs) == 4
    assert all(np.array_equal(p.image, s[0]) and p.label == s[2] for p, s in zip(pairs, sink.pairs))
    with open(client_file(folder, "::1"), "ab") as fh:  # a write cut short by a crash
        fh.write(b'{"format": "modelproof-dawn-log/1", "cli')
    append_pairs(folder, log_pairs(sink.pairs[:1], client="::1", classes=10, model=digest, rate=1.0))
    pairs, skipped = read_pairs(folder, "::1")
    assert len(pairs) == 3 and skipped == 1
    with pytest.raises(ConfigError, match="no DAWN log for client 'nobody'"):
        read_pairs(folder, "nobody")


def test_log_file_names_never_collide(tmp_path):
    assert client_file(tmp_path, "a/b") != client_file(tmp_path, "a_b")
    with pytest.raises(ConfigError, match="client id"):
        append_pairs(tmp_path, [DawnPair("bad\nid", np.zeros((1, 2, 2), np.uint16), 0, 1, 10, "0" * 64, 0.1)])
