"""Reference populations: built once and reused, resumable, users' models added, roles kept apart."""

import dataclasses
import json
import os

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from cli_secrets import secret
from modelproof.cli.app import app
from modelproof.keys.container import load_key
from modelproof.models.modelfile import save_model
from modelproof.protections.base import make_protection
from modelproof.references import build as build_module
from modelproof.references import mix
from modelproof.references.build import build_population
from modelproof.references.calibration import calibrate, selectors
from modelproof.references.estimators import fit_estimator, load_estimator, save_estimator
from modelproof.references.mix import CALIBRATION, SELECTION, plan
from modelproof.references.protect import ReferenceOptions, protect_model, protect_to_folder
from modelproof.references.sets import check_disjoint, record_selection, selection_of
from modelproof.references.store import MANIFEST, Population, add_models, default_dir
from modelproof.util.errors import ConfigError, ModelFileError

runner = CliRunner()
TINY = {"calibration": 4, "selection": 4, "owner_share": 2}


@pytest.fixture
def fast_recipe(monkeypatch):
    """Networks train on 150 images (a few tenths of a second each) and every training is counted."""
    monkeypatch.setattr(mix, "MAX_TRAIN", 150)
    monkeypatch.setattr(build_module, "MAX_TRAIN", 150)
    calls = []
    real = build_module.train_member

    def counted(member, data, root):
        calls.append(member.name)
        return real(member, data, root)

    monkeypatch.setattr(build_module, "train_member", counted)
    return calls


def test_plan_keeps_roles_apart_and_includes_the_owner_architecture(digits):
    members = plan(digits.owner, calibration=6, selection=6, owner_archs=("mlp",), owner_share=3)
    names = [m.name for m in members]
    assert len(names) == len(set(names)) and len({m.seed for m in members}) == len(members)
    assert sum(m.role == CALIBRATION for m in members) == 6
    owners = [m for m in members if m.for_arch == "mlp"]
    assert len(owners) == 3 and all(m.role == SELECTION and m.kind.arch == "mlp" for m in owners)
    assert "lenet5" not in {m.kind.name for m in members}  # 8x8 digits: LeNet-5 needs 12x12


def test_build_records_a_manifest_and_resumes_after_an_interruption(digits, tmp_path, fast_recipe, monkeypatch):
    counted = build_module.train_member

    def dies_on_third(member, data, root):
        if len(fast_recipe) == 2:
            raise KeyboardInterrupt
        return counted(member, data, root)

    monkeypatch.setattr(build_module, "train_member", dies_on_third)
    with pytest.raises(KeyboardInterrupt):
        build_population(tmp_path / "pop", digits, dataset="digits", owner_archs=("mlp",), **TINY)
    assert len(Population.open(tmp_path / "pop").members) == 2  # the finished ones are recorded
    monkeypatch.setattr(build_module, "train_member", counted)
    fast_recipe.clear()
    pop, trained, _ = build_population(tmp_path / "pop", digits, dataset="digits", owner_archs=("mlp",), **TINY)
    total = len(plan(digits.owner, owner_archs=("mlp",), **TINY))
    assert len(trained) == len(fast_recipe) == total - 2 and len(pop.members) == total
    manifest = json.loads((tmp_path / "pop" / MANIFEST).read_text())
    for entry in manifest["members"]:
        assert {"name", "kind", "role", "seed", "recipe", "digest", "test_accuracy", "file"} <= set(entry)
        assert 0.5 < entry["test_accuracy"] <= 1.0
    assert len({e["digest"] for e in manifest["members"]}) == total
    assert manifest["diversity"]["members"] == total and manifest["diversity"]["agreement_mean"] < 1.0
    fast_recipe.clear()
    assert build_population(tmp_path / "pop", digits, dataset="digits", owner_archs=("mlp",), **TINY)[1] == []
    assert fast_recipe == []


def test_second_protect_on_the_same_data_trains_nothing(digits, trained_cnn, tmp_path, fast_recipe, monkeypatch):
    monkeypatch.setenv("MODELPROOF_CACHE", str(tmp_path / "cache"))  # an empty cache: the first protect trains
    options = ReferenceOptions(count=4, selection_count=4, allow_weak=True)  # 4 references: a wide bound
    protection = make_protection("zhang-noise", epochs=3)
    protection.set_secret("s")
    first = protect_model(protection, trained_cnn, digits, options=options, owner_arch="cnn", dataset="digits")
    assert fast_recipe and first.final.summary["reference_seconds"] > 0
    folder = default_dir("digits", digits.owner)
    assert (folder / MANIFEST).is_file() and str(folder).startswith(os.environ["MODELPROOF_CACHE"])
    fast_recipe.clear()
    second = protect_model(protection, trained_cnn, digits, options=options, owner_arch="cnn", dataset="digits")
    assert fast_recipe == [] and second.final.summary["reference_seconds"] == 0.0
    key = second.final.key
    pop = Population.open(folder)
    chosen = {r.digest for r in pop.references(SELECTION, "cnn")}
    assert selectors(key) == chosen and len(chosen) == second.final.summary["selection_references"]
    calibrated = {row["name"] for row in key.params["calibration"]["references"]}
    assert calibrated == {e["name"] for e in pop.entries(CALIBRATION)}
    assert not calibrated & {e["name"] for e in pop.entries(SELECTION, "cnn")}


def test_calibration_refuses_a_reference_that_selected_the_key(digits, trained_cnn, tmp_path, fast_recipe):
    pop, _, _ = build_population(tmp_path / "pop", digits, dataset="digits", owner_archs=("cnn",), **TINY)
    chosen, calibrating = pop.references(SELECTION, "cnn"), pop.references(CALIBRATION)
    result = make_protection("zhang-noise", epochs=3, secret="s").protect(trained_cnn, digits.owner, seed=0)
    key = record_selection(result.key, selection_of(chosen))
    assert selectors(key) == {r.digest for r in chosen}
    calibrate(key, calibrating)  # disjoint: fine
    with pytest.raises(ConfigError, match=f"reference {chosen[0].name} selected this key"):
        calibrate(key, calibrating + chosen[:1])
    # and the other way: a calibration reference offered as a selection reference is refused
    with pytest.raises(ConfigError, match="also a selection reference"):
        check_disjoint(chosen + calibrating[:1], calibrating)
    renamed = dataclasses.replace(calibrating[0], name="copy")
    with pytest.raises(ConfigError, match="copy is also a selection reference"):
        check_disjoint([calibrating[0]], [renamed])


def test_protect_uses_a_given_population_and_trains_nothing_into_it(digits, trained_cnn, tmp_path, fast_recipe):
    build_population(tmp_path / "pop", digits, dataset="digits", owner_archs=("cnn",), **TINY)
    fast_recipe.clear()
    protection = make_protection("zhang-noise", epochs=3, secret="s")
    outcome = protect_to_folder(protection, tmp_path / "out", model=None, arch="cnn", dataset="digits",
                                options=ReferenceOptions(references_dir=tmp_path / "pop", allow_weak=True))
    assert fast_recipe == [] and outcome.summary["references_dir"] == str(tmp_path / "pop")
    assert len(selectors(load_key(tmp_path / "out" / "key.mpkey"))) == 4  # TINY: 2 general and 2 CNNs
    with pytest.raises(ConfigError, match="not a reference population"):
        protect_to_folder(protection, tmp_path / "o2", arch="cnn", options=ReferenceOptions(references_dir=tmp_path))


def test_protect_to_folder_keeps_its_checkpoint_beside_its_own_output(digits, trained_cnn, tmp_path, fast_recipe):
    """A resumable protection used for two folders keeps each one's checkpoint beside that folder (the first
    call's Resume is not left on the caller's object), and a Resume the caller gave is kept."""
    from modelproof.protections.checkpoint import Resume

    build_population(tmp_path / "pop", digits, dataset="digits", owner_archs=("cnn",), **TINY)
    model = save_model(trained_cnn, tmp_path / "m.safetensors", dataset="digits")
    protection = make_protection("igsm-fingerprint", points=5, max_iter=20, secret="s")
    options = ReferenceOptions(references_dir=tmp_path / "pop", allow_weak=True)
    for out in ("one", "two"):
        protect_to_folder(protection, tmp_path / out, model=model, dataset="digits", options=options)
        assert protection.resume is None and (tmp_path / out / "key.mpkey").is_file()
    mine = Resume(tmp_path / "mine")
    protect_to_folder(protection.resume_in(mine), tmp_path / "three", model=model, dataset="digits", options=options)
    assert protection.resume is mine


def test_users_models_are_added_once_and_pickles_refused(digits, trained_cnn, tmp_path, fast_recipe):
    build_population(tmp_path / "pop", digits, dataset="digits", calibration=4, selection=0)
    own = save_model(trained_cnn, tmp_path / "mine.safetensors", dataset="digits")
    entry = add_models(tmp_path / "pop", [own], role=SELECTION)[0]
    assert entry["role"] == SELECTION and entry["source"] == "added" and entry["kind"] == "cnn"
    assert [r.name for r in Population.open(tmp_path / "pop").references(SELECTION)] == [entry["name"]]
    with pytest.raises(ConfigError, match="already in"):
        add_models(tmp_path / "pop", [own])
    torch.save({"w": torch.zeros(2)}, tmp_path / "bad.safetensors")
    with pytest.raises(ModelFileError, match="pickle"):
        add_models(tmp_path / "pop", [tmp_path / "bad.safetensors"])


def test_a_model_added_during_a_build_stays_in_the_manifest(digits, trained_cnn, tmp_path, fast_recipe, monkeypatch):
    """`references add` while a build runs (another process, here between two of the build's models): the
    build's later manifest writes keep the added member instead of writing their own stale list."""
    own = save_model(trained_cnn, tmp_path / "mine.safetensors", dataset="digits")
    counted = build_module.train_member

    def adds_after_first(member, data, root):
        entry = counted(member, data, root)
        if len(fast_recipe) == 1:
            add_models(root, [own], role=CALIBRATION)  # reads and writes the manifest on its own
        return entry

    monkeypatch.setattr(build_module, "train_member", adds_after_first)
    pop, trained, _ = build_population(tmp_path / "pop", digits, dataset="digits", calibration=3, selection=0)
    names = {m["name"] for m in Population.open(tmp_path / "pop").members}
    assert "user-mine" in names and set(trained) <= names and len(names) == len(trained) + 1
    assert "user-mine" in {m["name"] for m in pop.members}


def test_a_second_build_waits_for_the_first_and_trains_nothing(digits, tmp_path, fast_recipe):
    """Two builders of one folder (two `protect` runs on a shared cache): the second waits, saying whom for,
    then finds every model and trains none."""
    import threading

    from modelproof.util.locks import FileLock

    build_population(tmp_path / "pop", digits, dataset="digits", calibration=3, selection=0)
    fast_recipe.clear()
    holder = FileLock(tmp_path / "pop", "reference population")  # the first build, still running
    said, result = [], []
    waiting = threading.Event()

    def log(line):
        said.append(line)
        waiting.set()

    second = threading.Thread(target=lambda: result.append(build_population(
        tmp_path / "pop", digits, dataset="digits", calibration=3, selection=0, log=log)))
    second.start()
    assert waiting.wait(10) and not result  # told, and still waiting
    assert f"in use by process {os.getpid()}: waiting" in said[0]
    holder.release()
    second.join(30)
    assert result and result[0][1] == [] and fast_recipe == []


def test_stored_forest_answers_as_scikit_learn_and_survives_a_round_trip(digits, tmp_path):
    from sklearn.ensemble import RandomForestClassifier

    model = fit_estimator("random-forest", digits.owner, 3)
    x = digits.test.images
    reloaded = load_estimator(save_estimator(model, tmp_path / "f.safetensors"))
    assert torch.equal(reloaded.predict(x), model.predict(x)) and reloaded.digest() == model.digest()
    flat = digits.owner.images.reshape(len(digits.owner), -1).numpy()
    idx = np.sort(np.random.default_rng(3).choice(len(flat), int(0.8 * len(flat)), replace=False))
    forest = RandomForestClassifier(n_estimators=20, random_state=3).fit(flat[idx], digits.owner.labels.numpy()[idx])
    assert (forest.predict(x.reshape(len(x), -1).numpy()) == model.predict(x).numpy()).mean() == 1.0


def test_references_build_command_prints_the_population(tmp_path, fast_recipe):
    r = runner.invoke(app, ["references", "build", "--dataset", "digits", "--count", "4", "--out",
                            str(tmp_path / "pop"), "--json", "--quiet"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["members"] == 8 and sum(out["roles"][CALIBRATION].values()) == 4 and len(out["trained"]) == 8
    r = runner.invoke(app, ["references", "add", str(tmp_path / "pop"), str(tmp_path / "missing.onnx")])
    assert r.exit_code == 2 and "missing.onnx" in r.output


def test_protect_command_takes_a_population_and_an_oversampling_factor(digits, trained_cnn, tmp_path, fast_recipe):
    build_population(tmp_path / "pop", digits, dataset="digits", owner_archs=("cnn",), **TINY)
    model = save_model(trained_cnn, tmp_path / "cnn.safetensors", dataset="digits")
    r = runner.invoke(app, ["protect", "zhang-noise", "--model", str(model), "--out", str(tmp_path / "z"),
                            "--references-dir", str(tmp_path / "pop"), "--oversample", "2", *secret("s"),
                            "--epochs", "3", "--allow-weak", "--json", "--quiet"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["references_dir"] == str(tmp_path / "pop") and out["selection_references"] == 4
    assert load_key(tmp_path / "z" / "key.mpkey").params["selection"].get("oversample", 2) == 2
    r = runner.invoke(app, ["protect", "zhang-noise", "--model", str(model), "--out", str(tmp_path / "y"),
                            "--references-dir", str(tmp_path / "pop"), "--oversample", "0"])
    assert r.exit_code == 2 and "--oversample must be an integer of at least 1, got 0" in r.output
