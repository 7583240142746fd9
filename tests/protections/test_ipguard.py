"""IPGuard and its baselines on the bundled digits: boundary points, self-match, uniqueness, untouched model."""

from __future__ import annotations

import copy

import pytest
import torch
from typer.testing import CliRunner

from modelproof.util.errors import ConfigError
from modelproof.protections.adversarial import targeted_igsm
from modelproof.protections.fingerprints.baselines import (
    CWL2Fingerprint, FGSMFingerprint, IGSMFingerprint, RandomFingerprint, cw_l2,
)
from modelproof.protections.fingerprints.ipguard import (
    IPGuard, boundary_loss, boundary_search, frozen, initial_points, learning_rate, per_point_search,
)
from modelproof.keys.container import load_key
from modelproof.models.modelfile import save_model, weights_digest
from modelproof.protections.base import make_protection
from modelproof.suspects.local import TorchSuspect
from modelproof.models.training import TrainConfig, predict, train_new
from modelproof.verification.verifier import verify

K = 1.0


@pytest.fixture(scope="module")
def search(digits, trained_cnn):
    """30 TL starts and their batched boundary search at gap K."""
    gen = torch.Generator().manual_seed(0)
    with frozen(trained_cnn):
        x0, i, j = initial_points(trained_cnn, digits.owner, 30, "TL", gen)
        result = boundary_search(trained_cnn, x0, i, j, k=K, lr=0.01, max_iter=400)
    return x0, i, j, result


@pytest.fixture(scope="module")
def fingerprint(digits, trained_cnn):
    return IPGuard(points=40, k=K, init="TL", max_iter=400).protect(trained_cnn, digits.owner, seed=0)


def test_boundary_loss_by_hand():
    z = torch.tensor([[1.0, 5.0, 2.0, 0.0], [3.0, 2.0, 1.0, 0.0]])
    i, j = torch.tensor([0, 0]), torch.tensor([1, 1])
    # row 0: relu(1 - 5 + 2) + relu(max(2, 0) - 1) = 0 + 1; row 1: relu(3 - 2 + 2) + relu(1 - 3) = 3 + 0
    assert boundary_loss(z, i, j, 2.0).tolist() == [1.0, 3.0]
    assert boundary_loss(torch.tensor([[0.0, 4.0, 0.0]]), torch.tensor([0]), torch.tensor([1]), 2.0).item() == 0.0


def test_points_lie_near_the_boundary(search, trained_cnn):
    x0, i, j, result = search
    assert float(result.converged.float().mean()) >= 0.9
    with torch.no_grad():
        z = trained_cnn(result.points)
    ok = result.converged
    gap = (z.gather(1, j[:, None]) - z.gather(1, i[:, None])).squeeze(1)[ok]
    assert bool((gap >= K - 1e-4).all())                 # crossed into j's region by at least k
    assert float(gap.median()) < K + 0.5                 # ... and stopped soon after: near the boundary
    runner_up = z.clone().scatter(1, j[:, None], float("-inf")).argmax(1)
    assert bool((runner_up[ok] == i[ok]).all())          # i is second: the point sits on the i/j boundary
    assert bool((z.argmax(1)[ok] == j[ok]).all())
    assert float(result.points.min()) >= 0.0 and float(result.points.max()) <= 1.0


def test_batched_and_per_point_agree(search, trained_cnn):
    x0, i, j, _ = search
    with frozen(trained_cnn):
        batched = boundary_search(trained_cnn, x0[:6], i[:6], j[:6], k=K, lr=0.01, max_iter=200)
        single = per_point_search(trained_cnn, x0[:6], i[:6], j[:6], k=K, lr=0.01, max_iter=200)
    # equal up to float noise (batch-size dependent conv sums, amplified by Adam's normalised steps)
    assert float((batched.points - single.points).abs().mean()) < 1e-4
    assert float((batched.points - single.points).abs().max()) < 2e-2
    assert (batched.iterations - single.iterations).abs().max() <= 1
    assert torch.equal(predict(trained_cnn, batched.points), predict(trained_cnn, single.points))


def test_protection_batched_equals_per_point_key(digits, trained_cnn):
    a = IPGuard(points=4, k=K, max_iter=100, secret="s").protect(trained_cnn, digits.owner).key
    b = IPGuard(points=4, k=K, max_iter=100, batched=False, secret="s").protect(trained_cnn, digits.owner).key
    assert torch.allclose(a.inputs, b.inputs, atol=2e-2) and torch.equal(a.labels, b.labels)
    assert float((a.inputs - b.inputs).abs().mean()) < 1e-4


def test_target_matches_its_own_fingerprint(fingerprint, trained_cnn):
    key = fingerprint.key
    assert key.method == "ipguard" and len(key) == 40 and key.model_digest == weights_digest(trained_cnn)
    assert key.params["k"] == K and key.params["init"] == "TL" and key.params["lr"] == 0.01
    assert "calibrate" in key.null_source and key.null_match_prob == IPGuard.default_null
    verdict = verify(key, TorchSuspect(trained_cnn))
    # an uncalibrated fingerprint key never says "owned": its default null is no bound on real models
    assert verdict.match_rate == 1.0 and verdict.decision == "inconclusive" and "calibrate" in verdict.note
    assert fingerprint.report["converged"] >= 0.9 and fingerprint.report["target_label_rate"] >= 0.9


def test_independent_model_matches_rarely(fingerprint, digits):
    other, _ = train_new("cnn", digits.owner, TrainConfig(epochs=15, batch_size=32, lr=0.002), seed=7)
    verdict = verify(fingerprint.key, TorchSuspect(other))
    assert verdict.match_rate <= 0.5
    assert verdict.decision == "inconclusive"


def test_model_untouched(digits, trained_cnn):
    model = copy.deepcopy(trained_cnn).train()
    model.head.weight.requires_grad_(False)
    first = next(model.parameters())
    first.grad = torch.full_like(first, 0.5)
    before = weights_digest(model)
    out = IPGuard(points=5, k=K, max_iter=50).protect(model, digits.owner, seed=1)
    assert out.model is model and weights_digest(model) == before
    assert model.training and not model.head.weight.requires_grad
    assert all(p.requires_grad for n, p in model.named_parameters() if not n.startswith("head.weight"))
    assert torch.equal(first.grad, torch.full_like(first, 0.5))
    assert all(p.grad is None for p in list(model.parameters())[1:])


@pytest.mark.parametrize("params, word", [({"init": "XX"}, "'XX'"), ({"k": -1.0}, "-1.0"), ({"points": 0}, "0"),
                                          ({"lr": 0.0}, "lr"), ({"max_iter": 0}, "max_iter"),
                                          ({"null_match_prob": 1.5}, "1.5")])
def test_bad_parameters(params, word):
    with pytest.raises(ConfigError, match=word):
        IPGuard(**params)


def test_bad_baseline_parameters():
    with pytest.raises(ConfigError, match="eps"):
        FGSMFingerprint(eps=0.0)
    with pytest.raises(ConfigError, match="'ZZ'"):
        CWL2Fingerprint(init="ZZ")
    with pytest.raises(ConfigError, match="points"):
        RandomFingerprint(points=0)


def test_registry_and_learning_rates():
    assert isinstance(make_protection("ipguard", k=2.0), IPGuard)
    assert isinstance(make_protection("cw-l2-fingerprint"), CWL2Fingerprint)
    assert learning_rate("cifar10/owner") == 1e-3 and learning_rate("imagenet") == 0.1
    assert IPGuard.demo_params and IPGuard(**IPGuard.demo_params).points == 30


@pytest.mark.parametrize("protection", [RandomFingerprint(points=12), FGSMFingerprint(points=12, eps=0.2),
                                        IGSMFingerprint(points=12, eps=0.3, max_iter=100),
                                        CWL2Fingerprint(points=12, k=K, binary_steps=3, max_iter=60)],
                         ids=lambda p: p.name)
def test_baselines_make_keys_the_target_matches(protection, digits, trained_cnn):
    before = weights_digest(trained_cnn)
    out = protection.protect(trained_cnn, digits.owner, seed=0)
    assert out.model is trained_cnn and weights_digest(trained_cnn) == before
    assert len(out.key) == 12 and out.key.method == protection.name
    assert verify(out.key, TorchSuspect(trained_cnn)).match_rate == 1.0


@pytest.mark.parametrize("protection", [FGSMFingerprint(points=12, eps=0.2),
                                        IGSMFingerprint(points=12, eps=0.3, max_iter=50),
                                        CWL2Fingerprint(points=12, k=K, binary_steps=2, max_iter=30)],
                         ids=lambda p: p.name)
def test_a_draw_made_in_chunks_is_the_draw_made_at_once(protection, digits, trained_cnn, monkeypatch):
    """A big selection draw is moved CHUNK starts at a time (memory); the points do not interact, so the
    points and the report (means, maxima and medians over the whole draw) are those of one batch."""
    from modelproof.protections.fingerprints import baselines

    def draw() -> tuple[torch.Tensor, dict]:
        points, report, _ = protection._draw(trained_cnn, digits.owner, 30, torch.Generator().manual_seed(3), True)
        report.pop("seconds")
        return points, report

    at_once, report_at_once = draw()
    monkeypatch.setattr(baselines, "CHUNK", 7)
    chunked, report_chunked = draw()
    assert torch.allclose(chunked, at_once, atol=1e-5)
    assert report_chunked.keys() == report_at_once.keys()
    for name, value in report_at_once.items():
        assert report_chunked[name] == pytest.approx(value, rel=1e-4, abs=1e-4), name


def test_igsm_stays_in_its_ball_and_cw_reaches_its_confidence(digits, trained_cnn):
    gen = torch.Generator().manual_seed(0)
    with frozen(trained_cnn):
        x0, _, j = initial_points(trained_cnn, digits.owner, 10, "RR", gen)
        x, steps = targeted_igsm(trained_cnn, x0, j, 0.25, max_iter=200)
        points, ok, _ = cw_l2(trained_cnn, x0, j, K, binary_steps=5, max_iter=100, initial_const=0.1)
        z = trained_cnn(points)
    assert float((x - x0).abs().max()) <= 0.25 + 1e-6
    assert bool((predict(trained_cnn, x)[steps < 200] == j[steps < 200]).all())
    assert float(ok.float().mean()) >= 0.8
    margin = z.gather(1, j[:, None]).squeeze(1) - z.scatter(1, j[:, None], float("-inf")).max(1).values
    assert bool((margin[ok] >= K - 1e-3).all())


class _Counting(torch.nn.Module):
    """A model that counts the rows it is asked about."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model, self.rows = model, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.rows += len(x)
        return self.model(x)


def plain_igsm(model, x0, target, eps, max_iter):
    """IGSM as the paper states it: every point steps until it reaches its target or max_iter."""
    x, steps = x0.clone(), torch.zeros(len(x0), dtype=torch.int64)
    for _ in range(max_iter):
        xa = x.clone().requires_grad_(True)
        z = model(xa)
        go = z.detach().argmax(1) != target
        (grad,) = torch.autograd.grad(torch.nn.functional.cross_entropy(z, target, reduction="sum"), xa)
        moved = torch.maximum(torch.minimum(x - grad.sign() / 255, x0 + eps), x0 - eps).clamp(0.0, 1.0)
        x = torch.where(go[:, None, None, None], moved, x)
        steps += go.long()
    return x, steps


@pytest.mark.parametrize("eps", [0.05, 0.25])  # none reach j / about half do
def test_igsm_stops_cycling_points_with_the_plain_loops_result(digits, trained_cnn, eps):
    """A point back in an earlier state stops where max_iter steps would leave it: same points and
    steps as the plain loop, with fewer questions to the model."""
    gen = torch.Generator().manual_seed(3)
    counting = _Counting(trained_cnn)
    with frozen(trained_cnn):
        x0, _, j = initial_points(trained_cnn, digits.owner, 40, "TL", gen)
        expected, expected_steps = plain_igsm(trained_cnn, x0, j, eps, 300)
        x, steps = targeted_igsm(counting, x0, j, eps, max_iter=300)
    assert torch.equal(steps, expected_steps)
    assert torch.equal(x, expected)
    never = expected_steps == 300
    assert int(never.sum()) >= 5  # points that never reach j: the ones the memory stops early
    assert counting.rows < 0.8 * int(expected_steps.sum())  # the plain loop asks once per step and more


class _NoEmptyBatch(torch.nn.Module):
    """A model written as models often are, ``x.view(len(x), -1)``, which cannot take an empty batch."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert len(x), "asked about an empty batch"
        return self.model(x.view(len(x), -1).view(x.shape))


def test_igsm_never_asks_about_an_empty_batch(digits, trained_cnn):
    """Once every point has finished its cycle the search ends without another (empty) question."""
    with frozen(trained_cnn):
        x0, _, j = initial_points(trained_cnn, digits.owner, 10, "TL", torch.Generator().manual_seed(3))
        _, steps = targeted_igsm(_NoEmptyBatch(trained_cnn), x0, j, 0.05, max_iter=300)
    assert bool((steps == 300).all())  # none reaches j at eps 0.05: all stopped by the memory


@pytest.mark.parametrize("max_iter", [20, 21, 24, 9])
def test_state_memory_stops_a_cycle_where_max_iter_steps_would_end(max_iter):
    """Three states, then a cycle of five: the point stops in the state max_iter steps reach."""
    from modelproof.protections.adversarial import CycleMemory

    distinct = torch.rand((8, 1, 2, 2), generator=torch.Generator().manual_seed(0))

    def state(t: int) -> torch.Tensor:
        return distinct[t if t < 3 else 3 + (t - 3) % 5]

    memory, moved = CycleMemory(state(0), max_iter), torch.tensor([0])
    for t in range(1, max_iter + 1):
        if bool(memory.step(state(t), moved, t)[0]):
            break
    assert torch.equal(state(t), state(max_iter))
    assert t == max_iter or t < 8 + 5  # stopped within a cycle's length after the first return (state 8)


def test_cli_writes_key_and_leaves_model(tmp_path, trained_cnn):
    from modelproof.cli.app import app

    path = save_model(trained_cnn, tmp_path / "cnn.safetensors", dataset="digits")
    raw = path.read_bytes()
    result = CliRunner().invoke(app, ["protect", "ipguard", "--model", str(path), "--dataset", "digits", "--k", "1",
                                      "--init", "TL", "--points", "10", "--max-iter", "100", "--no-calibration",
                                      "--allow-weak", "--out", str(tmp_path / "fp"), "--json"])
    assert result.exit_code == 0, result.output
    key = load_key(tmp_path / "fp" / "key.mpkey")
    assert len(key) == 10 and key.method == "ipguard" and path.read_bytes() == raw and "warning" in key.params
    assert not (tmp_path / "fp" / "model.safetensors").exists()
    bad = CliRunner().invoke(app, ["protect", "ipguard", "--model", str(path), "--init", "QQ",
                                   "--out", str(tmp_path / "x")])
    assert bad.exit_code == 2 and "QQ" in bad.output
