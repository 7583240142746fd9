"""The small things a first hour trips over: JSON errors, option names, papers in the help, which folder."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from modelproof.cli.app import app
from modelproof.cli.common import cite, option_names, short_help

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_json_errors_are_json_and_name_the_option(tmp_path):
    r = run("protect", "zhang-noise", "--arch", "mlp", "--key-size", "0", "--out", tmp_path / "p", "--json")
    assert r.exit_code == 2 and json.loads(r.stdout) == {"error": "--key-size must be an integer >= 1, got 0"}
    r = run("protect", "zhang-noise", "--arch", "mlp", "--key-size", "0", "--out", tmp_path / "p")
    assert r.exit_code == 2 and r.stderr.strip() == "error: --key-size must be an integer >= 1, got 0"
    assert option_names("key_size and size and out_dir", {"key_size": 1, "size": 2}) == "--key-size and size and out_dir"


def test_help_names_the_papers():
    assert "Li et al. (ACSAC 2019, How to Prove Your Model Belongs to You" in cite("Li et al. blind watermark")
    assert short_help("Li et al. 6.4: add differences. More text.") == "Li et al. 6.4: add differences."
    r = run("protect", "-h")
    assert "Li et al., ACSAC 2019" in r.stdout, r.stdout
    r = run("attack", "-h")
    assert "  forge-difference" in r.stdout and "Li et al. 6.4: add intercepted" in r.stdout.replace("\n", " "), r.stdout
    r = run("attack", "forge-difference", "-h")
    assert "ACSAC 2019" in r.stdout


def test_blind_needs_an_out_like_the_other_watermarks():
    r = run("protect", "blind", "--arch", "mlp")
    assert r.exit_code == 2 and "--out" in r.output


def test_data_info_says_which_folder():
    r = run("data", "info", "--json")
    assert r.exit_code == 0 and "bundled" in json.loads(r.stdout)["folder"]
    assert "folder       bundled with modelproof" in run("data", "info").stdout
