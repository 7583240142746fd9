"""The survival matrix (protection x attack: outcome and attacked accuracy), its Markdown and the CSV reader."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from modelproof.experiments.run import write_tables
from modelproof.experiments.survival import load_results, survival_matrices, to_markdown
from modelproof.util.errors import ConfigError


def row(prot, attack, decision, *, acc=0.95, plausible=True, seed=0, role="positive", status="ok", error=""):
    return {"dataset": "mnist", "host": "lenet5", "protection": prot, "protection_kind": "watermark",
            "attack": attack.split()[0], "attack_label": attack, "seed": seed, "role": role, "suspect": f"{prot}/{attack}",
            "decision": decision if status == "ok" else None, "p_value": 1e-9 if decision == "owned" else 0.4,
            "match_rate": 0.9, "queries": 30, "key_size": 30, "plausible": plausible if status == "ok" else None,
            "accuracy_host": 0.99, "accuracy_before": 0.98, "accuracy_after": acc if status == "ok" else None,
            "protect_seconds": 3.0, "attack_kind": "removal", "key_hash": f"k-{prot}-{seed}", "status": status,
            "error": error}


ROWS = [
    row("strong", "none", "owned", acc=0.98), row("strong", "ftal", "owned", acc=0.975),
    row("strong", "extract labels 1k", "not owned", acc=0.80, plausible=False),
    row("strong", "extract labels 20k", "not owned", acc=0.97),
    row("strong", "svd", None, status="failed", error="RuntimeError: boom"),
    row("weakling", "none", "not owned", acc=0.98), row("weakling", "ftal", "not owned", acc=0.97),
    row("weakling", "extract labels 1k", None, status="failed", error="not run"),
    row("weakling", "extract labels 20k", "not owned", acc=0.96), row("weakling", "svd", "owned", acc=0.9),
    row("strong", "none", "not owned", role="negative"),
]


def test_each_cell_is_the_payoff_outcome_with_the_attacked_accuracy():
    (m,) = survival_matrices(ROWS)
    assert m.title == "mnist / lenet5" and m.protections == ["strong", "weakling"]
    assert m.attacks == ["none", "ftal", "extract labels 1k", "extract labels 20k", "svd"]  # config order
    outcome = {k: c.outcome for k, c in m.cells.items()}
    assert outcome[("strong", "none")] == "owned" and outcome[("strong", "ftal")] == "survived"
    assert outcome[("strong", "extract labels 1k")] == "implausible"  # not owned, but only at 0.80
    assert outcome[("strong", "extract labels 20k")] == "removed" and outcome[("strong", "svd")] == "failed"
    assert {outcome[("weakling", a)] for a in ("none", "ftal", "extract labels 20k", "svd")} == {"weak"}
    assert outcome[("weakling", "extract labels 1k")] == "not run"  # absent from the cache, not a failure
    cell = m.cells[("strong", "ftal")]
    assert cell.text() == "✓ 97.5" and cell.drop == pytest.approx(0.005)
    assert m.cells[("strong", "extract labels 20k")].text() == "✗ 97.0"
    assert m.cells[("weakling", "extract labels 1k")].text() == "·" and m.host_accuracy == pytest.approx(0.99)
    # survived: ftal and the implausible extraction (no success); scored: those and the removal; svd failed
    assert m.survives("strong") == (2, 3) and m.survives("weakling") == (0, 0)


def test_markdown_rows_columns_transpose_and_attack_filter():
    (m,) = survival_matrices(ROWS)
    text = to_markdown(m)
    lines = text.splitlines()
    assert lines[0] == "| protection | unattacked | ftal | extract labels 1k | extract labels 20k | svd | survives |"
    assert lines[2] == "| strong | owned 98.0 | ✓ 97.5 | ⊘ 80.0 | ✗ 97.0 | failed | 2/3 |"
    assert lines[3].startswith("| weakling | weak 98.0 | weak 97.0 | · |") and "host: 99.0" in text
    # why a cell failed is under the table (a cell not run is no failure)
    assert text.endswith("Why cells failed or have no key:\n\n- strong: failed (1 cell): RuntimeError: boom")
    flipped = to_markdown(m, transpose=True).splitlines()
    assert flipped[0] == "| attack | strong | weakling |" and flipped[3] == "| ftal | ✓ 97.5 | weak 97.0 |"
    assert flipped[7] == "| survives | 2/3 | 0/0 |"
    assert to_markdown(m.only(["none", "extract*"])).splitlines()[0] == \
        "| protection | unattacked | extract labels 1k | extract labels 20k | survives |"
    with pytest.raises(ConfigError, match="matches no attack"):
        m.only(["knockoff*"])


def test_the_csv_gives_the_table_the_json_gives(tmp_path):
    write_tables(ROWS, tmp_path)
    from_csv, from_json = load_results(tmp_path / "results.csv"), load_results(tmp_path)
    assert to_markdown(survival_matrices(from_csv)[0]) == to_markdown(survival_matrices(from_json)[0])
    assert from_csv[1]["plausible"] is True and from_csv[1]["accuracy_after"] == 0.975 and from_csv[0]["seed"] == 0
    (tmp_path / "bad.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ConfigError, match="not an experiment's results table"):
        load_results(tmp_path / "bad.csv")
    with pytest.raises(ConfigError, match="not found"):
        load_results(tmp_path / "nowhere")


def test_experiment_table_command_prints_the_markdown(tmp_path):
    from modelproof.cli.app import app

    write_tables(ROWS, tmp_path)
    result = CliRunner().invoke(app, ["experiment", "table", str(tmp_path / "results.csv"), "--attack", "ftal"])
    assert result.exit_code == 0, result.output
    assert "| protection | ftal | survives |" in result.output and "| strong | ✓ 97.5 | 1/1 |" in result.output
    result = CliRunner().invoke(app, ["experiment", "table", str(tmp_path), "--json"])
    cells = json.loads(result.output)["matrices"][0]["cells"]
    assert {"protection": "strong", "attack": "ftal", "outcome": "survived", "symbol": "✓", "accuracy": 0.975,
            "drop": pytest.approx(0.005)} in cells
    result = CliRunner().invoke(app, ["experiment", "table", str(tmp_path / "missing")])
    assert result.exit_code == 2 and "not found" in result.output


@pytest.mark.parametrize("name, budgets", [("mnist-survival", (1000, 5000, 20000)),
                                           ("cifar10-survival", (1000, 5000, 10000))])
def test_the_survival_grids_name_every_protection_and_removal_attack(name, budgets):
    """experiments/mnist-survival.toml is issue 26's question: all protections x all removal attacks, with
    label-only and probability extraction at three budgets (1k, 5k, 20k queries); cifar10-survival.toml asks
    it of a ResNet-20 on the GPU (10k: its CIFAR-10 subset holds no 20,000 images)."""
    from pathlib import Path

    from modelproof.experiments.config import attack_kind, registered_attacks
    from modelproof.experiments.parse import load_config
    from modelproof.protections.base import PROTECTIONS, discover_protections

    config = load_config(Path(__file__).parents[2] / "experiments" / f"{name}.toml")
    discover_protections()
    assert sorted(p.name for p in config.protections) == sorted(PROTECTIONS)
    named = {a.name for a in config.attacks}
    missing = {n for n in registered_attacks() if attack_kind(n) in ("removal", "preprocessing")} - named
    assert not missing, f"add {', '.join(sorted(missing))} to experiments/{name}.toml"
    measured = {(a.params["answers"], a.params["queries"]) for a in config.attacks if "answers" in a.params}
    assert measured == {(answers, n) for answers in ("labels", "probabilities") for n in budgets}
    assert all(attack_kind(a.name, a.params) in ("removal", "preprocessing") for a in config.attacks)
