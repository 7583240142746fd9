"""Device mixing caught on a CPU-only machine: the model's weights become *fake* CUDA tensors.

torch's FakeTensorMode propagates shapes and devices without data and raises
``FakeTensorDeviceMismatchError`` ("Expected all tensors to be on the same device") exactly where a
real GPU run would, so the forward paths that feed data to a model can be checked here. Only forward
paths: backward through fake CUDA tensors aborts the process in a CPU-only build, and anything that
reads values (``.item()``, ``bool(...)``, digests) needs real data; everything runs under ``no_grad``. The paths with gradients run in
``tests/cli/test_cuda.py`` on a GPU.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import torch
from torch import nn

fake_tensor = pytest.importorskip("torch._subclasses.fake_tensor")

from modelproof.models import build_model  # noqa: E402
from modelproof.models.devices import model_device  # noqa: E402


def fake_cuda(model: nn.Module) -> nn.Module:
    """Replace every parameter and buffer of ``model`` by a fake CUDA tensor of the same shape (call in the mode)."""
    for module in model.modules():
        for name, p in list(module._parameters.items()):
            if p is not None:
                module._parameters[name] = nn.Parameter(torch.zeros(p.shape, dtype=p.dtype, device="cuda"),
                                                        requires_grad=p.requires_grad)
        for name, b in list(module._buffers.items()):
            if b is not None:
                module._buffers[name] = torch.zeros(b.shape, dtype=b.dtype, device="cuda")
    return model


@contextmanager
def fake_mode() -> Iterator[None]:
    """Inside it, tensors carry shapes and devices only (models are built before entering it).

    Gradients stay off: recording autograd through fake CUDA tensors aborts a CPU-only process.
    """
    with fake_tensor.FakeTensorMode(allow_non_fake_inputs=True), torch.no_grad():
        yield


def test_fake_cuda_catches_mixing():
    """The harness itself: CPU data into a fake CUDA model fails as on a GPU; moved data passes."""
    model = build_model("mlp", 10, (1, 8, 8), seed=0)
    with fake_mode():
        fake_cuda(model)
        assert model_device(model).type == "cuda"
        with pytest.raises(RuntimeError, match="same device"):
            model(torch.zeros(2, 1, 8, 8))
        assert model(torch.zeros(2, 1, 8, 8).to(model_device(model))).shape == (2, 10)


@pytest.mark.parametrize("init", ["TL", "TR", "RR", "RL"])
def test_ipguard_starts_on_a_gpu_model(digits, init):
    """The issue's traceback: ``initial_points`` fed CPU images to a CUDA model. Results come back on the CPU."""
    from modelproof.protections.fingerprints.ipguard import initial_points

    model = build_model("cnn", 10, (1, 8, 8), seed=0)
    with fake_mode():
        x0, i, j = initial_points(fake_cuda(model), digits.owner, 6, init, torch.Generator().manual_seed(0))
    assert x0.device.type == i.device.type == j.device.type == "cpu" and x0.shape == (6, 1, 8, 8)


def test_inference_helpers_and_suspect_on_a_gpu_model(digits):
    """logits, predict and the torch suspect's scores: batches moved to the model, answers on the CPU."""
    from modelproof.models.training import logits, predict
    from modelproof.suspects.local import TorchSuspect

    model, images = build_model("cnn", 10, (1, 8, 8), seed=0), digits.test.images[:20]
    with fake_mode():
        fake_cuda(model)
        assert logits(model, images, batch_size=8).device.type == "cpu"
        assert predict(model, images).device.type == "cpu"
        suspect = TorchSuspect(model, identity="fake-cuda")
        assert suspect.num_classes == 10 and suspect.logits(images).device.type == "cpu"


def test_blind_encoder_on_a_gpu(digits):
    """The blind watermark's encoder (on the host's device) turns CPU images into CPU key samples."""
    from modelproof.protections.watermarks.blind.logo import make_logo
    from modelproof.protections.watermarks.blind.networks import build_encoder, encode

    shape = (1, 8, 8)
    encoder, logo = build_encoder(shape, seed=0), make_logo(shape)
    with fake_mode():
        samples = encode(fake_cuda(encoder), logo, digits.test.images[:5], batch_size=2)
        assert samples.device.type == "cpu" and samples.shape == (5, *shape)
