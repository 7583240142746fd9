"""Removal attacks on the bundled digits: each does what it says, never touches its input, fails cleanly."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from modelproof.attacks import (ATTACKS, FTAL, FTLL, RTAL, RTLL, AdversarialFineTune, Extraction, FilterPruning,
                                Plausibility, Quantisation, SmallSetFineTune, SVDCompression, WeightPruning,
                                make_adversaries, make_attack, parse_params, run_attack)
from modelproof.attacks.compression import kept_rank
from modelproof.attacks.filters import channel_widths, count_params
from modelproof.attacks.pruning import zero_fraction
from modelproof.attacks.quantization import is_dynamic_quantised
from modelproof.attacks.saving import is_zoo_savable
from modelproof.data.splits import Dataset
from modelproof.util.errors import ConfigError
from modelproof.models.modelfile import export_onnx, load_model, save_model, weights_digest
from modelproof.models import build_model
from modelproof.models.training import evaluate, predict

from fast_attacks import FAST


def _non_head(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v for k, v in model.state_dict().items() if not k.startswith("head.")}


def test_every_attack_leaves_its_input_unchanged_and_answers_every_class(trained_cnn, digits):
    assert set(FAST) == set(ATTACKS)
    digest = weights_digest(trained_cnn)
    for name, params in FAST.items():
        out = make_attack(name, **params).attack(trained_cnn, digits.attacker, seed=1)
        assert weights_digest(trained_cnn) == digest, name
        assert out is not trained_cnn and predict(out, digits.test.images[:5]).shape == (5,), name


def test_attacks_are_deterministic_in_their_seed(trained_cnn, digits):
    runs = [FTAL(epochs=1).attack(trained_cnn, digits.attacker, seed=s) for s in (4, 4, 5)]
    digests = [weights_digest(m) for m in runs]
    assert digests[0] == digests[1] != digests[2]


def test_weight_pruning_zeroes_the_requested_fraction_permanently(trained_cnn, digits):
    for retrain in (False, True):
        out = WeightPruning(rate=0.6, retrain=retrain, epochs=1).attack(trained_cnn, digits.attacker)
        assert set(out.state_dict()) == set(trained_cnn.state_dict())  # masks removed, names kept
        assert not any(hasattr(m, "weight_mask") for m in out.modules())
        assert 0.6 - 1e-4 <= zero_fraction(out) < 0.62
    assert zero_fraction(trained_cnn) < 0.01
    assert evaluate(out, digits.test) > 0.8


def test_weight_pruning_auto_takes_the_largest_rate_within_the_bound(trained_cnn, digits):
    outcome = WeightPruning(rate="auto", retrain=False, sweep=(0.2, 0.5, 0.8, 0.99)).perform(trained_cnn, digits.attacker)
    d = outcome.details
    trace = d["sweep_trace"]
    assert d["auto"] and d["found_within_bound"] and d["rate"] in (0.2, 0.5, 0.8)
    within = [t["strength"] for t in trace if t["within_bound"]]
    assert within[-1] == d["rate"] and all(t["within_bound"] for t in trace[:-1])
    assert d["holdout_images"] == round(0.2 * len(digits.attacker))
    assert zero_fraction(outcome.model) >= d["rate"] - 1e-4


def test_filter_pruning_removes_channels_and_survives_save_load_onnx(trained_cnn, digits, tmp_path):
    outcome = FilterPruning(rate=0.5, retrain=True, epochs=1).perform(trained_cnn, digits.attacker)
    pruned = outcome.model
    before, after = channel_widths(trained_cnn), channel_widths(pruned)
    assert after[:-1] == [w - w // 2 for w in before[:-1]] and after[-1] == before[-1] == 10
    assert count_params(pruned) < 0.5 * count_params(trained_cnn)
    assert outcome.details["params_after"] == count_params(pruned)
    assert evaluate(pruned, digits.test) > 0.7
    path = save_model(pruned, tmp_path / "p.safetensors")
    loaded = load_model(path)
    assert loaded.record.extra["structurally_pruned"] is True
    assert weights_digest(loaded) == weights_digest(pruned)
    assert torch.equal(loaded(digits.test.images), pruned(digits.test.images))
    export_onnx(loaded, tmp_path / "p.onnx")


def test_filter_pruning_residual_networks_and_depthwise_convs_round_trip(digits, tmp_path):
    net = build_model("resnet20", 10, (1, 8, 8), seed=0)
    inner = FilterPruning(rate=0.5, retrain=False).attack(net, digits.attacker)
    coupled = FilterPruning(rate=0.5, residual="coupled", retrain=False).attack(net, digits.attacker)
    assert count_params(coupled) < count_params(inner) < count_params(net)
    for i, model in enumerate((inner, coupled)):
        loaded = load_model(save_model(model, tmp_path / f"r{i}.safetensors"))
        assert torch.allclose(loaded(digits.test.images[:8]), model(digits.test.images[:8]))
    mobile = build_model("mobilenetv2", 10, (1, 8, 8), seed=0)
    small = FilterPruning(rate=0.25, retrain=False).attack(mobile, digits.attacker)
    assert count_params(small) < count_params(mobile)
    loaded = load_model(save_model(small, tmp_path / "mb.safetensors"))
    assert torch.allclose(loaded(digits.test.images[:8]), small(digits.test.images[:8]))


def test_ftll_trains_only_the_head_and_ftal_changes_the_rest(trained_cnn, digits):
    ftll = FTLL(epochs=2).attack(trained_cnn, digits.attacker)
    for k, v in _non_head(trained_cnn).items():
        assert torch.equal(v, ftll.state_dict()[k]), k
    assert not torch.equal(ftll.head.weight, trained_cnn.head.weight)
    for attack in (FTAL(epochs=1), RTAL(epochs=1)):
        out = attack.attack(trained_cnn, digits.attacker)
        changed = [k for k, v in _non_head(trained_cnn).items() if not torch.equal(v, out.state_dict()[k])]
        assert any(k.startswith("features.") for k in changed)
    assert evaluate(ftll, digits.test) > 0.9


def test_rtll_reinitialises_only_the_head(trained_cnn, digits):
    out = RTLL(epochs=1, lr=1e-12).attack(trained_cnn, digits.attacker, seed=3)
    for k, v in _non_head(trained_cnn).items():
        assert torch.equal(v, out.state_dict()[k]), k
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(3)
        fresh = nn.Linear(trained_cnn.head.in_features, trained_cnn.head.out_features)
    assert torch.allclose(out.head.weight, fresh.weight, atol=1e-6)
    assert not torch.allclose(out.head.weight, trained_cnn.head.weight, atol=1e-3)
    trained = RTLL(epochs=10).attack(trained_cnn, digits.attacker)
    assert evaluate(trained, digits.test) > 0.85


def test_finetuning_on_a_small_set_and_with_victim_labels(trained_cnn, digits):
    outcome = SmallSetFineTune(epochs=2).perform(trained_cnn, digits.attacker)
    assert outcome.details["images"] == round(0.8 * len(digits.attacker)) and outcome.queries == 0
    relabel = FTLL(epochs=1, labels="victim").perform(trained_cnn, digits.attacker)
    assert relabel.queries == len(digits.attacker)


def test_svd_reduces_rank_and_exports(trained_cnn, digits, tmp_path):
    outcome = SVDCompression(rate=0.5).perform(trained_cnn, digits.attacker)
    model, ranks = outcome.model, outcome.details["ranks"]
    assert set(ranks) == {"features.0", "features.2", "features.7"}
    assert isinstance(model.head, nn.Linear)  # excluded by default
    for name, r in ranks.items():
        first, second = model.get_submodule(name)
        a = second.weight.reshape(second.weight.shape[0], -1)
        b = first.weight.reshape(first.weight.shape[0], -1)
        assert first.weight.shape[0] == r and torch.linalg.matrix_rank(a @ b) <= r
        original = trained_cnn.get_submodule(name).weight
        assert r == kept_rank(min(original.shape[0], original[0].numel()), 0.5)
    assert not is_zoo_savable(model)
    export_onnx(model, tmp_path / "s.onnx")
    mild = SVDCompression(rate=0.1, include_head=True).attack(trained_cnn, digits.attacker)
    assert isinstance(mild.head, nn.Sequential)
    agree = (predict(mild, digits.test.images) == predict(trained_cnn, digits.test.images)).float().mean()
    assert agree > 0.9


def test_quantised_models_run_and_agree_with_the_original(trained_cnn, digits, tmp_path):
    dynamic = Quantisation().attack(trained_cnn, digits.attacker)
    assert is_dynamic_quantised(dynamic) and not is_zoo_savable(dynamic)
    conv = dynamic.features[0].weight.detach().reshape(32, -1)
    steps = conv / (conv.abs().amax(dim=1, keepdim=True) / 127)
    assert torch.allclose(steps, steps.round(), atol=1e-3)  # int8 grid per output channel
    reference = predict(trained_cnn, digits.test.images)
    assert (predict(dynamic, digits.test.images) == reference).float().mean() > 0.97
    weights = Quantisation(mode="weights").attack(trained_cnn, digits.attacker)
    assert is_zoo_savable(weights) and (predict(weights, digits.test.images) == reference).float().mean() > 0.97
    export_onnx(weights, tmp_path / "q.onnx")


def test_adversarial_finetuning_uses_adversaries_within_eps(trained_cnn, digits):
    adv, idx = make_adversaries(trained_cnn, digits.attacker, 100, 0.1, seed=0)
    src = digits.attacker.images[idx]
    assert len(adv) == 100 and torch.equal(adv.labels, digits.attacker.labels[idx])
    assert float((adv.images - src).abs().max()) <= 0.1 + 1e-6 and not torch.equal(adv.images, src)
    l2, idx2 = make_adversaries(trained_cnn, digits.attacker, 50, 1.0, seed=1, norm="l2")
    assert float((l2.images - digits.attacker.images[idx2]).flatten(1).norm(dim=1).max()) <= 1.0 + 1e-5
    outcome = AdversarialFineTune(n=5000, eps=0.1, epochs=1).perform(trained_cnn, digits.attacker)
    assert outcome.details["adversaries"] == len(digits.attacker)  # capped at what the attacker has
    mixed = AdversarialFineTune(n=100, clean=True, epochs=1).perform(trained_cnn, digits.attacker)
    assert mixed.details["training_images"] == 100 + len(digits.attacker)


def test_extraction_student_learns_and_queries_are_counted(trained_cnn, digits):
    result = run_attack(Extraction(epochs=30), trained_cnn, digits, seed=0)
    assert result.queries == len(digits.attacker) and result.accuracy_after >= 0.85
    soft = Extraction(answers="probabilities", queries=200, epochs=2, student="mlp").perform(
        trained_cnn, digits.attacker)
    assert soft.queries == 200 and soft.model.arch == "mlp"
    noise = Extraction(source="noise", queries=123, epochs=1).perform(trained_cnn, digits.attacker)
    assert noise.queries == 123
    other = Dataset(torch.rand(50, 3, 16, 16, generator=torch.Generator().manual_seed(0)),
                    torch.zeros(50, dtype=torch.int64), ("x",), "other")
    ood = Extraction(source=other, epochs=1).perform(trained_cnn, digits.attacker)
    assert ood.queries == 50 and ood.details["source"] == "other"


def test_run_attack_reports_accuracy_cost_and_plausibility(trained_cnn, digits):
    result = run_attack(WeightPruning(rate=0.99, retrain=False), trained_cnn, digits)
    assert result.accuracy_before == evaluate(trained_cnn, digits.test)
    assert result.change == result.accuracy_after - result.accuracy_before < -0.03
    assert not result.plausible and result.seconds > 0 and result.queries == 0
    assert result.to_dict()["params"]["rate"] == 0.99
    assert Plausibility(max_drop=None, min_accuracy=0.5)(0.99, 0.6)
    assert not Plausibility(max_drop=0.03, min_accuracy=0.95)(0.99, 0.94)
    same = run_attack(Quantisation(mode="weights"), trained_cnn, digits.attacker, digits.test)
    assert same.plausible and same.rule == "drop <= 0.03"
    with pytest.raises(ConfigError, match="max_drop"):
        Plausibility(max_drop=-0.1)


@pytest.mark.parametrize("bad", [0, 1, 1.5, -0.2, "half", True])
def test_rates_outside_the_open_unit_interval_are_refused(bad):
    for cls in (WeightPruning, FilterPruning, SVDCompression):
        with pytest.raises(ConfigError, match="rate must be a number strictly between 0 and 1"):
            cls(rate=bad)


def test_bad_names_and_parameters_are_clean_errors(digits):
    with pytest.raises(ConfigError, match="unknown attack 'prune'"):
        make_attack("prune")
    with pytest.raises(ConfigError, match="unknown parameter.*'rate'.*ftll"):
        make_attack("ftll", rate=0.5)
    with pytest.raises(ConfigError, match="epochs must be a positive integer, got 0"):
        FTAL(epochs=0)
    with pytest.raises(ConfigError, match="sweep must be"):
        WeightPruning(sweep=(0.5, 0.2))
    with pytest.raises(ConfigError, match="student must be"):
        Extraction(student="alexnet")
    with pytest.raises(ConfigError, match="labels must be one of"):
        FTLL(labels="guess")
    assert make_attack("Prune_Filters", rate=0.5).rate == 0.5
    assert parse_params("prune-filters", ["rate=3/16", "retrain=no", "sweep=1/4,1/2"]) == {
        "rate": 0.1875, "retrain": False, "sweep": (0.25, 0.5)}
    with pytest.raises(ConfigError, match="epochs"):
        parse_params("ftll", ["epochs=many"])


def test_models_without_prunable_layers_are_refused(digits):
    class NoLayers(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.flatten(1)[:, :10]

    class HeadOnly(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.head = nn.Linear(64, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(x.flatten(1))

    with pytest.raises(ConfigError, match="no Conv2d or Linear"):
        WeightPruning(rate=0.5).attack(NoLayers(), digits.attacker)
    with pytest.raises(ConfigError, match="no Conv2d or hidden Linear"):
        FilterPruning(rate=0.5).attack(HeadOnly(), digits.attacker)
    with pytest.raises(ConfigError, match="no Linear or ungrouped Conv2d"):
        SVDCompression(rate=0.5).attack(HeadOnly(), digits.attacker)
    with pytest.raises(ConfigError, match="not a zoo model"):
        Extraction().attack(HeadOnly(), digits.attacker)
    wrong = build_model("cnn", 10, (1, 12, 12))
    with pytest.raises(ConfigError, match="shape"):
        FTLL().attack(wrong, digits.attacker)


def test_every_attack_takes_a_new_label_model(digits):
    """A new-label watermark's model answers C + 1 classes; the attacker's data shows only C."""
    from modelproof.models.training import TrainConfig, fit

    eleven = build_model("cnn", digits.num_classes + 1, digits.input_shape, seed=0)
    fit(eleven, digits.owner, TrainConfig(epochs=1), seed=0)
    for name, params in FAST.items():
        out = make_attack(name, **params).attack(eleven, digits.attacker, seed=1)
        assert out(digits.test.images[:3]).shape == (3, digits.num_classes + 1), name
    fewer = build_model("cnn", digits.num_classes - 1, digits.input_shape, seed=0)
    with pytest.raises(ConfigError, match="the model has 9 classes but the attacker's data"):
        make_attack("ftal", epochs=1).attack(fewer, digits.attacker)
