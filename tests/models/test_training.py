import pytest
import torch

from modelproof.util.errors import ConfigError
from modelproof.models import build_model
from modelproof.models.training import TrainConfig, evaluate, fit, predict, train_new


def test_small_cnn_learns_digits(trained_cnn, digits):
    assert evaluate(trained_cnn, digits.test) >= 0.95


def test_training_is_deterministic_and_leaves_global_rng_alone(digits):
    cfg = TrainConfig(epochs=2, batch_size=64)
    state = torch.random.get_rng_state()
    a, _ = train_new("mlp", digits.owner, cfg, seed=5)
    assert torch.equal(state, torch.random.get_rng_state())
    b, _ = train_new("mlp", digits.owner, cfg, seed=5)
    c, _ = train_new("mlp", digits.owner, cfg, seed=6)
    for (_, pa), (_, pb), (_, pc) in zip(a.state_dict().items(), b.state_dict().items(), c.state_dict().items()):
        assert torch.equal(pa, pb)
    assert any(not torch.equal(pa, pc) for pa, pc in zip(a.state_dict().values(), c.state_dict().values()))


def test_mix_and_until_stop_early(digits):
    model = build_model("mlp", 10, digits.input_shape, seed=0)
    key = digits.attacker.subset(range(10))
    key = type(key)(key.images, (key.labels + 1) % 10, key.class_names, "key")
    report = fit(model, digits.owner, TrainConfig(epochs=40), seed=0, mix=key, mix_per_batch=4,
                 until=lambda m: bool((predict(m, key.images) == key.labels).all()))
    assert report.stopped_early and report.epochs < 40
    assert bool((predict(model, key.images) == key.labels).all())


def test_only_trainable_parameters_change(digits):
    model = build_model("mlp", 10, digits.input_shape, seed=0)
    for name, p in model.named_parameters():
        p.requires_grad = name.startswith("head")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fit(model, digits.owner, TrainConfig(epochs=1), seed=0)
    for k, v in model.state_dict().items():
        assert torch.equal(before[k], v) != k.startswith("head"), k


@pytest.mark.parametrize("kwargs,msg", [({"epochs": 0}, "epochs"), ({"lr": -1.0}, "learning rate"),
                                        ({"optimizer": "lbfgs"}, "'lbfgs'"), ({"schedule": "cyclic"}, "'cyclic'")])
def test_config_errors(kwargs, msg):
    with pytest.raises(ConfigError, match=msg):
        TrainConfig(**kwargs)


def test_predict_shape_and_dtype(trained_cnn, digits):
    y = predict(trained_cnn, digits.test.images, batch_size=7)
    assert y.dtype == torch.int64 and y.shape == (len(digits.test),)
