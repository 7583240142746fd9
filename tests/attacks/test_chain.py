"""Combined attacks: a chain of registered attacks, from a string or a TOML list, in the experiment grid."""

from __future__ import annotations

import pytest

from modelproof.attacks import Chain, PreprocessedModel, make_attack, run_attack
from modelproof.attacks.saving import output_suffixes
from modelproof.experiments.config import attack_kind
from modelproof.experiments.parse import parse_config
from modelproof.experiments.run import run_experiment
from modelproof.models.modelfile import weights_digest
from modelproof.util.errors import ConfigError


def test_steps_from_a_string_and_from_tables_are_the_same_chain():
    text = Chain("ftll epochs=2; prune-weights rate=1/4 retrain=no; jpeg quality=80")
    tables = Chain([{"name": "FTLL", "params": {"epochs": 2}}, "prune_weights rate=0.25 retrain=false",
                    {"name": "jpeg", "params": {"quality": 80}}])
    assert text.get_params() == tables.get_params()
    assert [s["name"] for s in text.get_params()["steps"]] == ["ftll", "prune-weights", "jpeg"]
    assert text.get_params()["steps"][1]["params"]["rate"] == 0.25
    assert text.kind == "preprocessing" and Chain("ftll; rtll").kind == "removal"
    assert Chain("ftll; pirate epochs=1").kind == "evasion"
    assert [type(s).__name__ for s in Chain().steps] == ["WeightShifting", "InputSmoothing"]  # WRT's combined_attack1


@pytest.mark.parametrize("steps, message", [
    ("", "at least one attack"),
    ("ftll; blur", "unknown attack 'blur'"),
    ("ftll; ftal rate=0.5", r"steps\[1\]: unknown parameter 'rate' for attack 'ftal'"),
    ("ftll epochs=x", "epochs"),
    ("pirate; ftll", "can only be the last step"),
    ("chain", "chains do not nest"),
    (42, "';'-separated string or a list"),
    ([{"name": "ftll", "epochs": 1}], "a table"),
])
def test_bad_chains_are_refused_naming_the_step(steps, message):
    with pytest.raises(ConfigError, match=message):
        Chain(steps)


def test_a_chain_runs_its_steps_in_order_and_adds_their_queries(trained_cnn, digits):
    result = run_attack(make_attack("chain", steps="ftll epochs=1 labels=victim; extract epochs=1 queries=50; "
                                                   "smoothing"), trained_cnn, digits, seed=0)
    steps = result.details["steps"]
    assert result.details["chain"] == "ftll -> extract -> smoothing" and [s["attack"] for s in steps] == [
        "ftll", "extract", "smoothing"]
    assert result.queries == len(digits.attacker) + 50 == sum(s["queries"] for s in steps)
    assert isinstance(result.model, PreprocessedModel) and steps[2]["transforms"] == "gaussian std=0.5"
    assert weights_digest(result.model.model) != weights_digest(trained_cnn)


def test_output_formats_are_known_before_the_chain_runs():
    assert output_suffixes(Chain("ftll; svd")) == (".onnx",)
    assert output_suffixes(Chain("ftll; jpeg")) == (".safetensors",)
    assert output_suffixes(Chain("svd; jpeg")) == ()
    assert output_suffixes(Chain("ftll; ftal")) == (".safetensors", ".onnx")


GRID = """
[experiment]
name = "chains"
seeds = [0]

[[datasets]]
name = "digits"
size = 16

[[hosts]]
arch = "mlp"
epochs = 3
lr = 0.003

[[protections]]
name = "zhang-noise"
params = { key_size = 20, epochs = 3 }

[[attacks]]
name = "jpeg"
params = { quality = 50 }

[[attacks]]
name = "chain"
label = "ftll + median"
params = { steps = ["ftll epochs=1", { name = "smoothing", params = { filter = "median", epochs = 0 } }] }

[[attacks]]
name = "chain"
label = "ftll + prune"
params = { steps = "ftll epochs=1; prune-weights rate=0.5 retrain=false" }
"""


def test_a_dataset_source_is_read_from_the_config_folder(tmp_path):
    text = GRID.replace('name = "jpeg"\nparams = { quality = 50 }', 'name = "knockoff"\nparams = { source = "mnist:data" }')
    config = parse_config(text, "grid.toml", tmp_path)
    assert config.attacks[0].params["source"] == f"mnist:{(tmp_path / 'data').resolve()}"


def test_chains_and_preprocessing_in_the_experiment_grid(tmp_path, references16):  # references shared
    config = parse_config(GRID)
    assert [a.label for a in config.attacks] == ["jpeg", "ftll + median", "ftll + prune"]
    assert [attack_kind(a.name, a.params) for a in config.attacks] == ["preprocessing", "preprocessing", "removal"]
    with pytest.raises(ConfigError, match=r"attacks\[1\].params: steps\[1\]"):
        parse_config(GRID.replace('filter = "median"', 'filter = "bilateral"'))
    summary = run_experiment(config, tmp_path, quiet=True, report=False)
    assert summary.failures == []
    pos = {r["attack_label"]: r for r in summary.rows if r["role"] == "positive"}
    assert pos["jpeg"]["attack_kind"] == "preprocessing" and pos["ftll + prune"]["attack_kind"] == "removal"
    assert all(r["decision"] in ("owned", "not owned", "inconclusive") for r in pos.values())
    # the wrapped models were cached as model files of their own kind and are read back for a re-run
    again = run_experiment(config, tmp_path, quiet=True, report=False)
    assert again.counts["done"] == 0
