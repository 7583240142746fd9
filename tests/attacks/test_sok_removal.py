"""The SoK's removal attacks on the bundled digits: each changes the model as its paper says, stays plausible."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from modelproof.attacks import (AdversarialTraining, FeaturePermutation, FinePruning, KnockoffNets, LabelSmoothing,
                                Regularisation, TransferLearning, WeightShifting, run_attack)
from modelproof.attacks.activations import channel_means, mean_activations
from modelproof.attacks.adversarial_training import pgd
from modelproof.attacks.knockoff import rotation_task
from modelproof.attacks.saving import is_zoo_savable
from modelproof.data.splits import Dataset
from modelproof.models import build_model
from modelproof.models.modelfile import load_model, save_model, weights_digest
from modelproof.models.training import evaluate, logits, predict
from modelproof.util.errors import ConfigError


def test_fine_pruning_zeroes_the_most_dormant_channels_of_the_last_conv_then_fine_tunes(trained_cnn, digits, tmp_path):
    conv = trained_cnn.features[2]  # the Keras CNN's last convolution (64 channels)
    activity = channel_means(mean_activations(trained_cnn, [conv], digits.attacker.images)[0]).cpu()
    outcome = FinePruning(rate=0.25, epochs=1).perform(trained_cnn, digits.attacker)
    d, pruned = outcome.details, outcome.model
    assert d["layer"] == "features.2" and d["channels"] == 64 and d["pruned_channels"] == 16
    gone = torch.tensor(d["pruned"])
    assert set(gone.tolist()) == set(torch.argsort(activity, stable=True)[:16].tolist())  # the dormant ones
    w = pruned.features[2].weight.detach()
    assert torch.all(w[gone] == 0) and torch.all(pruned.features[2].bias[gone] == 0)
    kept = torch.tensor([c for c in range(64) if c not in set(gone.tolist())])
    assert torch.all(w[kept].flatten(1).abs().sum(1) > 0)
    assert not torch.equal(pruned.features[0].weight, trained_cnn.features[0].weight)  # fine-tuned after pruning
    assert set(pruned.state_dict()) == set(trained_cnn.state_dict()) and is_zoo_savable(pruned)
    assert torch.equal(load_model(save_model(pruned, tmp_path / "fp.safetensors")).features[2].weight, w)


def test_fine_pruning_auto_prunes_while_the_holdout_stays_within_liu_et_al_bound(trained_cnn, digits):
    result = run_attack(FinePruning(), trained_cnn, digits, seed=0)
    d = result.details
    assert d["auto"] and 0 < d["pruned_channels"] < d["channels"]
    baseline = d["search"][0]["holdout_accuracy"]
    kept = [t for t in d["search"] if t["pruned"] == d["pruned_channels"]]
    assert kept and baseline - kept[0]["holdout_accuracy"] <= 0.04 + 1e-9
    assert d["mean_activation_pruned"] < d["mean_activation_kept"]
    assert result.plausible, (result.accuracy_before, result.accuracy_after)
    mlp = FinePruning(rate=0.5, epochs=0).perform(build_model("mlp", 10, (1, 8, 8)), digits.attacker)
    assert mlp.details["layer"] == "features.4" and mlp.details["pruned_channels"] == 256  # the last hidden layer
    assert torch.all(mlp.model.features[4].weight[torch.tensor(mlp.details["pruned"])] == 0)


def test_weight_shifting_shifts_each_filter_by_the_mean_filter_plus_noise(trained_cnn, digits):
    shifted = WeightShifting(epochs=0).attack(trained_cnn, digits.attacker, seed=3)
    gen = torch.Generator().manual_seed(3)
    for name in ("features.0", "features.2"):
        w = trained_cnn.get_submodule(name).weight.detach()
        noise = torch.randn(w.shape, generator=gen) * w.std()
        assert torch.allclose(shifted.get_submodule(name).weight, w - 1.5 * w.mean(0, keepdim=True) - noise, atol=1e-6)
    assert torch.equal(shifted.head.weight, trained_cnn.head.weight)  # the head is left alone
    assert evaluate(shifted, digits.test) < evaluate(trained_cnn, digits.test) - 0.05  # the shift hurts...
    result = run_attack(WeightShifting(epochs=3), trained_cnn, digits, seed=3)
    assert result.plausible  # ...and fine-tuning recovers the accuracy


def test_feature_permutation_changes_the_weights_but_not_one_answer(trained_cnn, digits):
    out = FeaturePermutation().perform(trained_cnn, digits.attacker, seed=1)
    assert out.details["groups_permuted"] == 3 and out.details["groups_skipped"] == 0
    assert weights_digest(out.model) != weights_digest(trained_cnn) and is_zoo_savable(out.model)
    with torch.no_grad():
        assert torch.allclose(out.model(digits.test.images), trained_cnn(digits.test.images), atol=1e-5)
    resnet = build_model("resnet20", 10, (1, 8, 8), seed=0).eval()
    permuted = FeaturePermutation().attack(resnet, digits.attacker)
    with torch.no_grad():
        assert torch.allclose(permuted(digits.test.images[:16]), resnet(digits.test.images[:16]), atol=1e-5)


def test_label_smoothing_lowers_confidence_and_keeps_accuracy(trained_cnn, digits):
    result = run_attack(LabelSmoothing(epochs=1), trained_cnn, digits)
    confidence = [float(torch.softmax(logits(m, digits.test.images), 1).max(1).values.mean())
                  for m in (trained_cnn, result.model)]
    assert confidence[1] < confidence[0] - 0.1 and result.plausible


def test_regularisation_shrinks_the_weights_then_recovers(trained_cnn, digits):
    norm = lambda m: float(torch.cat([p.detach().flatten() for p in m.parameters()]).norm())  # noqa: E731
    result = run_attack(Regularisation(reg_epochs=3, max_epochs=3, patience=1), trained_cnn, digits)
    assert norm(result.model) < 0.9 * norm(trained_cnn) and result.plausible
    d = result.details
    assert 1 <= d["recovery_epochs"] <= 3 and d["holdout_loss_best"] <= d["holdout_loss_after_regularisation"]


def test_pgd_stays_in_the_ball_and_adversarial_training_uses_it(trained_cnn, digits):
    x, y = digits.attacker.images[:64], digits.attacker.labels[:64]
    adv = pgd(trained_cnn, x, y, eps=0.1, step=0.01, iterations=20)
    assert float((adv - x).abs().max()) <= 0.1 + 1e-6 and adv.min() >= 0 and adv.max() <= 1
    wrong = lambda images: float((predict(trained_cnn, images) != y).float().mean())  # noqa: E731
    assert wrong(adv) > wrong(x) + 0.2
    result = run_attack(AdversarialTraining(n=100, iterations=10, epochs=1), trained_cnn, digits)
    assert result.details["adversaries_per_epoch"] == 300 and result.plausible
    assert weights_digest(result.model) != weights_digest(trained_cnn)
    with pytest.raises(ConfigError, match="eps entry"):
        AdversarialTraining(eps=(0.1, -1.0))


def test_knockoff_queries_another_distribution_for_probabilities(trained_cnn, digits):
    photos = KnockoffNets(queries=300, epochs=2).perform(trained_cnn, digits.attacker)
    assert photos.queries == 300 and photos.details["source"].startswith("crops of scikit-learn")
    assert photos.details["answers"] == "probabilities"
    other = Dataset(torch.rand(80, 3, 16, 16, generator=torch.Generator().manual_seed(0)),
                    torch.zeros(80, dtype=torch.int64), ("x",), "other")
    ood = KnockoffNets(source=other, epochs=1).perform(trained_cnn, digits.attacker)
    assert ood.queries == 80 and ood.details["source"] == "other"
    named = KnockoffNets(source="digits", queries=50, epochs=1).perform(trained_cnn, digits.attacker)  # DATASET[:DIR]
    assert named.queries == 50 and named.details["source"] == "digits"
    with pytest.raises(ConfigError, match="source must be one of"):
        KnockoffNets(source="imagenet")
    good = run_attack(KnockoffNets(queries=3000, epochs=10), trained_cnn, digits)
    assert good.accuracy_after > 0.6  # photograph crops alone teach most of the digits


def test_rotation_pretext_and_transfer_learning(trained_cnn, digits):
    task = rotation_task(8, (1, 8, 8), torch.Generator().manual_seed(0))
    assert task.class_names == ("0", "90", "180", "270") and task.images.shape == (8, 1, 8, 8)
    with pytest.raises(ConfigError, match="square"):
        rotation_task(2, (1, 8, 6), torch.Generator())
    result = run_attack(TransferLearning(pretrain_images=500, pretrain_epochs=2, epochs=5), trained_cnn, digits)
    model = result.model
    assert result.queries == len(digits.attacker) and result.accuracy_after > 0.8
    assert model.num_classes == 10 and model.head.out_features == 10 and is_zoo_savable(model)
    assert not any(torch.equal(a, b) for a, b in zip(model.parameters(), trained_cnn.parameters()))  # its own
    labelled = Dataset(digits.owner.images[:64], digits.owner.labels[:64], digits.owner.class_names, "own")
    mlp = TransferLearning(source=labelled, student="mlp", labels="true", pretrain_epochs=1, epochs=1).perform(
        trained_cnn, digits.attacker)
    assert mlp.queries == 0 and mlp.details["pretrained_on"] == "own" and isinstance(mlp.model.head, nn.Linear)
