"""The command line people live with: the model's own dataset by default, --version, -h, `models`, help texts."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from modelproof import __version__
from modelproof.cli.app import app
from modelproof.cli.common import data_folder, resolve_dataset
from modelproof.models.modelfile import save_model

runner = CliRunner()


def run(*args, env=None):
    return runner.invoke(app, [str(a) for a in args], env=env)


@pytest.fixture(scope="module")
def model_files(tmp_path_factory, mlp16):
    d = tmp_path_factory.mktemp("everyday")
    save_model(mlp16, d / "digits16.safetensors", dataset="digits", extra={"size": 16})
    save_model(mlp16, d / "mnist.safetensors", dataset="mnist", extra={"size": 16})
    return d


def test_commands_default_to_the_models_dataset_and_size(model_files):
    r = run("evaluate", "--model", model_files / "digits16.safetensors", "--json")
    out = json.loads(r.stdout)
    assert r.exit_code == 0 and out["dataset"] == "digits" and out["test_accuracy"] > 0.8, r.output
    assert resolve_dataset(model_files / "digits16.safetensors", None, None, None) == ("digits", None, 16)


def test_a_dataset_other_than_the_models_is_a_one_line_error_unless_forced(model_files):
    r = run("evaluate", "--model", model_files / "mnist.safetensors", "--dataset", "digits")
    lines = r.stderr.strip().splitlines()
    assert r.exit_code == 2 and len(lines) == 1 and "was trained on 'mnist', not 'digits'" in lines[0]
    assert "--force-dataset" in lines[0]
    r = run("evaluate", "--model", model_files / "mnist.safetensors", "--dataset", "digits", "--force-dataset")
    assert r.exit_code == 0 and "images of digits" in r.stdout, r.output
    r = run("attack", "prune-weights", "--model", model_files / "mnist.safetensors", "--dataset", "digits",
            "--out", model_files / "x.safetensors")
    assert r.exit_code == 2 and "was trained on 'mnist'" in r.stderr


def test_modelproof_data_env_is_the_default_folder(model_files, tmp_path, monkeypatch):
    (tmp_path / "mnist").mkdir()
    monkeypatch.setenv("MODELPROOF_DATA", str(tmp_path))
    assert data_folder("mnist", None) == tmp_path / "mnist" and data_folder("cifar10", None) == tmp_path
    assert data_folder("digits", None) is None and data_folder("mnist", tmp_path / "x") == tmp_path / "x"
    r = run("evaluate", "--model", model_files / "mnist.safetensors", env={"MODELPROOF_DATA": str(tmp_path)})
    assert r.exit_code == 2 and str(tmp_path / "mnist") in r.stderr, r.output  # its files are looked for there
    monkeypatch.delenv("MODELPROOF_DATA")
    r = run("evaluate", "--model", model_files / "mnist.safetensors")
    assert r.exit_code == 2 and "needs a folder" in r.stderr


def test_version_short_help_and_models():
    r = run("--version")
    assert r.exit_code == 0 and r.stdout.strip() == f"modelproof {__version__}"
    r = run("-h")
    assert r.exit_code == 0 and "verify" in r.stdout and "models" in r.stdout
    r = run("models", "--json")
    rows = {m["name"]: m for m in json.loads(r.stdout)["models"]}
    assert r.exit_code == 0 and rows["lenet5"]["min_side"] == 12 and rows["cnn"]["parameters"] > 1000
    train_help = " ".join(run("train", "-h").stdout.split())
    assert "modelproof models" in train_help and "--force-dataset" not in train_help


def test_protect_help_says_what_each_method_does():
    text = run("protect", "--help").stdout
    body = text.split("Commands:")[1]
    assert "Zhang et al." not in body and "Zhong et al." not in body
    for name in ("zhang-content", "zhang-noise", "zhang-unrelated", "new-label", "adi", "ipguard"):
        assert name in body
    assert body.count("Watermark:") == 8 and body.count("Fingerprint") == 6  # blind too, not "Li et al."


def test_attack_outputs_are_checked_before_the_work(model_files, monkeypatch):
    import modelproof.attacks as attacks  # the command imports run_attack from here when it runs

    def never(*args, **kwargs):
        raise AssertionError("the attack ran before its output was checked")

    monkeypatch.setattr(attacks, "run_attack", never)
    model = model_files / "digits16.safetensors"
    for name, out, params, fragment in (("svd", "svd.safetensors", [], "write it as ONNX"),
                                        ("quantize", "q.onnx", [], "mode=weights"),
                                        ("ftll", "m.pt", [], "must end in .safetensors")):
        r = run("attack", name, "--model", model, "--out", model_files / out, *params)
        assert r.exit_code == 2 and fragment in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.output


def test_data_download_errors_are_one_line(tmp_path):
    r = run("data", "download", "svhn", tmp_path)
    assert r.exit_code == 2 and "cannot download dataset 'svhn'" in r.stderr
    r = run("data", "download", "--help")
    assert r.exit_code == 0 and "checksum-verified" in " ".join(r.stdout.split())


def _modelproof(*args, **kwargs):
    import os
    import subprocess
    import sys

    env = {**os.environ, "OMP_NUM_THREADS": "1", "MODELPROOF_HEARTBEAT": "0.3"}
    return subprocess.Popen([sys.executable, "-c", "from modelproof.cli import main; main()", *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, **kwargs)


def test_help_version_and_argument_errors_answer_without_importing_torch():
    import subprocess
    import sys

    code = ("import sys; from modelproof.cli import main; sys.argv = ['modelproof', *sys.argv[1:]]\n"
            "try:\n    main()\nexcept SystemExit as e:\n    print('exit', e.code, 'torch' in sys.modules, file=sys.stderr)")
    for args in (["--help"], ["--version"], ["nope"], ["evaluate", "--bogus"], ["train", "--epochs", "x"],
                 ["evaluate", "--model", "nope.safetensors"], ["data", "info", "--bogus"], ["verify", "-h"]):
        r = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=60)
        assert r.stderr.strip().splitlines()[-1].endswith("False"), (args, r.stderr)  # torch never imported


def test_commands_table_matches_what_the_modules_register():
    import importlib

    import typer

    from modelproof.cli.app import COMMANDS

    for name, (modules, short) in COMMANDS.items():
        sub = typer.Typer()
        for module in modules:
            importlib.import_module(f"modelproof.cli.{module}").register(sub)
        group = typer.main.get_group(sub)
        assert name in group.commands, name
        assert group.commands[name].get_short_help_str(limit=10**6) == short, name
    registered = typer.Typer()
    for module in {m for modules, _ in COMMANDS.values() for m in modules}:
        importlib.import_module(f"modelproof.cli.{module}").register(registered)
    assert set(typer.main.get_group(registered).commands) <= set(COMMANDS)
    assert type(typer.main.get_command(app)).__name__ == "LazyGroup"


def test_ctrl_c_exits_130_with_one_line_and_no_partial_files(tmp_path):
    import signal
    import time

    for wait_for_work in (False, True):
        folder = tmp_path / str(wait_for_work)
        folder.mkdir()
        proc = _modelproof("train", "--arch", "mlp", "--size", "16", "--epochs", "500", "--threads", "1",
                           "--out", folder / "m.safetensors", cwd=folder)
        if wait_for_work:
            assert proc.stderr.readline().startswith("modelproof train")  # training has started
        else:
            time.sleep(0.3)  # start-up: the imports
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 130, err
        assert err.strip().splitlines()[-1] == "modelproof: interrupted" and "Traceback" not in err, err
        assert list(folder.iterdir()) == [], list(folder.iterdir())


def test_outputs_are_checked_before_any_work(model_files, tmp_path):
    model = model_files / "digits16.safetensors"
    before = model.read_bytes()
    r = run("attack", "ftal", "--model", model, "--out", model)
    assert r.exit_code == 2 and "also an input" in r.stderr, r.output
    r = run("export-onnx", "--model", model, "--out", model)
    assert r.exit_code == 2 and "name an .onnx file" in r.stderr, r.output
    assert model.read_bytes() == before
    (tmp_path / "file").write_text("x")
    r = run("train", "--out", tmp_path / "file" / "m.safetensors")
    assert r.exit_code == 2 and "is a file, not a folder" in r.stderr, r.output
    r = run("protect", "zhang-noise", "--model", model, "--out", tmp_path / "file")
    assert r.exit_code == 2 and "existing file, not a folder" in r.stderr, r.output
    (tmp_path / "prot").mkdir()
    (tmp_path / "prot" / "key.mpkey").write_bytes(b"the only copy")
    r = run("protect", "zhang-noise", "--model", model, "--out", tmp_path / "prot")
    assert r.exit_code == 2 and "already holds key.mpkey" in r.stderr and "--force" in r.stderr, r.output
