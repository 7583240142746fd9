import pickle

import pytest
import torch

from modelproof.util.errors import ModelFileError
from modelproof.models.modelfile import export_onnx, load_model, read_model_file, save_model, weights_digest
from modelproof.models import build_model


def test_round_trip_is_bit_exact(trained_cnn, tmp_path):
    path = save_model(trained_cnn, tmp_path / "m.safetensors", dataset="digits")
    loaded = load_model(path)
    for (k, a), (k2, b) in zip(trained_cnn.state_dict().items(), loaded.state_dict().items()):
        assert k == k2 and a.dtype == b.dtype and torch.equal(a, b)
    assert weights_digest(loaded) == weights_digest(trained_cnn)
    assert loaded.record.arch == "cnn" and loaded.record.input_shape == (1, 8, 8)
    assert not list(tmp_path.glob(".*tmp"))


def test_pickle_and_torch_save_are_refused(tmp_path, trained_cnn):
    pk = tmp_path / "evil.safetensors"
    pk.write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(ModelFileError, match="never unpickles"):
        load_model(pk)
    ts = tmp_path / "model.pt"
    torch.save(trained_cnn.state_dict(), ts)
    with pytest.raises(ModelFileError, match="never unpickles"):
        load_model(ts)


def test_garbage_missing_and_recordless_files(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!")
    with pytest.raises(ModelFileError, match="not a readable safetensors"):
        load_model(bad)
    with pytest.raises(ModelFileError, match="not found"):
        load_model(tmp_path / "nope.safetensors")
    from safetensors.torch import save_file

    plain = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(2)}, str(plain))
    with pytest.raises(ModelFileError, match="no modelproof record"):
        read_model_file(plain)


def test_weights_that_do_not_fit_the_record(tmp_path):
    model = build_model("mlp", 10, (1, 8, 8))
    path = save_model(model, tmp_path / "m.safetensors")
    other = save_model(build_model("mlp", 10, (1, 16, 16)), tmp_path / "o.safetensors")
    from safetensors.torch import load_file, save_file
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        meta = fh.metadata()
    save_file(load_file(str(other)), str(path), metadata=meta)
    with pytest.raises(ModelFileError, match="do not fit"):
        load_model(path)


def test_onnx_export_matches_torch(trained_cnn, tmp_path):
    import onnxruntime as ort

    path = export_onnx(trained_cnn, tmp_path / "m.onnx")
    sess = ort.InferenceSession(str(path))
    x = torch.rand(37, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    got = torch.from_numpy(sess.run(None, {"input": x.numpy()})[0])
    assert got.shape == (37, 10)
    assert torch.allclose(got, trained_cnn(x), atol=1e-4)


def test_safetensors_whose_header_length_starts_like_a_pickle_loads(tmp_path):
    # A header length of 0x80 + 256*k puts byte 0x80 first; the file is still safetensors.
    from modelproof.util.files import looks_like_pickle

    assert looks_like_pickle(pickle.dumps({"a": 1}))
    raw = (0x80).to_bytes(8, "little") + b"{" + b" " * 0x7F
    assert not looks_like_pickle(raw)
