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
