"""``modelproof attack``: the listing, attacks through the CLI with --json, saving, one-line user errors."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from modelproof.attacks import ATTACKS
from modelproof.cli.app import app
from modelproof.models.modelfile import load_model, save_model

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def model_file(trained_cnn, tmp_path_factory):
    return save_model(trained_cnn, tmp_path_factory.mktemp("cli") / "m.safetensors", dataset="digits",
                      extra={"split_seed": 0, "size": None})


def test_attack_list_names_every_attack_with_parameters():
    r = run("attack", "list", "--json")
    assert r.exit_code == 0, r.output
    table = json.loads(r.stdout)["attacks"]
    assert [a["name"] for a in table] == list(ATTACKS)
    pruning = next(a for a in table if a["name"] == "prune-weights")
    assert {"name": "rate", "kind": "rate", "default": "auto",
            "help": pruning["params"][0]["help"]} == pruning["params"][0]
    text = run("attack", "list")
    assert text.exit_code == 0 and "ftll" in text.stdout and "rate=auto" in text.stdout


def test_attack_ftll_json_and_saved_model(model_file, tmp_path):
    out = tmp_path / "ftll.safetensors"
    r = run("attack", "ftll", "--model", model_file, "--out", out, "--param", "epochs=1", "--json")
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout)
    assert res["attack"] == "ftll" and res["params"]["epochs"] == 1 and res["queries"] == 0
    assert abs(res["change"] - (res["accuracy_after"] - res["accuracy_before"])) < 1e-12
    assert res["plausible"] is True and res["attacker_images"] == 539
    loaded = load_model(out)
    assert loaded.record.extra["attack"] == "ftll" and loaded.record.extra["split_seed"] == 0


def test_filter_pruned_model_round_trips_through_the_cli(model_file, tmp_path):
    out = tmp_path / "fp.safetensors"
    r = run("attack", "prune-filters", "-m", model_file, "-o", out, "-p", "rate=1/4", "-p", "retrain=false")
    assert r.exit_code == 0, r.output
    assert "test accuracy" in r.stdout and "plausible:" in r.stdout
    assert load_model(out).record.extra["structurally_pruned"] is True
    r = run("export-onnx", "--model", out, "--out", tmp_path / "fp.onnx")
    assert r.exit_code == 0, r.output


def test_svd_needs_onnx_and_dynamic_quantisation_says_how_to_save(model_file, tmp_path):
    r = run("attack", "svd", "-m", model_file, "-o", tmp_path / "s.safetensors")
    assert r.exit_code == 2 and "write it as ONNX" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = run("attack", "svd", "-m", model_file, "-o", tmp_path / "s.onnx", "--json")
    assert r.exit_code == 0 and (tmp_path / "s.onnx").is_file(), r.output
    r = run("attack", "quantize", "-m", model_file, "-o", tmp_path / "q.onnx")
    assert r.exit_code == 2 and "mode=weights" in r.stderr
    r = run("attack", "quantize", "-m", model_file, "-o", tmp_path / "q.safetensors", "-p", "mode=weights")
    assert r.exit_code == 0, r.output


def test_extraction_reports_queries(model_file, tmp_path):
    r = run("attack", "extract", "-m", model_file, "-o", tmp_path / "x.safetensors", "-p", "queries=100",
            "-p", "epochs=1", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["queries"] == 100


@pytest.mark.parametrize("args, message", [
    (["-p", "rate=1.5"], "rate must be a number strictly between 0 and 1"),
    (["-p", "nonsense"], "key=value"),
    (["-p", "colour=red"], "unknown parameter 'colour'"),
    (["--query-dataset", "digits"], "--query-dataset is for the extract, knockoff, transfer-learning attacks"),
])
def test_user_errors_are_one_line_exit_2(model_file, tmp_path, args, message):
    r = run("attack", "prune-weights", "-m", model_file, "-o", tmp_path / "o.safetensors", *args)
    assert r.exit_code == 2, r.output
    assert message in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert r.stderr.startswith("error: ") and "Traceback" not in r.output


def test_missing_model_file_is_a_user_error(tmp_path):
    r = run("attack", "ftal", "-m", tmp_path / "none.safetensors", "-o", tmp_path / "o.safetensors")
    assert r.exit_code == 2 and "model file not found" in r.stderr


def test_a_new_label_model_file_can_be_attacked(digits, tmp_path):
    from modelproof.models import build_model

    eleven = build_model("mlp", digits.num_classes + 1, digits.input_shape, seed=0)
    model = save_model(eleven, tmp_path / "new-label.safetensors", dataset="digits",
                       extra={"split_seed": 0, "size": None, "protection": "new-label"})
    for name, params in (("ftal", ["epochs=1"]), ("quantize", ["mode=weights"])):
        out = tmp_path / f"{name}.safetensors"
        r = run("attack", name, "--model", model, "--out", out, *[a for p in params for a in ("--param", p)])
        assert r.exit_code == 0, r.output
        assert load_model(out).num_classes == 11
