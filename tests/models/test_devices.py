"""--threads and --device: resolution, errors, and (where a GPU exists) training, IPGuard and verify on cuda."""

from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

from modelproof.models import devices
from modelproof.cli.app import app
from modelproof.util.errors import ConfigError

runner = CliRunner()


def test_resolve_and_configure(monkeypatch):
    threads = torch.get_num_threads()
    try:
        assert devices.resolve_device("cpu") == torch.device("cpu")
        assert devices.resolve_device("auto").type in ("cpu", "cuda", "mps")
        with pytest.raises(ConfigError, match="device must be one of"):
            devices.resolve_device("tpu")
        if not torch.cuda.is_available():
            with pytest.raises(ConfigError, match="'cuda' is not available"):
                devices.resolve_device("cuda")
        assert devices.configure("cpu", 1) == torch.device("cpu") and torch.get_num_threads() == 1
        with pytest.raises(ConfigError, match="threads"):
            devices.configure("cpu", 0)
        monkeypatch.setenv("OMP_NUM_THREADS", "3")
        assert devices.default_threads() == 3
        monkeypatch.delenv("OMP_NUM_THREADS")
        assert 1 <= devices.default_threads() <= 4
    finally:
        torch.set_num_threads(threads)


def test_cli_takes_threads_and_device(tmp_path):
    threads = torch.get_num_threads()
    try:
        r = runner.invoke(app, ["train", "--arch", "mlp", "--epochs", "1", "--out", str(tmp_path / "m.safetensors"),
                                "--threads", "1", "--device", "cpu", "--quiet"])
        assert r.exit_code == 0, r.output
        r = runner.invoke(app, ["evaluate", "--model", str(tmp_path / "m.safetensors"), "--device", "tpu"])
        assert r.exit_code == 2 and "device must be one of" in r.stderr
    finally:
        torch.set_num_threads(threads)
        devices.configure("cpu", threads)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_training_ipguard_and_verify_on_cuda(digits):
    from modelproof.protections.fingerprints.ipguard import boundary_search, frozen
    from modelproof.suspects.local import TorchSuspect
    from modelproof.models.training import TrainConfig, evaluate, train_new
    from modelproof.verification.verifier import verify

    devices.configure("cuda", 1)
    try:
        model, _ = train_new("cnn", digits.owner, TrainConfig(epochs=3, batch_size=32, lr=0.002), seed=0)
        assert devices.model_device(model).type == "cuda" and evaluate(model, digits.test) > 0.5
        x0 = digits.test.images[:8]
        i = torch.zeros(8, dtype=torch.int64)
        j = torch.ones(8, dtype=torch.int64)
        with frozen(model):
            result = boundary_search(model, x0, i, j, k=1.0, lr=0.01, max_iter=50)
        assert result.points.device.type == "cpu" and result.points.shape == x0.shape
        from modelproof.keys.key import key_from_model

        key = key_from_model(model, digits.test.images[:50], method="test", null_match_prob=0.5, null_source="test")
        assert verify(key, TorchSuspect(model)).decision == "owned"
    finally:
        devices.configure("cpu", 1)


def _commands(group, prefix=()):
    """(path, click command) of every leaf command under ``group``."""
    import click

    ctx = click.Context(group)
    for name in group.list_commands(ctx):
        cmd = group.get_command(ctx, name)
        if hasattr(cmd, "list_commands"):
            yield from _commands(cmd, (*prefix, name))
        else:
            yield (*prefix, name), cmd


def test_every_heavy_command_takes_device_and_threads():
    """Every command family that runs a model takes --device and --threads (none refuses a GPU any more)."""
    from typer.main import get_command

    options = {" ".join(path): {o for p in cmd.params for o in getattr(p, "opts", [])}
               for path, cmd in _commands(get_command(app))}
    heavy = [c for c in options if c.split()[0] in ("protect", "attack", "train", "evaluate", "verify", "calibrate",
                                                    "demo", "serve") or c == "experiment run"]
    assert {"protect ipguard", "protect blind", "attack ftll", "attack pirate", "attack forge-boundary", "verify",
            "calibrate", "experiment run", "serve", "train"} <= set(heavy)
    missing = [c for c in heavy if not {"--device", "--threads"} <= options[c] and c != "attack list"]
    assert not missing, missing
