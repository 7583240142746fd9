"""Tests of the blind watermark (Li et al.): encoder, logo, Algorithm 1, secret file, CLI, bad inputs.

One short joint training on the bundled digits (16x16, a 64-unit MLP, a width-8 encoder, the
host term weighted 1 so that a few epochs suffice) is shared by the tests that need a result.
"""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from modelproof.cli.app import app
from modelproof.data.splits import Dataset, load_splits
from modelproof.util.errors import ConfigError, KeyRefused, KeyFileError
from modelproof.keys.container import load_key
from modelproof.protections.base import make_protection
from modelproof.suspects.local import TorchSuspect
from modelproof.models.training import TrainConfig, evaluate, train_new
from modelproof.verification.verifier import verify
from modelproof.protections.watermarks.blind import BlindWatermark, load_secret, save_secret
from modelproof.protections.watermarks.blind.logo import logo_from_file, make_logo
from modelproof.protections.watermarks.blind.networks import build_encoder, encode
from modelproof.protections.watermarks.embedding import key_accuracy
from cli_secrets import passphrase, secret

FAST = dict(secret="test", mode="finetune", epochs=16, key_fraction=0.03, batch_size=50, host_lr=0.05, width=8,
            delta=1.0)


@pytest.fixture(scope="module")
def splits():
    return load_splits("digits", size=16, seed=0)


@pytest.fixture(scope="module")
def base(splits):
    torch.set_num_threads(1)
    return train_new("mlp", splits.owner, TrainConfig(epochs=15, lr=0.003), seed=0, hidden=64)[0]


@pytest.fixture(scope="module")
def result(splits, base):
    return make_protection("blind", **FAST).protect(base, splits.owner, seed=0, test=splits.test)


@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 16, 16), (3, 13, 10)])
def test_encoder_output_has_input_shape_and_lies_in_unit_interval(shape) -> None:
    encoder = build_encoder(shape, seed=0, width=4)
    x = torch.rand(5, *shape, generator=torch.Generator().manual_seed(0))
    out = encode(encoder, make_logo(shape), x)
    assert out.shape == x.shape and out.dtype == torch.float32
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    assert torch.equal(out, encode(encoder, make_logo(shape), x))  # deterministic, batch-independent
    assert torch.equal(out[:2], encode(encoder, make_logo(shape), x[:2]))


def test_logo_text_and_file(tmp_path) -> None:
    from PIL import Image

    text = make_logo((1, 16, 16), text="TEST")
    assert text.shape == (1, 16, 16) and float(text.max()) > 0.5 and float(text.min()) == 0.0
    assert not torch.equal(text, make_logo((1, 16, 16), text="ACME"))
    Image.new("RGB", (40, 20), (255, 0, 0)).save(tmp_path / "logo.png")
    rgb = logo_from_file(tmp_path / "logo.png", (3, 8, 8))
    assert rgb.shape == (3, 8, 8) and torch.allclose(rgb[0], torch.ones(8, 8)) and float(rgb[1:].max()) == 0.0
    assert logo_from_file(tmp_path / "logo.png", (1, 8, 8)).shape == (1, 8, 8)


def test_short_run_is_imperceptible_and_the_host_learns_the_key(splits, base, result) -> None:
    report = result.report
    assert report["imperceptibility"]["ssim_mean"] > 0.85
    assert report["imperceptibility"]["psnr_mean"] > 18
    assert key_accuracy(result.model, result.key.inputs, result.key.labels) >= 0.8
    assert key_accuracy(base, result.key.inputs, result.key.labels) <= 0.3  # targets exclude the true label
    assert key_accuracy(result.model, result.secret.sources, result.key.labels) <= 0.3  # sources keep their label
    assert len(result.key) == round(0.03 * len(splits.owner))
    assert evaluate(result.model, splits.test) > 0.8
    assert verify(result.key, TorchSuspect(result.model)).decision == "owned"
    assert verify(result.key, TorchSuspect(base)).decision == "not owned"
    assert result.key.null_match_prob >= 1 / 9
    assert "secret" not in result.key.params and "logo_text" not in result.key.params


def test_targets_never_equal_the_true_label(splits, result) -> None:
    sources = {x.numpy().tobytes(): int(y) for x, y in zip(splits.owner.images, splits.owner.labels)}
    true = torch.tensor([sources[x.numpy().tobytes()] for x in result.secret.sources])
    assert bool((true != result.key.labels).all())


def test_secret_round_trip_regenerates_identical_key_samples(tmp_path, result) -> None:
    path = save_secret(result.secret, tmp_path / "key.mpsecret")
    again = load_secret(path)
    assert torch.equal(again.regenerate(), result.key.inputs)
    assert again.key_digest == result.key.digest()
    fresh = torch.rand(3, *result.key.input_shape, generator=torch.Generator().manual_seed(1))
    assert torch.equal(again.encode(fresh), result.secret.encode(fresh))
    locked = save_secret(result.secret, tmp_path / "locked.mpsecret", passphrase="pw")
    assert torch.equal(load_secret(locked, "pw").regenerate(), result.key.inputs)
    with pytest.raises(KeyFileError, match="wrong passphrase"):
        load_secret(locked, "nope")
    with pytest.raises(KeyFileError, match="encrypted"):
        load_secret(locked)
    raw = bytearray(path.read_bytes())
    raw[-5] ^= 0xFF
    (tmp_path / "bad.mpsecret").write_bytes(bytes(raw))
    with pytest.raises(KeyFileError, match="digest"):
        load_secret(tmp_path / "bad.mpsecret")


def test_another_logo_gives_key_samples_the_host_does_not_answer(splits, base, result) -> None:
    other = make_protection("blind", **{**FAST, "secret": "other", "epochs": 2}, logo_text="ACME")
    forged = other.protect(base, splits.owner, seed=1)
    assert not torch.equal(forged.secret.logo, result.secret.logo)
    assert key_accuracy(result.model, forged.key.inputs, forged.key.labels) <= 0.3
    assert verify(forged.key, TorchSuspect(result.model)).decision == "not owned"


@pytest.mark.parametrize("params, fragment", [
    ({"key_fraction": 0.0}, "key_fraction"), ({"key_fraction": 1.0}, "key_fraction"),
    ({"key_fraction": -0.5}, "key_fraction"), ({"key_fraction": "1%"}, "key_fraction"),
    ({"mode": "later"}, "mode"), ({"epochs": 0}, "epochs"), ({"alpha": -1}, "alpha"),
    ({"logo": "a.png", "logo_text": "X"}, "not both"),
])
def test_bad_parameters_raise_one_line_errors(params, fragment) -> None:
    with pytest.raises(ConfigError, match=fragment) as info:
        BlindWatermark(**params)
    assert "\n" not in str(info.value)


def test_bad_data_and_logo_raise_one_line_errors(tmp_path, splits, base) -> None:
    (tmp_path / "logo.png").write_text("not an image")
    with pytest.raises(ConfigError, match="not an image") as info:
        BlindWatermark(secret="x", logo=str(tmp_path / "logo.png"), epochs=1).protect(base, splits.owner)
    assert "\n" not in str(info.value)
    two = Dataset(torch.rand(20, 2, 16, 16), torch.arange(20) % 10, tuple("0123456789"), "two-channel")
    plain = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(2 * 16 * 16, 10))
    with pytest.raises(ConfigError, match="1 or 3 channels"):
        BlindWatermark(secret="x", epochs=1).protect(plain, two)
    with pytest.raises(ConfigError, match="gives 0 key samples"):
        BlindWatermark(secret="x", epochs=1, key_fraction=0.0001).protect(base, splits.owner)


def _run(args: list[str]):
    return CliRunner().invoke(app, args, catch_exceptions=False)


def test_cli_protect_blind_and_fresh_samples(tmp_path) -> None:
    out = tmp_path / "run"
    res = _run(["protect", "blind", "--arch", "mlp", "--size", "16", "--epochs", "2", "--key-fraction", "0.02",
                *secret("cli"), *passphrase("pw"), "--out", str(out), "--json", "--allow-weak"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)  # 2 epochs: likely a weak key, written only because of --allow-weak
    warning = load_key(out / "key.mpkey", "pw").params.get("warning", "")
    assert (summary["self_check"] == "passed") != ("does not prove its own protected model" in warning)
    assert summary["method"] == "blind" and summary["mode"] == "scratch"
    assert 0 < summary["imperceptibility"]["ssim_mean"] <= 1 and summary["secret_encrypted"] is True
    for name in ("key.mpkey", "key.mpsecret", "key-samples.png", "model.safetensors"):
        assert (out / name).is_file()
    assert "labels" not in summary and "inputs" not in summary and "cli" not in json.dumps(summary["history"])
    assert not (tmp_path / "run.resume").exists()  # its checkpoint is removed once the folder is written
    res = _run(["keys", "blind-samples", str(out / "key.mpkey"), *passphrase("pw"), "--size", "16", "--count", "5",
                "--model", str(out / "model.safetensors"), "-o", str(tmp_path / "fresh.safetensors"), "--json"])
    assert res.exit_code == 0, res.output
    fresh = json.loads(res.stdout)
    assert fresh["regenerated_exactly"] is True and fresh["count"] == 5 and 0 <= fresh["true_label_rate"] <= 1
    from safetensors.torch import load_file

    assert load_file(tmp_path / "fresh.safetensors")["samples"].shape == (5, 1, 16, 16)


@pytest.mark.parametrize("args, fragment", [
    (["--arch", "lenet5"], "lenet5"),  # 8x8 digits are too small for LeNet-5
    (["--arch", "mlp", "--size", "6"], "at least 8x8"),
    (["--arch", "mlp", "--key-fraction", "1.5"], "--key-fraction"),
    (["--arch", "mlp", "--logo", "missing.png"], "logo file not found"),
])
def test_cli_errors_are_one_line(tmp_path, args, fragment) -> None:
    res = CliRunner().invoke(app, ["protect", "blind", *args, *secret("x"), "--epochs", "1", "--out", str(tmp_path / "o")])
    assert res.exit_code == 2
    lines = res.output.strip().splitlines()  # progress lines of a reference population built first may precede it
    assert fragment in lines[-1] and sum(line.startswith("error:") for line in lines) == 1


def test_li_attacker_makes_as_many_blind_key_samples_as_clean_images(result, base, splits) -> None:
    from modelproof.attacks.evasion.detectors import attacker_key_samples

    # the attacker knows the method (own secret and encoder), not the owner's key: as many key samples
    # as it asks for, not the owner's key fraction of its own images
    own = attacker_key_samples(result.key, base, splits.attacker, 60, seed=3)
    assert own.shape == (60, *splits.owner.input_shape)
    assert float(own.min()) >= 0.0 and float(own.max()) <= 1.0
    assert not any(torch.equal(own[0], k) for k in result.key.inputs)


def test_a_collapsed_encoder_is_refused_with_one_line(splits) -> None:
    from modelproof.protections.watermarks.blind.watermark import check_not_collapsed

    from modelproof.protections.watermarks.blind.imperceptibility import imperceptibility

    sources = splits.owner.images[:20]
    near, black = (sources + 0.01).clamp(0, 1), torch.zeros_like(sources)
    check_not_collapsed(imperceptibility(sources, near)["ssim_mean"], near)  # near-identical: accepted
    # all black, as the paper's weights did: a refusal (the grid's "no key"), not a fault
    with pytest.raises(KeyRefused, match="collapsed") as info:
        check_not_collapsed(imperceptibility(sources, black)["ssim_mean"], black)
    assert "\n" not in str(info.value) and "20 repeated" not in str(info.value) and "19 repeated" in str(info.value)


def test_an_interrupted_training_goes_on_from_its_checkpoint_to_the_same_model(tmp_path, splits, base,
                                                                            monkeypatch) -> None:
    from modelproof.protections.checkpoint import Resume
    from modelproof.protections.watermarks.blind import joint

    params = {**FAST, "epochs": 4}
    plain = make_protection("blind", **params).protect(base, splits.owner, seed=0)
    saved, original = [], joint.save_checkpoint

    def save_then_stop(path, tag, tensors, meta, passphrase=None):
        original(path, tag, tensors, meta, passphrase)
        saved.append(meta["epoch"])
        if meta["epoch"] == 2 and len(saved) == 2:
            raise KeyboardInterrupt  # Ctrl-C in the third epoch's first moment

    monkeypatch.setattr(joint, "save_checkpoint", save_then_stop)
    resume = Resume(tmp_path / "out.resume", passphrase="pw", every_s=0.0)  # after every epoch
    with pytest.raises(KeyboardInterrupt):
        make_protection("blind", **params).resume_in(resume).protect(base, splits.owner, seed=0)
    assert saved == [1, 2] and resume.path("blind").is_file()
    assert b"blind" not in resume.path("blind").read_bytes()[:200]  # encrypted with the passphrase
    again = make_protection("blind", **params).resume_in(resume).protect(base, splits.owner, seed=0)
    assert saved == [1, 2, 3, 4]  # epochs 1 and 2 were not trained again
    for name, value in plain.model.state_dict().items():
        assert torch.equal(value, again.model.state_dict()[name]), name
    assert torch.equal(plain.key.inputs, again.key.inputs) and torch.equal(plain.key.labels, again.key.labels)
    assert [row["epoch"] for row in again.report["history"]] == [1, 2, 3, 4]
    assert "resume" not in json.dumps(again.key.params)  # where it resumed from is not part of the key
    other = make_protection("blind", **{**params, "secret": "another"}).resume_in(resume)
    other.protect(base, splits.owner, seed=0)  # another run: the checkpoint is not its own, so it starts over
    assert saved[4:] == [1, 2, 3, 4]


def test_cli_protect_blind_goes_on_after_a_ctrl_c_with_its_random_secret(tmp_path, monkeypatch) -> None:
    from modelproof.protections import checkpoint
    from modelproof.protections.watermarks.blind import joint

    saved, original = [], joint.save_checkpoint

    def save_then_stop(path, tag, tensors, meta, passphrase=None):
        original(path, tag, tensors, meta, passphrase)
        saved.append(meta["epoch"])
        if len(saved) == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint, "SAVE_EVERY_S", 0.0)  # after every epoch (the default: at most once a minute)
    from itertools import count

    from modelproof.keys.container import decrypt_bytes
    from modelproof.protections import base

    drawn = (f"{i:032x}" for i in count(1))  # "random" secrets, each draw another (fixed, so the test is too)
    monkeypatch.setattr(base._secrets, "token_hex", lambda n=16: next(drawn))

    monkeypatch.setattr(joint, "save_checkpoint", save_then_stop)
    out = tmp_path / "run"
    args = ["protect", "blind", "--arch", "mlp", "--size", "16", "--epochs", "3", "--key-fraction", "0.02",
            *passphrase("pw"), "--out", str(out), "--json", "--allow-weak", "--no-selection"]
    # no secret: a random one is drawn (without selection and with --allow-weak, 3 epochs write a key for any secret)
    stopped = _run(args)
    assert stopped.exit_code == 130 and not out.exists()
    kept = tmp_path / "run.resume"
    assert sorted(p.name for p in kept.iterdir()) == ["blind.ckpt", "secret"]
    assert decrypt_bytes((kept / "secret").read_bytes(), "pw") == f"{1:032x}".encode()  # encrypted
    res = _run(args)
    assert res.exit_code == 0, res.output
    assert saved == [1, 2, 3] and not kept.exists()  # epoch 1 was not trained again; the checkpoint is gone
    assert [row["epoch"] for row in json.loads(res.stdout)["history"]] == [1, 2, 3]
