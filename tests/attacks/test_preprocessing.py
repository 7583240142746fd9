"""Input preprocessing in front of the model: each transform does what it says; the wrapper saves, loads, serves."""

from __future__ import annotations

import pytest
import torch

from modelproof.attacks import (FeatureSqueezing, InputQuantisation, InputSmoothing, JPEGCompression, PreprocessedModel,
                                run_attack)
from modelproof.attacks.saving import save_attacked
from modelproof.attacks.transforms import apply_steps, check_step, gaussian_kernel, jpeg, quantize_levels, reduce_bits
from modelproof.attacks.transforms import window_filter
from modelproof.models.modelfile import load_model, weights_digest
from modelproof.suspects.local import open_suspect
from modelproof.util.errors import ConfigError, ModelFileError

GEN = torch.Generator().manual_seed(0)
IMAGES = torch.rand(6, 1, 12, 12, generator=GEN)


def test_bit_depth_and_quantisation_levels():
    one = reduce_bits(IMAGES, 1)
    assert set(one.unique().tolist()) <= {0.0, 1.0} and torch.equal(one, (IMAGES >= 0.5).float())
    four = reduce_bits(IMAGES, 4)
    assert torch.allclose(four * 15, (four * 15).round()) and float((four - IMAGES).abs().max()) <= 0.5 / 15 + 1e-6
    q = quantize_levels(torch.tensor([0.0, 0.03, 0.0625, 0.5, 0.99, 1.0]), 16)
    assert torch.allclose(q, torch.tensor([1, 1, 3, 17, 31, 31]) / 32)


def test_smoothing_filters():
    flat = torch.full((2, 3, 8, 8), 0.4)
    for step in ({"transform": "gaussian", "std": 0.5}, {"transform": "mean", "size": 3},
                 {"transform": "median", "size": 2}):
        assert torch.allclose(apply_steps(flat, [step]), flat)  # a constant image is left alone
    k = gaussian_kernel(0.5)
    assert len(k) == 5 and abs(float(k.sum()) - 1) < 1e-6 and int(k.argmax()) == 2
    salt = torch.zeros(1, 1, 7, 7)
    salt[0, 0, 3, 3] = 1.0
    assert float(window_filter(salt, 3, "median").max()) == 0.0  # a lone bright pixel is removed
    assert abs(float(window_filter(salt, 3, "mean")[0, 0, 3, 3]) - 1 / 9) < 1e-6
    blurred = apply_steps(salt, [{"transform": "gaussian", "std": 1.0}])
    assert 0 < float(blurred[0, 0, 3, 3]) < 1 and abs(float(blurred.sum()) - 1.0) < 1e-4


def test_jpeg_round_trips_through_pillow_at_the_quality_asked():
    smooth = torch.linspace(0, 1, 16).repeat(16, 1)[None, None].repeat(2, 1, 1, 1)
    out = jpeg(smooth, 95)
    assert out.shape == smooth.shape and torch.allclose(out * 255, (out * 255).round())
    assert 0 < float((out - smooth).abs().mean()) < 0.02
    assert float((jpeg(IMAGES, 10) - IMAGES).abs().mean()) > float((jpeg(IMAGES, 95) - IMAGES).abs().mean())
    colour = jpeg(torch.rand(1, 3, 8, 8, generator=GEN), 50)
    assert colour.shape == (1, 3, 8, 8)
    with pytest.raises(ConfigError, match="1 or 3 channels"):
        jpeg(torch.rand(1, 2, 8, 8), 50)


@pytest.mark.parametrize("step, message", [
    ({"transform": "jpeg", "quality": 0}, "jpeg quality must be an integer in \\[1, 95\\]"),
    ({"transform": "gaussian", "std": -1}, "std must be a number"),
    ({"transform": "bits", "bits": 9}, "bits bits must be"),
    ({"transform": "blur", "size": 3}, "transform one of"),
    ({"transform": "mean", "size": 3, "std": 1}, "exactly one parameter"),
])
def test_bad_steps_are_refused(step, message):
    with pytest.raises(ConfigError, match=message):
        check_step(step)


def test_wrapper_answers_the_model_on_transformed_inputs_and_leaves_the_model_unchanged(trained_cnn, digits):
    outcome = JPEGCompression(quality=50).perform(trained_cnn, digits.attacker)
    wrapped = outcome.model
    assert isinstance(wrapped, PreprocessedModel) and outcome.details["transforms"] == "jpeg quality=50"
    assert weights_digest(wrapped.model) == weights_digest(trained_cnn)
    x = digits.test.images[:20]
    with torch.no_grad():
        assert torch.equal(wrapped(x), trained_cnn(jpeg(x, 50)))
    twice = InputSmoothing(filter="median", epochs=0).attack(wrapped, digits.attacker)  # appended, one wrapper
    assert isinstance(twice.model, type(trained_cnn)) and twice.describe() == "jpeg quality=50 -> median size=3"


def test_defaults_stay_plausible_and_squeezing_follows_xu_et_al(mlp16, digits16, trained_cnn, digits):
    for attack in (JPEGCompression(), InputSmoothing(), InputSmoothing(filter="mean"), InputQuantisation(),
                   FeatureSqueezing(bits=4)):  # 16x16 digits: a 3x3 window is a fifth of an 8x8 digit
        result = run_attack(attack, mlp16, digits16)
        assert result.plausible, (attack, result.accuracy_before, result.accuracy_after)
    assert FeatureSqueezing().steps((1, 28, 28)) == [{"transform": "bits", "bits": 1}]
    assert FeatureSqueezing().steps((3, 32, 32)) == [{"transform": "bits", "bits": 5}]
    assert FeatureSqueezing(bits="3", median=2).steps((1, 8, 8))[1] == {"transform": "median", "size": 2}
    tuned = InputSmoothing(filter="median", epochs=1).perform(trained_cnn, digits.attacker)
    assert tuned.details["fine_tuned_epochs"] == 1 and weights_digest(tuned.model.model) != weights_digest(trained_cnn)


def test_preprocessed_model_saves_loads_and_opens_as_a_suspect(trained_cnn, digits, tmp_path):
    wrapped = InputSmoothing(filter="gaussian", std=0.7).attack(
        FeatureSqueezing(bits=3).attack(trained_cnn, digits.attacker), digits.attacker)
    path = save_attacked(wrapped, tmp_path / "p.safetensors", attack="smoothing", dataset="digits",
                         extra={"split_seed": 0})
    loaded = load_model(path)
    assert isinstance(loaded, PreprocessedModel) and loaded.steps == wrapped.steps
    assert loaded.record.extra["split_seed"] == 0 and loaded.record.arch == "preprocessed"
    with torch.no_grad():
        assert torch.equal(loaded(digits.test.images), wrapped(digits.test.images))
    suspect = open_suspect(path)
    assert torch.equal(suspect.predict(digits.test.images[:30]), wrapped(digits.test.images[:30]).argmax(1))
    with pytest.raises(ModelFileError, match="cannot be exported to ONNX"):
        save_attacked(wrapped, tmp_path / "p.onnx", attack="smoothing")
