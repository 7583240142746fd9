"""Outputs checked before any work, and folders written as a whole."""

from __future__ import annotations

import pytest

from modelproof.util.errors import ConfigError
from modelproof.util.files import atomic_folder, atomic_write_bytes, check_output, file_kind

SAFETENSORS = (2).to_bytes(8, "little") + b"{}"


def test_an_output_that_is_an_input_or_of_another_kind_is_refused(tmp_path):
    model = tmp_path / "m.safetensors"
    model.write_bytes(SAFETENSORS)
    assert file_kind(model) == "safetensors"
    with pytest.raises(ConfigError, match="also an input"):
        check_output(model, inputs=(model,), force=True)
    onnx = tmp_path / "m.onnx"
    onnx.write_bytes(SAFETENSORS)  # a model file named .onnx: replacing it needs --force
    with pytest.raises(ConfigError, match="not a onnx file .safetensors.: pass --force"):
        check_output(onnx)
    check_output(onnx, force=True)
    check_output(model)  # a model file replaced by a model file: as before
    with pytest.raises(ConfigError, match="is a folder"):
        check_output(tmp_path)
    with pytest.raises(ConfigError, match="existing file, not a folder"):
        check_output(model, folder=True)
    with pytest.raises(ConfigError, match="is a file, not a folder"):
        check_output(model / "sub" / "x.safetensors")
    (tmp_path / "prot").mkdir()
    (tmp_path / "prot" / "key.mpkey").write_bytes(b"k")
    with pytest.raises(ConfigError, match="already holds key.mpkey"):
        check_output(tmp_path / "prot", folder=True, precious=("key.mpkey",))
    check_output(tmp_path / "new" / "deeper", folder=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "m.safetensors", "prot"]  # no probe left


def test_a_folder_appears_whole_or_not_at_all(tmp_path):
    out = tmp_path / "protected"
    with pytest.raises(RuntimeError):
        with atomic_folder(out) as tmp:
            atomic_write_bytes(tmp / "key.mpkey", b"key")
            assert not out.exists()
            raise RuntimeError("interrupted before the model was written")
    assert list(tmp_path.iterdir()) == []
    with atomic_folder(out) as tmp:
        atomic_write_bytes(tmp / "key.mpkey", b"key")
        atomic_write_bytes(tmp / "model.safetensors", b"model")
    assert sorted(p.name for p in out.iterdir()) == ["key.mpkey", "model.safetensors"]
    with atomic_folder(out, last=("key.mpkey",)) as tmp:  # into an existing folder: replaced file by file
        atomic_write_bytes(tmp / "key.mpkey", b"key2")
    assert (out / "key.mpkey").read_bytes() == b"key2" and (out / "model.safetensors").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["protected"]


@pytest.fixture
def umask_027():
    import os

    old = os.umask(0o027)
    try:
        yield 0o027
    finally:
        os.umask(old)


def _mode(path) -> int:
    return path.stat().st_mode & 0o777


def test_outputs_get_the_usual_mode_and_secrets_stay_owner_only(tmp_path, umask_027):
    """mkstemp's 0600 used to reach every output (report.html, model files, tables): owner-only."""
    import os

    atomic_write_bytes(tmp_path / "report.html", b"<html>")
    atomic_write_bytes(tmp_path / "key.mpkey", b"secret", secret=True)
    assert _mode(tmp_path / "report.html") == 0o666 & ~umask_027 == 0o640
    assert _mode(tmp_path / "key.mpkey") == 0o600
    atomic_write_bytes(tmp_path / "report.html", b"<html>2", secret=True)  # a replaced file takes the new mode
    assert _mode(tmp_path / "report.html") == 0o600
    os.umask(0o002)
    atomic_write_bytes(tmp_path / "table.csv", b"a,b\n")
    assert _mode(tmp_path / "table.csv") == 0o664
    with atomic_folder(tmp_path / "protected") as tmp:
        atomic_write_bytes(tmp / "model.safetensors", b"m")
        atomic_write_bytes(tmp / "key.mpkey", b"k", secret=True)
    assert _mode(tmp_path / "protected") == 0o775  # mkdtemp's 0700 no more
    assert _mode(tmp_path / "protected" / "model.safetensors") == 0o664
    assert _mode(tmp_path / "protected" / "key.mpkey") == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["key.mpkey", "protected", "report.html", "table.csv"]
