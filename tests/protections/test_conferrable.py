"""Conferrable adversarial examples (Lukas et al.): the score, the surrogates, the key, soundness, the CLI."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from typer.testing import CliRunner

from modelproof.cli.app import app
from modelproof.keys.container import load_key
from modelproof.models.modelfile import save_model, weights_digest
from modelproof.models.training import predict
from modelproof.protections.base import make_protection
from modelproof.protections.fingerprints.conferrable import Conferrable, conferrability, targets
from modelproof.protections.fingerprints.surrogates import augmented
from modelproof.protections.selection import Judge, Selection
from modelproof.references.finalize import finalize_key
from modelproof.suspects.local import TorchSuspect
from modelproof.util.errors import ConfigError
from modelproof.verification.verifier import verify

TINY = {"secret": "conf-test", "points": 20, "steps": 15, "oversample": 3, "references": 2,
        "students": ["mlp", "lenet1"], "copies": 1}


@pytest.fixture(scope="module")
def small(digits16):
    """300 of the owner's images: surrogates and references train on them in a few seconds."""
    return digits16.owner.subset(torch.arange(300))


@pytest.fixture(scope="module")
def protected(mlp16, small):
    return Conferrable(**TINY).protect(mlp16, small, seed=0)


def test_conferrability_is_high_only_where_surrogates_agree_and_references_do_not():
    ps = torch.tensor([[0.9, 0.1], [0.9, 0.1]])
    pr = torch.tensor([[0.1, 0.9], [0.9, 0.1]])
    conf = conferrability(ps, pr)
    assert conf[0, 0] == pytest.approx(0.81) and conf[1, 0] == pytest.approx(0.09)


def test_augmented_images_stay_in_range_and_keep_their_labels(digits16):
    data = digits16.owner.subset(torch.arange(50))
    out = augmented(data, 2, torch.Generator().manual_seed(0))
    assert len(out) == 150 and out.images.min() >= 0 and out.images.max() <= 1
    assert torch.equal(out.labels[:50], data.labels) and set(out.labels[50:].tolist()) <= set(data.labels.tolist())


def test_targets_are_never_the_source_answer(mlp16, digits16):
    x = digits16.owner.images[:30]
    t = targets(mlp16, [mlp16], [mlp16], x)
    assert (t != predict(mlp16, x)).all()


def test_key_holds_adversarial_examples_within_eps_that_no_reference_answers(protected, mlp16, small):
    key = protected.key
    assert 1 <= len(key) <= 20 and key.method == "conferrable"
    assert torch.equal(predict(mlp16, key.inputs), key.labels)  # a fingerprint records the model's answers
    starts = small.images
    dist = (key.inputs[:, None] - starts[None]).abs().flatten(2).amax(2).min(1).values
    assert (dist <= key.params["eps"] + 1e-5).all()
    assert len(key.params["surrogates"]) == 4 and len(key.params["references"]) == 2
    assert protected.report["kept"] == len(key) and "secret" not in key.params


def test_calibrated_key_owns_its_model_or_is_refused_never_weak(protected, mlp16, digits16, references16,
                                                                  negatives16):
    try:
        final = finalize_key(protected, Conferrable(**TINY), digits16.owner, source_digest=weights_digest(mlp16),
                             trained=references16)
    except ConfigError as exc:
        assert "does not prove its own protected model" in str(exc)
        return
    assert verify(final.key, TorchSuspect(mlp16)).decision == "owned"
    assert all(verify(final.key, n).decision != "owned" for n in negatives16)


def test_a_one_point_key_is_refused(protected, digits16, references16):
    key = protected.key
    one = dataclasses.replace(key, inputs=key.inputs[:1].contiguous(), labels=key.labels[:1].contiguous())
    with pytest.raises(ConfigError, match="does not prove its own protected model"):
        finalize_key(dataclasses.replace(protected, key=one), Conferrable(**TINY), digits16.owner,
                     trained=references16)


def test_selection_judges_are_the_references_and_are_recorded(mlp16, small, references16):
    judges = tuple(Judge(r.name, r.digest, r.suspect, getattr(r.suspect, "model", None)) for r in references16[:2])
    result = Conferrable(**{**TINY, "students": ["mlp"], "eps": 0.25, "steps": 30}).protect(mlp16, small, seed=0,
                                                                  selection=Selection(judges))
    params = result.key.params
    assert [r["digest"] for r in params["references"]] == [j.digest for j in judges]
    assert params["selection"]["references"] == [j.digest for j in judges]
    assert (Selection(judges).answers(result.key.inputs, result.key.labels) == 0).all()


def test_surrogates_are_made_once_per_model_and_data_and_change_no_key(mlp16, small, tmp_path, monkeypatch):
    """Kept in the selection's store, the surrogates (and own references) of a second key, with another secret,
    are read, not trained, and a key made with the store is the key made without it."""
    from modelproof.protections.fingerprints import surrogates

    trained = []
    real_fit = surrogates.fit
    monkeypatch.setattr(surrogates, "fit", lambda *a, **k: trained.append(1) or real_fit(*a, **k))
    judges = (Judge("half the owner", "digest-half", PartOwner(mlp16)),)
    params = {**TINY, "eps": 0.25, "steps": 10}
    first = Conferrable(**params).protect(mlp16, small, seed=0, selection=Selection(judges, store=tmp_path))
    files = list((tmp_path / "conferrable-surrogates").glob("*.safetensors"))
    # the two copies, the students and, the judge having no model to take gradients of, 2 own references
    assert len(trained) == len(files) == 2 + len(TINY["students"]) + TINY["references"]
    trained.clear()
    again = Conferrable(**params).protect(mlp16, small, seed=0, selection=Selection(judges, store=tmp_path))
    other = Conferrable(**{**params, "secret": "another"}).protect(mlp16, small, seed=0,
                                                                   selection=Selection(judges, store=tmp_path))
    assert trained == []
    plain = Conferrable(**params).protect(mlp16, small, seed=0, selection=Selection(judges))
    assert len(trained) == len(files)
    assert torch.equal(first.key.inputs, plain.key.inputs) and torch.equal(again.key.inputs, plain.key.inputs)
    assert first.key.params["surrogates"] == plain.key.params["surrogates"] == other.key.params["surrogates"]
    trained.clear()
    Conferrable(**params).protect(mlp16, small.subset(torch.arange(250)), seed=0,
                                  selection=Selection(judges, store=tmp_path))
    assert len(trained) == len(files)  # other data: their own surrogates


class PartOwner:
    """A judge answering as the owner's model on about half the inputs (chosen by their pixel sum), so that
    about half the candidates are answered and a first draw leaves the key short."""

    def __init__(self, model):
        self.model = model

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        labels = predict(self.model, images)
        half = (images.flatten(1).sum(1) * 100).long() % 2 == 0
        return torch.where(half, labels, (labels + 1) % 10)


def test_under_selection_too_few_survivors_draw_again_from_unused_starts(mlp16, small):
    judge = Judge("half the owner", "digest-half", PartOwner(mlp16))
    result = Conferrable(**{**TINY, "eps": 0.25, "steps": 20}).protect(mlp16, small, seed=0,
                                                                       selection=Selection((judge,)))
    record, key = result.key.params["selection"], result.key
    assert record["rounds"] >= 2 and record["tried"] == result.report["candidates"] > 20 * 3
    assert record["tried"] <= record["budget"] == 20 * 4 * 3 and 1 <= len(key) <= 20
    assert (Selection((judge,)).answers(key.inputs, key.labels) == 0).all()
    assert len({row.numpy().tobytes() for row in key.inputs.flatten(1)}) == len(key)
    assert torch.equal(predict(mlp16, key.inputs), key.labels)


@pytest.mark.parametrize("bad", [{"points": 0}, {"eps": 0.0}, {"eps": 2.0}, {"lambdas": [1, 1]},
                                 {"students": "mlp"}, {"targeted": "yes"}, {"copies": -1}])
def test_bad_parameters_raise_config_error(bad):
    with pytest.raises(ConfigError):
        make_protection("conferrable", **bad)


def test_cli_protect_conferrable_writes_a_key_for_its_model(mlp16, tmp_path):
    model = save_model(mlp16, tmp_path / "mlp.safetensors", dataset="digits", extra={"size": 16})
    args = ["protect", "conferrable", "--model", model, "--size", "16", "--points", "10", "--steps", "30", "--eps", "0.25",
            "--oversample", "2", "--search-references", "1", "--copies", "0", "--no-selection",
            "--no-calibration", "--allow-weak", "--out", tmp_path / "out", "--json"]
    r = CliRunner().invoke(app, [str(a) for a in args])
    assert r.exit_code == 0, r.output
    summary = json.loads(r.stdout)
    assert summary["method"] == "conferrable" and 1 <= summary["key_size"] <= 10
    key = load_key(tmp_path / "out" / "key.mpkey")
    assert key.model_digest == weights_digest(mlp16) and "warning" in key.params  # uncalibrated: never owned
