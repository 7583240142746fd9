"""One published dataset's folder is not read as another's; data of another shape is one line."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from modelproof.data import identify
from modelproof.data.splits import load_dataset
from modelproof.util.errors import DataError



def write_idx_set(folder: Path, gz: bool = False) -> dict[str, np.ndarray]:
    """A small MNIST-format folder (train 12 images, test 5)."""
    folder.mkdir(parents=True)
    rng, arrays = np.random.default_rng(3), {}
    for prefix, n in (("train", 12), ("t10k", 5)):
        for kind, magic, arr in (("images-idx3", 2051, rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)),
                                 ("labels-idx1", 2049, rng.integers(0, 10, n, dtype=np.uint8))):
            head = magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
            (folder / f"{prefix}-{kind}-ubyte").write_bytes(head + arr.tobytes())
            arrays[f"{prefix}-{kind}"] = arr
    return arrays

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"


def test_a_folder_of_another_published_dataset_is_refused(tmp_path, monkeypatch):
    arrays = write_idx_set(tmp_path / "fm", gz=False)
    digest = hashlib.sha256(arrays["t10k-labels-idx1"].tobytes()).hexdigest()
    monkeypatch.setitem(identify.PUBLISHED_LABELS, digest, ("fashion-mnist", "test"))
    with pytest.raises(DataError, match="published fashion-mnist test file, not mnist: pass --dataset fashion-mnist"):
        load_dataset("mnist", tmp_path / "fm", split="test")
    assert len(load_dataset("fashion-mnist", tmp_path / "fm", split="test")) == 5
    assert len(load_dataset("mnist", tmp_path / "fm", split="train")) == 12  # unknown files: the user's own


@pytest.mark.skipif(not (SHARED / "fashion-mnist").is_dir(), reason="the published files are not on this machine")
def test_the_real_fashion_mnist_folder_is_not_mnist():
    with pytest.raises(DataError, match="published fashion-mnist test file, not mnist"):
        load_dataset("mnist", SHARED / "fashion-mnist", split="test")
    assert identify.published_as(np.zeros(3, dtype=np.uint8)) is None


def test_data_of_another_shape_is_one_line(tmp_path):
    from typer.testing import CliRunner

    from modelproof.cli.app import app

    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        np.savez(tmp_path / f"{split}.npz", x=rng.integers(0, 255, (40, 16, 16, 3), dtype=np.uint8),
                 y=np.arange(40) % 10)
    runner = CliRunner()
    r = runner.invoke(app, ["train", "--arch", "mlp", "--size", "16", "--epochs", "1", "-q",
                            "--out", str(tmp_path / "m.safetensors")])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["evaluate", "--model", str(tmp_path / "m.safetensors"), "--dataset", "npz",
                            "--data-dir", str(tmp_path), "--force-dataset"])
    assert r.exit_code == 2 and r.exception is None or isinstance(r.exception, SystemExit), r.output
    assert r.stderr.strip() == ("error: the model takes images of shape 1x16x16, but these are 3x16x16: use data "
                                "of the kind the model was trained on (or --size to resize)"), r.output
