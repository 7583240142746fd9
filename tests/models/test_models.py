"""Tests of the model zoo: every architecture builds, runs, trains, is seeded and validates its inputs."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from modelproof.util.errors import ConfigError
from modelproof.models import (
    ARCHITECTURES,
    ZooModel,
    architecture_record,
    build_from_record,
    build_model,
    describe,
)

EXPECTED = ("mlp", "cnn", "cnn-bn", "irnn", "lenet1", "lenet3", "lenet5", "vgg11", "vgg13", "vgg16", "vgg19",
            "resnet18", "resnet34", "resnet101", "resnet152", "resnet20", "preact-resnet18", "preact-resnet34",
            "wrn-22-4", "mobilenetv2", "googlenet", "dpn26")
SMALL = ("mlp", "cnn", "cnn-bn", "irnn", "lenet1", "lenet3")
NUM_CLASSES = 7


def _forward_backward(model: ZooModel, shape: tuple[int, int, int], batch: int) -> torch.Tensor:
    """One training step's forward and backward pass on random [0,1] images; returns the logits."""
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(batch, *shape, generator=gen)
    y = torch.randint(0, model.num_classes, (batch,), generator=gen)
    model.train()
    with torch.random.fork_rng(devices=[]):  # fixed dropout masks, caller's RNG untouched
        torch.manual_seed(1)
        logits = model(x)
    nn.functional.cross_entropy(logits, y).backward()
    return logits


def _assert_trains(model: ZooModel, shape: tuple[int, int, int], batch: int) -> None:
    logits = _forward_backward(model, shape, batch)
    assert logits.shape == (batch, NUM_CLASSES)
    assert torch.isfinite(logits).all()
    for name, p in model.named_parameters():
        assert p.grad is not None, f"no gradient reached {name}"
        assert torch.isfinite(p.grad).all(), f"non-finite gradient in {name}"
        assert p.grad.abs().sum() > 0, f"zero gradient in {name}"


def test_architecture_names_and_descriptions() -> None:
    assert ARCHITECTURES == EXPECTED
    for name in ARCHITECTURES:
        text = describe(name)
        assert text and "\n" not in text
    assert describe("ResNet18") == describe("resnet18")


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32)], ids=["28x28x1", "32x32x3"])
@pytest.mark.parametrize("name", EXPECTED)
def test_every_architecture_builds_runs_and_trains(name: str, shape: tuple[int, int, int]) -> None:
    model = build_model(name, NUM_CLASSES, shape, seed=0)
    assert isinstance(model, ZooModel)
    assert isinstance(model.head, nn.Linear) and model.head.out_features == NUM_CLASSES
    assert model.arch == name
    assert json.loads(json.dumps(model.arch_kwargs)) == model.arch_kwargs
    assert model.input_shape == shape and model.num_classes == NUM_CLASSES
    batch = 2 if name.startswith(("vgg", "resnet", "preact", "wrn", "mobilenet", "googlenet", "dpn")) else 4
    _assert_trains(model, shape, batch)
    model.eval()
    with torch.no_grad():
        feats = model.features(model.normalize(torch.rand(2, *shape)))
    assert feats.shape == (2, model.head.in_features)


@pytest.mark.parametrize("name", SMALL)
def test_small_nets_accept_digits_size(name: str) -> None:
    model = build_model(name, NUM_CLASSES, (1, 8, 8))
    _assert_trains(model, (1, 8, 8), 4)


def test_vgg_skips_pools_on_small_inputs() -> None:
    pools = lambda m: sum(isinstance(x, nn.MaxPool2d) for x in m.modules())  # noqa: E731
    assert pools(build_model("vgg11", 10, (3, 32, 32))) == 5
    assert pools(build_model("vgg11", 10, (1, 8, 8))) == 3


def test_paper_zoo_parameter_counts() -> None:
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    # kuangliu/pytorch-cifar's GoogLeNet and DPN-26 for 3x32x32 and 10 classes (ours: no conv biases
    # before BatchNorm, so slightly fewer parameters than kuangliu's).
    assert 6_000_000 < count(build_model("googlenet", 10, (3, 32, 32))) < 6_300_000
    assert 11_000_000 < count(build_model("dpn26", 10, (3, 32, 32))) < 12_000_000


def test_keras_parameter_counts() -> None:
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(build_model("mlp", 10, (1, 28, 28))) == 669_706
    # The current Keras mnist_cnn; the frontier-stitching paper quotes 710,218 for an older version.
    assert count(build_model("cnn", 10, (1, 28, 28))) == 1_199_882


def test_irnn_initialisation() -> None:
    rnn = build_model("irnn", 10, (1, 28, 28), seed=3).features.rnn
    assert torch.equal(rnn.weight_hh_l0, torch.eye(100))
    assert torch.count_nonzero(rnn.bias_ih_l0) == 0 and torch.count_nonzero(rnn.bias_hh_l0) == 0
    assert rnn.weight_ih_l0.shape == (100, 28)
    assert 0.0009 < rnn.weight_ih_l0.std().item() < 0.0011
    assert rnn.nonlinearity == "relu"


@pytest.mark.parametrize("name", ["mlp", "cnn", "irnn", "lenet5", "resnet20", "wrn-22-4", "mobilenetv2"])
def test_seeded_and_leaves_global_rng_alone(name: str) -> None:
    torch.manual_seed(1234)
    before = torch.get_rng_state()
    a = build_model(name, 10, (1, 28, 28), seed=5)
    assert torch.equal(torch.get_rng_state(), before)
    b = build_model(name, 10, (1, 28, 28), seed=5)
    c = build_model(name, 10, (1, 28, 28), seed=6)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


def test_rebuild_from_record_and_kwargs() -> None:
    model = build_model("mlp", 5, (3, 16, 16), seed=2, hidden=64, dropout=0.1,
                        mean=[0.5, 0.4, 0.3], std=[0.2, 0.2, 0.25])
    assert model.arch_kwargs == {"hidden": 64, "dropout": 0.1}
    assert model.head.in_features == 64
    record = json.loads(json.dumps(architecture_record(model)))
    again = build_from_record(record, seed=2)
    assert all(torch.equal(v, again.state_dict()[k]) for k, v in model.state_dict().items())
    same = build_model(model.arch, model.num_classes, model.input_shape, seed=2, **model.arch_kwargs)
    assert same.head.in_features == 64
    assert torch.allclose(model.normalize.std.flatten(), torch.tensor([0.2, 0.2, 0.25]))


def test_unknown_architecture_is_named() -> None:
    with pytest.raises(ConfigError, match="resnet99") as info:
        build_model("resnet99", 10, (3, 32, 32))
    assert "resnet18" in str(info.value) and "mobilenetv2" in str(info.value)
    with pytest.raises(ConfigError, match="nope"):
        describe("nope")


@pytest.mark.parametrize("name, shape, minimum", [("lenet5", (1, 8, 8), 12), ("cnn", (1, 5, 5), 6),
                                                  ("lenet1", (3, 3, 9), 4)])
def test_too_small_input_names_shape_and_minimum(name: str, shape: tuple[int, int, int], minimum: int) -> None:
    with pytest.raises(ConfigError, match=r"\(" + ", ".join(map(str, shape)) + r"\)") as info:
        build_model(name, 10, shape)
    assert f"at least {minimum}" in str(info.value)


@pytest.mark.parametrize("kwargs, fragment", [
    ({"num_classes": 1}, "num_classes"),
    ({"input_shape": (2, 28, 28)}, "channels"),
    ({"input_shape": (1, 28)}, "input_shape"),
    ({"mean": [0.1, 0.2]}, "mean"),
    ({"std": [0.0]}, "std"),
    ({"seed": -1}, "seed"),
    ({"width": 3}, "width"),
    ({"dropout": 1.5}, "dropout"),
])
def test_bad_arguments_raise_config_error(kwargs: dict, fragment: str) -> None:
    args = {"name": "mlp", "num_classes": 10, "input_shape": (1, 28, 28), **kwargs}
    with pytest.raises(ConfigError, match=fragment):
        build_model(**args)
