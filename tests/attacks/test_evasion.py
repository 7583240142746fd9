"""Tests of the evasion attack (Ray et al.'s pirate) and the key-sample detectors of Li et al. on the digits."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from modelproof.attacks import ATTACKS, make_attack
from modelproof.attacks.evasion import GRADCAM, SALIENCY, HeatmapExplainer, build_pirate
from modelproof.attacks.evasion.metrics import flag_rate, pirate_report
from modelproof.attacks.evasion.pirate import surrogate_split
from modelproof.attacks.saving import save_attacked
from modelproof.cli.app import app
from modelproof.util.errors import ConfigError
from modelproof.models.modelfile import load_model, save_model, weights_digest
from modelproof.protections.base import make_protection
from modelproof.suspects.local import TorchSuspect
from modelproof.models.training import TrainConfig, predict, train_new

QUICK = dict(tau=0.0, epochs=60, width=0.25)  # small DCGANs, flag above the largest surrogate score


@pytest.fixture(scope="module")
def protected(digits16):
    """A CNN on the 16x16 digits with a Zhang content watermark (4 round blocks of radius 3, 15 inputs)."""
    model, _ = train_new("cnn", digits16.owner, TrainConfig(epochs=15, batch_size=32, lr=0.002), seed=0)
    prot = make_protection("zhang-content", secret="evasion-test", key_size=15, epochs=15)
    return prot.protect(model, digits16.owner, seed=0)


@pytest.fixture(scope="module")
def pirate(protected, digits16):
    surrogate, rest = surrogate_split(digits16.test, 0.5, seed=0)
    before = weights_digest(protected.model)
    pirated, details = build_pirate(protected.model, surrogate, seed=3, **QUICK)
    assert weights_digest(protected.model) == before, "building the pirate modified the stolen model"
    return pirated, details, rest


def test_heatmaps_have_input_side_and_lie_in_unit_interval(trained_cnn, digits) -> None:
    explainer = HeatmapExplainer(trained_cnn)
    maps, labels = explainer(digits.test.images[:20])
    assert explainer.method == GRADCAM and explainer.layer
    assert maps.shape == (20, 1, 8, 8)
    assert float(maps.min()) >= 0.0 and float(maps.max()) <= 1.0 and float(maps.max()) == 1.0
    assert torch.equal(labels, predict(trained_cnn, digits.test.images[:20]))


def test_models_without_convolutions_use_the_saliency_fallback(mlp16, digits16) -> None:
    explainer = HeatmapExplainer(mlp16)
    maps, _ = explainer(digits16.test.images[:6])
    assert explainer.method == SALIENCY and explainer.describe() == {"method": SALIENCY, "layer": ""}
    assert maps.shape == (6, 1, 16, 16) and 0.0 <= float(maps.min()) and float(maps.max()) <= 1.0


def test_pirate_flags_triggers_far_more_often_than_clean_inputs(pirate, protected) -> None:
    pirated, details, rest = pirate
    assert details["heatmap"]["method"] == GRADCAM
    fpr, caught = flag_rate(pirated, rest.images), flag_rate(pirated, protected.key.inputs)
    assert caught >= 0.5 and caught >= fpr + 0.4, (caught, fpr)


def test_unflagged_answers_are_the_stolen_models_and_flagged_ones_are_seeded(pirate, protected) -> None:
    pirated, _, rest = pirate
    images = torch.cat([rest.images[:60], protected.key.inputs])
    found = pirated.detect(images)
    stolen = predict(protected.model, images)
    pirated.reset_answers()
    first = predict(pirated, images)
    keep = ~found["flagged"]
    assert keep.any() and found["flagged"].any()
    assert torch.equal(first[keep], stolen[keep])
    pirated.reset_answers()
    assert torch.equal(predict(pirated, images), first), "same seed, same queries: same answers"
    n = int(found["flagged"].sum())
    expected = torch.randint(0, 10, (n,), generator=torch.Generator().manual_seed(pirated.answer_seed))
    assert torch.equal(first[found["flagged"]], expected)
    pirated.reset_answers(seed=pirated.answer_seed + 1)
    other = predict(pirated, images)
    assert torch.equal(other[keep], stolen[keep]) and not torch.equal(other, first)
    pirated.reset_answers()


def test_save_load_serve_round_trip(pirate, protected, tmp_path) -> None:
    from modelproof.serving.server import create_app
    from modelproof.suspects.http.client import HttpSuspect
    from servers import running

    pirated, _, rest = pirate
    path = save_attacked(pirated, tmp_path / "pirate.safetensors", attack="pirate", dataset="digits")
    loaded = load_model(path)
    assert type(loaded) is type(pirated) and loaded.record.arch == "pirate"
    assert weights_digest(loaded) == weights_digest(pirated)
    images = torch.cat([rest.images[:40], protected.key.inputs])
    pirated.reset_answers()
    want = predict(pirated, images)
    assert torch.equal(predict(loaded, images), want)
    with running(create_app(path)) as url:
        served = HttpSuspect(url, model_name="pirate", batch_size=len(images)).predict(images)
    assert torch.equal(served, want)
    pirated.reset_answers()


def test_pirate_cannot_be_onnx(pirate, tmp_path) -> None:
    from modelproof.util.errors import ModelFileError

    with pytest.raises(ModelFileError, match="ONNX"):
        save_attacked(pirate[0], tmp_path / "p.onnx", attack="pirate")


def test_registered_attack_runs_through_perform(trained_cnn, digits) -> None:
    assert "pirate" in ATTACKS
    surrogate, _ = surrogate_split(digits.test, 0.5, seed=0)
    outcome = make_attack("pirate", tau=0.5, epochs=2, width=0.25).perform(trained_cnn, surrogate, seed=1)
    assert outcome.details["surrogate_images"] == len(surrogate) and len(outcome.details["alphas"]) == 10
    assert TorchSuspect(outcome.model).num_classes == 10


def test_report_measures_fpr_fnr_accuracy_and_time(pirate, protected) -> None:
    pirated, _, rest = pirate
    report = pirate_report(pirated, protected.model, rest, protected.key.inputs, timing_images=32)
    assert 0.0 <= report["fpr"] <= 1.0 and 0.0 <= report["fnr"] <= 1.0
    assert report["accuracy_pirate"] <= report["accuracy_stolen"] + 1e-9 + report["fpr"]
    assert report["time_ratio"] > 1.0


@pytest.mark.parametrize("kwargs, fragment", [({"tau": -1.0}, "tau must be a non-negative"),
                                              ({"tau": float("nan")}, "tau must be a non-negative")])
def test_bad_tau_is_one_line(trained_cnn, digits, kwargs, fragment) -> None:
    with pytest.raises(ConfigError, match=fragment) as info:
        build_pirate(trained_cnn, digits.test, epochs=1, **kwargs)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5])
def test_surrogate_fraction_outside_unit_interval(digits, fraction) -> None:
    with pytest.raises(ConfigError, match="surrogate fraction must be a number strictly between 0 and 1"):
        surrogate_split(digits.test, fraction)


def test_surrogate_missing_a_class_is_named(trained_cnn, digits) -> None:
    no_sevens = digits.test.subset(torch.nonzero(digits.test.labels != 7).flatten())
    with pytest.raises(ConfigError, match=r"class\(es\) 7 ") as info:
        build_pirate(trained_cnn, no_sevens, epochs=1)
    assert "\n" not in str(info.value)


def test_cli_pirate_writes_a_verifiable_model(trained_cnn, tmp_path) -> None:
    runner = CliRunner()
    model = save_model(trained_cnn, tmp_path / "m.safetensors", dataset="digits", extra={"split_seed": 0})
    out = tmp_path / "p.safetensors"
    res = runner.invoke(app, ["attack", "pirate", "--model", str(model), "--dataset", "digits", "--out", str(out),
                              "--surrogate-fraction", "0.5", "--epochs", "2", "--width", "0.25", "--tau", "0.5",
                              "--json", "--quiet"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.output)
    assert summary["surrogate_images"] > 0 and 0.0 <= summary["fpr"] <= 1.0 and summary["time_ratio"] > 0
    assert load_model(out).record.extra["attack"] == "pirate"
    listed = runner.invoke(app, ["attack", "list"])
    assert "pirate" in listed.output
    bad = runner.invoke(app, ["attack", "pirate", "--model", str(model), "--out", str(out), "--surrogate-fraction", "2"])
    assert bad.exit_code == 2 and "surrogate fraction" in bad.output


def test_li_detectors_see_visible_triggers(protected, digits16) -> None:
    from modelproof.attacks.evasion.detectors import attacker_key_samples, detectability, roc

    own = attacker_key_samples(protected.key, protected.model, digits16.attacker, 40, seed=5)
    assert own.shape == (40, 1, 16, 16) and not torch.equal(own[:15], protected.key.inputs)
    for kind in ("mlp", "features"):
        result = detectability(protected.key, protected.model, digits16.attacker, digits16.test, kind=kind,
                               max_samples=120, seed=0)
        assert result["owner_keys"] == 15 and result["attacker_keys"] == 120
        assert result["auc"] > 0.8, (kind, result["auc"])
        assert result["fpr"][0] == 0.0 and result["tpr"][-1] == 1.0
    assert roc(torch.tensor([0.1, 0.2, 0.8, 0.9]), torch.tensor([0, 0, 1, 1]))["auc"] == 1.0
    with pytest.raises(ConfigError, match="detector kind"):
        detectability(protected.key, protected.model, digits16.attacker, digits16.test, kind="svm")


def test_evasion_row_verifies_protected_and_pirated_models(trained_cnn, digits) -> None:
    from modelproof.experiments.evasion import evasion_row

    surrogate, rest = surrogate_split(digits.test, 0.5, seed=0)
    row = evasion_row("random-fingerprint", trained_cnn, digits.owner, surrogate, rest, params={"points": 20},
                      pirate_kwargs={"tau": 0.0, "epochs": 2, "width": 0.25})
    assert row["protected_decision"] in ("owned", "not owned", "inconclusive")
    assert row["pirate_decision"] in ("owned", "not owned", "inconclusive")
    assert 0 <= row["pirate_matches"] <= row["key_size"] == 20 and 0.0 <= row["fnr"] <= 1.0
    assert evasion_row("zhang-content", trained_cnn, digits.owner, surrogate, rest,
                       params={"key_size": 10 ** 6})["error"]


def test_evasion_row_calibrates_keys_on_references(trained_cnn, digits) -> None:
    from modelproof.experiments.evasion import evasion_row
    from modelproof.references.population import train_references

    surrogate, rest = surrogate_split(digits.test, 0.5, seed=0)
    references, _ = train_references(digits.owner, count=4, seed=0)
    row = evasion_row("random-fingerprint", trained_cnn, digits.owner, surrogate, rest, params={"points": 20},
                      pirate_kwargs={"tau": 0.0, "epochs": 2, "width": 0.25}, references=references)
    # the key verified is the calibrated one: its null comes from the references, not the method's 0.95
    assert row["null_before"] == pytest.approx(0.95) and row["null_match_prob"] != row["null_before"]
    assert row["self_check"] == "passed" or isinstance(row["self_check"], list)


def test_flags_at_another_tau_are_monotone(pirate, protected) -> None:
    pirated, _, rest = pirate
    found = pirated.detect(torch.cat([rest.images[:80], protected.key.inputs]))
    assert torch.equal(pirated.flagged_at(found, pirated.tau), found["flagged"])
    counts = [int(pirated.flagged_at(found, tau).sum()) for tau in (0.0, 0.1, 1.0, 100.0)]
    assert counts == sorted(counts, reverse=True) and counts[-1] == 0
