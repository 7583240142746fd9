"""verify() and calibrate() on real small digit models, budgets, input checks, and resume after a kill."""

import dataclasses
import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import torch
from scipy.stats import binom
from scipy.stats import t as student_t

from modelproof.util.errors import ConfigError, SuspectError
from modelproof.keys.key import key_from_model
from modelproof.keys.container import save_key
from modelproof.models.modelfile import save_model
from modelproof.references.calibration import TAIL, Reference, calibrate
from modelproof.models.modelfile import weights_digest
from modelproof.verification.stats import decision_threshold, key_p1
from modelproof.keys.nulls import prediction_upper_bound
from modelproof.suspects.queried import QueriedSuspect
from modelproof.suspects.local import TorchSuspect
from modelproof.models.training import TrainConfig, predict, train_new
from modelproof.verification.verifier import can_prove, key_order, verify
from modelproof.verification.verifier import test_level as level_of

QUICK = TrainConfig(epochs=10, batch_size=32, lr=0.002, optimizer="adam")


def blends(images: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """Half-and-half mixtures of two digits: inputs near the decision boundaries."""
    gen = torch.Generator().manual_seed(seed)
    i, j = torch.randint(0, len(images), (2, n), generator=gen)
    return 0.5 * images[i] + 0.5 * images[j]


@pytest.fixture(scope="module")
def others(digits):
    """Five digit CNNs trained independently of ``trained_cnn`` (other seeds): four references, one suspect."""
    return [train_new("cnn", digits.owner, QUICK, seed=s)[0] for s in (1, 2, 3, 4, 5)]


@pytest.fixture(scope="module")
def key(trained_cnn, digits):
    """200 blended inputs labelled by the protected model, with the paper's null 1/2 (not yet calibrated)."""
    return key_from_model(trained_cnn, blends(digits.test.images, 200, seed=5), method="blend-fingerprint",
                          params={"mix": 0.5}, null_match_prob=0.5, null_source="1/2: the paper's null model")


def refs(models):
    return [Reference(TorchSuspect(m), f"cnn-{i}", "cnn", weights_digest(m)) for i, m in enumerate(models)]


# Four references carry a tail of 1e-3 (the default 1e-4 is sized for a population of 24: with df 3 its Student-t
# quantile is 22 and the bound is 1, so nothing could be owned). The tests below are about the mechanics.
SMALL_TAIL = 1e-3


@pytest.fixture(scope="module")
def calibrated(key, others):
    return calibrate(key, refs(others[:4]), tail=SMALL_TAIL)


def test_calibration_bounds_the_null_across_models(key, others, calibrated):
    counts = [int((predict(m, key.inputs) == key.labels).sum()) for m in others[:4]]
    cal = calibrated.params["calibration"]
    assert [r["matches"] for r in cal["references"]] == counts
    assert calibrated.null_match_prob == pytest.approx(prediction_upper_bound(counts, 200, SMALL_TAIL))
    assert calibrated.null_match_prob > max(counts) / 200  # above every reference: it bounds the spread
    assert cal["tail"] == SMALL_TAIL and cal["previous_null_match_prob"] == 0.5 and cal["kinds"] == ["cnn"]
    assert [r["name"] for r in cal["references"]] == ["cnn-0", "cnn-1", "cnn-2", "cnn-3"]
    assert "prediction bound" in calibrated.null_source and "4 independent" in calibrated.null_source
    assert calibrated.params["mix"] == 0.5 and calibrated.digest() != key.digest()
    # no wall-clock time in the record: the same key and references give the same key, digest and query order
    assert calibrate(key, refs(others[:4]), tail=SMALL_TAIL).digest() == calibrated.digest()
    with pytest.raises(ConfigError, match="at least 4"):
        calibrate(key, refs(others[:3]))


def test_dependent_references_are_refused(key, trained_cnn, others):
    own = Reference(TorchSuspect(trained_cnn), "ours.safetensors", "cnn", weights_digest(trained_cnn))
    with pytest.raises(ConfigError, match="ours.safetensors is the protected model"):
        calibrate(key, refs(others[:3]) + [own])
    copy = Reference(TorchSuspect(trained_cnn), "copy.onnx", "onnx")  # digest unknown: caught by its answers
    with pytest.raises(ConfigError, match="copy.onnx matches the key on 200 of 200"):
        calibrate(key, refs(others[:3]) + [copy])


def test_prediction_bound_against_scipy():
    counts, n = [12, 30, 21, 17, 25, 40], 100
    z = np.log((np.array(counts) + 0.5) / (n - np.array(counts) + 0.5))
    upper = z.mean() + student_t.ppf(1 - TAIL, len(z) - 1) * z.std(ddof=1) * np.sqrt(1 + 1 / len(z))
    assert prediction_upper_bound(counts, n, TAIL) == pytest.approx(1 / (1 + np.exp(-upper)), rel=1e-12)
    assert prediction_upper_bound([0] * 6, 100, TAIL) > 0.02  # agreeing references do not prove zero spread


def test_prediction_bound_holds_across_suspects_by_simulation():
    """Suspect rates from Beta(6, 3) (the review's case): the worst-reference bound claimed 6-16%; now <= alpha."""
    rng = np.random.default_rng(0)
    n, level, claims, runs = 100, 0.01 - TAIL, 0, 3000
    for _ in range(runs):
        bound = prediction_upper_bound([int(k) for k in rng.binomial(n, rng.beta(6, 3, 6))], n, TAIL)
        need = decision_threshold(n, min(bound, 1.0), level)
        claims += rng.binomial(n, rng.beta(6, 3)) >= need
    assert claims / runs <= 0.01


def test_uncalibrated_null_would_falsely_claim_an_independent_model(key, others):
    """Independent digit models agree on ~3/4 of blends: the paper's 1/2 is the wrong null for this key."""
    assert verify(key, TorchSuspect(others[2])).decision == "owned"


@pytest.mark.parametrize("mode", ["fixed", "sequential"])
def test_protected_owned_independent_not_owned(calibrated, trained_cnn, others, mode):
    ours = verify(calibrated, TorchSuspect(trained_cnn), mode=mode, alpha=0.01)
    theirs = verify(calibrated, TorchSuspect(others[2]), mode=mode, alpha=0.01)
    assert theirs.decision != "owned" and ours.match_rate == 1.0 and theirs.p_value > 0.01
    if mode == "sequential" and not can_prove(calibrated, 0.01, mode):
        # the calibrated null depends on how alike the four reference CNNs train on this CPU (0.965 on one
        # machine): then even 200 matches of 200 cannot reach alpha sequentially, and the verdict must say so
        assert ours.decision == "inconclusive" and ours.queries == 200 and ours.e_value < 100 and ours.note
        return
    assert ours.decision == "owned" and theirs.decision == "not owned" and ours.p_value < 0.01
    for v in (ours, theirs):
        assert v.mode == mode and v.key_digest == calibrated.digest() and v.key_size == 200
        assert v.queries_sent + v.replayed == v.queries and v.replayed == 0
        assert v.p_value == pytest.approx(binom.sf(v.matches - 1, v.queries, v.null_match_prob), rel=1e-9)
        assert v.log10_p_value == pytest.approx(binom.logsf(v.matches - 1, v.queries, v.null_match_prob) / np.log(10))
        assert v.suspect.startswith("torch:") and v.method == "blend-fingerprint"
        json.dumps(v.to_dict())
    if mode == "fixed":
        assert ours.queries == theirs.queries == 200 and ours.e_value is None
    else:
        p0 = calibrated.null_match_prob
        assert theirs.queries < 200 and ours.e_value >= 100
        assert ours.p1 == pytest.approx(key_p1(p0, 200, level_of(calibrated, 0.01)))
        # every answer matches, so the e-value after n queries is (p1/p0)^n: the verdict comes at the first
        # look (batches of 10) where it reaches 1/alpha; p0 is calibrated, so n depends on the CPU's floats
        needed = math.ceil(math.log(100) / math.log(ours.p1 / p0))
        assert ours.queries == 10 * math.ceil(needed / 10)


def test_verdict_keeps_the_exponent_of_an_underflowing_p_value(trained_cnn, digits):
    # 1,200 inputs all matched at a null of 0.2: p = 0.2^1200 = 10^-838.8, below the smallest double
    inputs = torch.rand((1200, *digits.test.images.shape[1:]), generator=torch.Generator().manual_seed(7))
    big = key_from_model(trained_cnn, inputs, method="uniform-fingerprint",
                         null_match_prob=0.2, null_source="a test's null")
    v = verify(big, TorchSuspect(trained_cnn), mode="fixed", alpha=0.01)
    assert v.decision == "owned" and v.matches == 1200 and v.p_value == 0.0
    assert v.log10_p_value == pytest.approx(1200 * np.log10(0.2), rel=1e-12)
    written = json.loads(json.dumps(v.to_dict()))
    assert written["p_value"] == 0.0 and written["log10_p_value"] == pytest.approx(-838.8, abs=0.05)


def test_budget_runs_out(calibrated, trained_cnn, others):
    v = verify(calibrated, TorchSuspect(trained_cnn), mode="sequential", budget=5, batch_size=5)
    assert v.decision == "inconclusive" and v.queries == 5 and v.budget == 5
    v = verify(calibrated, TorchSuspect(others[2]), budget=25, batch_size=10)
    assert v.decision == "inconclusive" and v.queries == 25  # the last partial batch is asked one by one
    strict = verify(calibrated, TorchSuspect(trained_cnn), budget=150, batch_size=64)
    assert strict.decision == "owned" and strict.queries == 150  # the answered prefix already rejects the null


def test_suspect_with_fewer_classes_answers_non_matches(calibrated, trained_cnn):
    class FiveClasses:
        num_classes, input_shape, identity = 5, (1, 8, 8), "five-classes"

        def predict(self, images):
            return predict(trained_cnn, images).clamp(max=4)

    v = verify(calibrated, FiveClasses())
    wanted = int((calibrated.labels <= 4).sum())
    assert v.matches == wanted and v.queries == 200


def test_incompatible_suspect_and_bad_arguments(calibrated, trained_cnn):
    suspect = TorchSuspect(trained_cnn)

    class Colour:
        num_classes, input_shape, identity = 10, (3, 8, 8), "colour"

        def predict(self, images):
            return torch.zeros(len(images), dtype=torch.int64)

    with pytest.raises(SuspectError, match=r"\(3, 8, 8\)"):
        verify(calibrated, Colour())
    for bad, fragment in ((dict(alpha=0.0), "alpha"), (dict(alpha=1.5), "alpha"), (dict(batch_size=0), "batch_size"),
                          (dict(budget=0), "budget"), (dict(mode="bayes"), "mode"), (dict(beta=1.0), "beta"),
                          (dict(mode="sequential", p1=0.5), "p1")):
        with pytest.raises(ConfigError, match=fragment):
            verify(calibrated, suspect, **bad)
    with pytest.raises(ConfigError, match="null_match_prob < 1"):
        verify(dataclasses.replace(calibrated, null_match_prob=1.0), suspect, mode="sequential")
    with pytest.raises(ConfigError, match="QueriedSuspect"):
        verify(calibrated, QueriedSuspect(suspect), budget=3)


def test_key_order_is_a_fixed_permutation(calibrated):
    order = key_order(calibrated)
    assert sorted(order.tolist()) == list(range(200)) and torch.equal(order, key_order(calibrated))
    assert not torch.equal(order, torch.arange(200))


def test_log_replays_instead_of_asking_again(tmp_path, calibrated, trained_cnn):
    log = tmp_path / "queries.jsonl"
    first = verify(calibrated, TorchSuspect(trained_cnn, identity="ours"), mode="sequential", log_path=log)
    again = verify(calibrated, TorchSuspect(trained_cnn, identity="ours"), mode="sequential", log_path=log)
    assert first.queries_sent == first.queries and again.queries_sent == 0 and again.replayed == first.queries
    assert (again.decision, again.matches, again.queries, again.p_value) == \
           (first.decision, first.matches, first.queries, first.p_value)


RUNNER = textwrap.dedent("""
    import sys, time
    from modelproof.keys import load_key
    from modelproof.models import load_model
    from modelproof.suspects import TorchSuspect
    from modelproof.verification import verify

    class Slow(TorchSuspect):
        def predict(self, images):
            time.sleep(0.15)
            return super().predict(images)

    key, model = load_key(sys.argv[1]), load_model(sys.argv[2])
    verify(key, Slow(model, identity="slow-suspect"), batch_size=5, log_path=sys.argv[3])
""")


def test_resume_after_kill(tmp_path, calibrated, trained_cnn):
    small = dataclasses.replace(calibrated, inputs=calibrated.inputs[:60], labels=calibrated.labels[:60])
    key_path, model_path, log = tmp_path / "k.safetensors", tmp_path / "m.safetensors", tmp_path / "q.jsonl"
    save_key(small, key_path)
    save_model(trained_cnn, model_path)
    script = tmp_path / "runner.py"
    script.write_text(RUNNER)
    proc = subprocess.Popen([sys.executable, str(script), str(key_path), str(model_path), str(log)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if log.exists() and log.read_bytes().count(b"\n") >= 15:
                break
            time.sleep(0.02)
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    logged = log.read_bytes().count(b"\n") - 1  # less the header line
    assert 15 <= logged < 60
    resumed = verify(small, TorchSuspect(trained_cnn, identity="slow-suspect"), batch_size=5, log_path=log)
    whole = verify(small, TorchSuspect(trained_cnn, identity="slow-suspect"), batch_size=5)
    assert resumed.replayed == logged and resumed.queries_sent == 60 - logged
    assert resumed.replayed + resumed.queries_sent == len(small) == resumed.queries
    assert (resumed.decision, resumed.matches, resumed.p_value) == (whole.decision, whole.matches, whole.p_value)
    records = [r for r in map(json.loads, log.read_text().splitlines()[1:]) if "type" not in r]
    assert resumed.replay["rechecked"] == min(logged, 20 + -(-logged // 20))  # re-asked before replaying
    assert len(records) == 60 and len({r["input_sha256"] for r in records}) == 60  # nothing asked twice
