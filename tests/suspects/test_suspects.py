"""Suspect adapters (torch, ONNX, scikit-learn) and the QueriedSuspect wrapper: counts, budget, query log, resume."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch

from modelproof.util.errors import ConfigError, ModelFileError, SuspectError
from modelproof.models.modelfile import export_onnx, save_model, weights_digest
from modelproof.suspects.base import BudgetExhausted, Suspect
from modelproof.suspects.local import OnnxSuspect, SklearnSuspect, TorchSuspect, open_suspect, train_random_forest
from modelproof.suspects.queried import QueriedSuspect
from modelproof.models.training import predict


class Fake:
    """A suspect that answers ``answer(x)`` (default: label 0 or 1 from the first pixel) and counts its calls."""

    def __init__(self, answer=None, num_classes: int = 10, input_shape=(1, 8, 8)):
        self.num_classes, self.input_shape, self.identity = num_classes, input_shape, "fake:1"
        self.answer = answer or (lambda x: (x[:, 0, 0, 0] > 0.5).long())
        self.calls: list[int] = []

    def predict(self, images):
        self.calls.append(len(images))
        return self.answer(images)


def rand(n: int, seed: int = 0, shape=(1, 8, 8)) -> torch.Tensor:
    return torch.rand((n, *shape), generator=torch.Generator().manual_seed(seed))


def test_torch_suspect_matches_the_model(trained_cnn, digits):
    x = digits.test.images
    s = TorchSuspect(trained_cnn, batch_size=100)
    assert isinstance(s, Suspect)
    assert torch.equal(s.predict(x), predict(trained_cnn, x))
    assert s.num_classes == 10 and s.input_shape == (1, 8, 8)
    assert s.identity == f"torch:CNN:sha256:{weights_digest(trained_cnn)}"
    trained_cnn.train()
    s.predict(x[:4])
    assert trained_cnn.training  # the caller's mode is restored
    trained_cnn.eval()


def test_torch_suspect_needs_a_shape_for_plain_modules():
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 3))
    with pytest.raises(ConfigError, match="input_shape"):
        TorchSuspect(net)
    s = TorchSuspect(net, input_shape=(1, 8, 8))
    assert s.num_classes == 3 and s.predict(rand(5)).shape == (5,)


def test_onnx_suspect_matches_the_model(trained_cnn, digits, tmp_path):
    path = export_onnx(trained_cnn, tmp_path / "cnn.onnx")
    s = OnnxSuspect(path, batch_size=64)
    assert s.input_shape == (1, 8, 8) and s.num_classes == 10
    assert s.identity == "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
    x = digits.test.images
    assert torch.equal(s.predict(x), predict(trained_cnn, x))
    with pytest.raises(ConfigError, match="disagrees"):
        OnnxSuspect(path, input_shape=(3, 8, 8))
    (tmp_path / "junk.onnx").write_bytes(b"not onnx")
    with pytest.raises(ModelFileError, match="not a loadable ONNX"):
        OnnxSuspect(tmp_path / "junk.onnx")


def test_random_forest_suspect(digits):
    s = train_random_forest(digits.owner, n_trees=20, seed=0)
    assert isinstance(s, SklearnSuspect) and s.num_classes == 10 and s.input_shape == (1, 8, 8)
    x = digits.test.images
    want = s.estimator.predict(x.reshape(len(x), -1).numpy())
    got = s.predict(x)
    assert got.dtype == torch.int64 and np.array_equal(got.numpy(), want)
    assert float((got == digits.test.labels).float().mean()) > 0.85
    assert torch.equal(train_random_forest(digits.owner, n_trees=20, seed=0).predict(x), got)  # seeded
    assert s.identity.startswith("sklearn:RandomForestClassifier(")


def test_sklearn_suspect_refuses_unfitted():
    from sklearn.ensemble import RandomForestClassifier

    with pytest.raises(ConfigError, match="not fitted"):
        SklearnSuspect(RandomForestClassifier(), (1, 8, 8), 10)


def test_open_suspect_by_file_type(trained_cnn, digits, tmp_path):
    model = save_model(trained_cnn, tmp_path / "m.safetensors")
    onnx = export_onnx(trained_cnn, tmp_path / "m.onnx")
    x = digits.test.images[:50]
    for path in (model, onnx):
        s = open_suspect(path)
        assert s.identity == "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
        assert torch.equal(s.predict(x), predict(trained_cnn, x))
    with pytest.raises(ConfigError, match="expected a .safetensors"):
        open_suspect(tmp_path / "m.pt")
    with pytest.raises(ConfigError, match="unknown option"):
        open_suspect(onnx, colour="red")
    with pytest.raises(ModelFileError, match="not found"):
        open_suspect(tmp_path / "missing.onnx")


def test_queried_suspect_counts_and_checks_inputs():
    fake = Fake()
    q = QueriedSuspect(fake, chunk_size=4)
    assert q.num_classes == 10 and q.input_shape == (1, 8, 8) and q.identity == "fake:1"
    x = rand(10)
    assert torch.equal(q.predict(x), (x[:, 0, 0, 0] > 0.5).long())
    assert q.queries == 10 and q.replayed == 0 and fake.calls == [4, 4, 2] and len(q.log) == 10
    for bad, msg in ((x.double(), "float32"), (rand(2, shape=(1, 8, 7)), "shape"), (x * 2, r"\[0, 1\]"),
                     (x.clone().fill_(float("nan")), "NaN"), (x.numpy(), "torch.Tensor")):
        with pytest.raises(ConfigError, match=msg):
            q.predict(bad)
    assert q.queries == 10 and sum(fake.calls) == 10


def test_queries_inside_a_loop_with_a_total_do_not_advance_it():
    """Queries asked inside a loop's phase (an extraction student's training) are a shown value, not its steps."""
    from modelproof.util import progress

    q = QueriedSuspect(Fake(), chunk_size=4)
    with progress.task("modelproof attack extract", quiet=True) as t:
        with progress.progress_bar(2, "training student") as bar:
            q.predict(rand(10))
            bar(1)
            assert (t.steps, t.total, t.fields["queries"]) == (1, 2, 10)


@pytest.mark.parametrize("answer, msg", [
    (lambda x: torch.zeros(len(x) - 1, dtype=torch.long), "shape"),
    (lambda x: torch.full((len(x),), 10), "outside"),
    (lambda x: torch.full((len(x),), -1), "outside"),
    (lambda x: torch.full((len(x),), float("nan")), "NaN"),
    (lambda x: torch.zeros(len(x)), "dtype"),
    (lambda x: [0] * len(x), "list"),
])
def test_malformed_answers_are_errors(answer, msg):
    q = QueriedSuspect(Fake(answer))
    with pytest.raises(SuspectError, match=msg):
        q.predict(rand(3))
    assert q.queries == 0 and q.log == []


def test_budget_is_enforced_before_asking():
    fake = Fake()
    q = QueriedSuspect(fake, budget=10)
    q.predict(rand(6))
    assert q.remaining == 4
    with pytest.raises(BudgetExhausted, match="nothing was asked"):
        q.predict(rand(5, seed=1))
    assert fake.calls == [6] and q.queries == 6
    q.predict(rand(4, seed=2))
    assert q.remaining == 0
    with pytest.raises(BudgetExhausted):
        q.predict(rand(1, seed=3))
    assert isinstance(BudgetExhausted("x"), SuspectError)
    with pytest.raises(ConfigError):
        QueriedSuspect(fake, budget=-1)


def test_query_log_holds_digests_never_inputs(tmp_path):
    log = tmp_path / "q.jsonl"
    x = rand(5)
    q = QueriedSuspect(Fake(), log_path=log)
    labels = q.predict(x)
    header, *lines = log.read_text().splitlines()
    assert json.loads(header)["format"] == "modelproof-query-log" and len(lines) == 5
    for i, line in enumerate(lines):
        rec = json.loads(line)
        assert set(rec) == {"n", "time", "suspect", "model", "input_sha256", "label", "prev"}
        assert rec["input_sha256"] == hashlib.sha256(x[i].numpy().astype("<f4").tobytes()).hexdigest()
        assert rec["label"] == int(labels[i]) and rec["suspect"] == "fake:1" and rec["time"].endswith("+00:00")
    assert all(not isinstance(v, (list, float)) for line in lines for v in json.loads(line).values())
    assert len(log.read_bytes()) < 300 * 6  # digests and labels only, no pixels
    assert q.log == [json.loads(line) for line in lines]


def test_resume_replays_the_log_without_asking(tmp_path):
    log = tmp_path / "q.jsonl"
    x = rand(20)
    first = QueriedSuspect(Fake(), log_path=log, chunk_size=8)
    want = first.predict(x[:12])
    first.close()
    fake = Fake()
    again = QueriedSuspect(fake, log_path=log, budget=20)
    assert torch.equal(again.predict(x[:12]), want)  # re-asked (all 12: fewer than 20 logged), then replayed
    assert again.queries == 0 and again.replayed == 12 and again.rechecked == 12 and fake.calls == [12]
    again.predict(x)  # the 8 unanswered ones are asked, the 12 replayed
    assert again.queries == 8 and again.replayed == 24 and fake.calls == [12, 8]
    assert again.remaining == 0 and len(log.read_text().splitlines()) == 1 + 12 + 20
    again.close()
    with pytest.raises(BudgetExhausted):  # the budget spans runs: 12 + 8 already sent (re-asks not charged)
        QueriedSuspect(Fake(), log_path=log, budget=20).predict(rand(1, seed=9))


def test_truncated_last_line_is_ignored_and_repaired(tmp_path):
    log = tmp_path / "q.jsonl"
    x = rand(4)
    QueriedSuspect(Fake(), log_path=log).predict(x)
    raw = log.read_bytes()
    log.write_bytes(raw[:-30])  # a kill in the middle of the last write
    fake = Fake()
    q = QueriedSuspect(fake, log_path=log)
    assert len(q.log) == 3
    q.predict(x)
    assert fake.calls == [3, 1] and q.replayed == 3  # 3 re-asked, then replayed; 1 asked
    q.close()
    resumed = QueriedSuspect(Fake(), log_path=log)
    assert len(resumed.log) == 4 and all(json.loads(line) for line in log.read_text().splitlines())


def test_bad_logs_are_refused(tmp_path):
    log = tmp_path / "q.jsonl"
    QueriedSuspect(Fake(), log_path=log).predict(rand(3))
    other = Fake()
    other.identity = "fake:2"
    with pytest.raises(ConfigError, match="belongs to another model or key: it was made with 'fake:1', this run asks 'fake:2'"):
        QueriedSuspect(other, log_path=log)
    keyed = tmp_path / "k.jsonl"
    QueriedSuspect(Fake(), log_path=keyed, key_digest="a" * 64).predict(rand(2))
    assert QueriedSuspect(Fake(), log_path=keyed, key_digest="a" * 64).replayed == 0  # same model and key: resumes
    with pytest.raises(ConfigError, match=r"made with key aaaaaaaaaaaa\.\.\., this run uses key bbbbbbbbbbbb"):
        QueriedSuspect(Fake(), log_path=keyed, key_digest="b" * 64)
    lines = log.read_text().splitlines()
    log.write_text("\n".join([lines[0], "{garbage", lines[2]]) + "\n")
    with pytest.raises(ConfigError, match="line 2 is not a JSON record"):
        QueriedSuspect(Fake(), log_path=log)


def test_a_failing_chunk_keeps_the_answered_ones(tmp_path):
    def answer(x):
        if len(calls) > 1:
            raise SuspectError("endpoint gone")
        return torch.zeros(len(x), dtype=torch.long)

    fake = Fake(answer)
    calls = fake.calls
    q = QueriedSuspect(fake, log_path=tmp_path / "q.jsonl", chunk_size=5)
    with pytest.raises(SuspectError, match="gone"):
        q.predict(rand(12))
    q.close()
    assert q.queries == 5 and len(QueriedSuspect(Fake(), log_path=tmp_path / "q.jsonl").log) == 5


def test_queried_torch_suspect_end_to_end(trained_cnn, digits, tmp_path):
    x = digits.test.images[:100]
    q = QueriedSuspect(TorchSuspect(trained_cnn), budget=100, log_path=tmp_path / "q.jsonl")
    assert torch.equal(q.predict(x), predict(trained_cnn, x)) and q.queries == 100
