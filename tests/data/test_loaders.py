"""Dataset file readers: IDX, CIFAR pickles (restricted unpickler), .npz and image folders, on files made here."""

from __future__ import annotations

import gzip
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from modelproof.data import loaders
from modelproof.data.splits import load_dataset
from modelproof.util.errors import DataError

RNG = np.random.default_rng(0)


# ---------------------------------------------------------------- IDX

def idx_bytes(magic: int, arr: np.ndarray) -> bytes:
    return magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in arr.shape) + arr.tobytes()


def write_idx_set(folder: Path, n_train: int = 12, n_test: int = 5, gz: bool = True) -> dict[str, np.ndarray]:
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        x = RNG.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        y = RNG.integers(0, 10, size=n, dtype=np.uint8)
        for kind, magic, arr in (("images-idx3", 2051, x), ("labels-idx1", 2049, y)):
            data = idx_bytes(magic, arr)
            name = f"{prefix}-{kind}-ubyte"
            if gz:
                (folder / f"{name}.gz").write_bytes(gzip.compress(data))
            else:
                (folder / name).write_bytes(data)
            arrays[f"{prefix}-{kind}"] = arr
    return arrays


@pytest.mark.parametrize("gz", [True, False])
@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_idx_round_trip(tmp_path, name, gz):
    arrays = write_idx_set(tmp_path, gz=gz)
    for split, prefix, n in (("train", "train", 12), ("test", "t10k", 5)):
        d = loaders.load(name, tmp_path, split)
        assert d.images.dtype == torch.float32 and d.images.shape == (n, 1, 28, 28)
        assert d.labels.dtype == torch.int64
        expected = torch.from_numpy(arrays[f"{prefix}-images-idx3"].astype(np.float32) / 255.0)
        assert torch.equal(d.images[:, 0], expected)
        assert d.labels.tolist() == arrays[f"{prefix}-labels-idx1"].tolist()
        assert 0.0 <= float(d.images.min()) and float(d.images.max()) <= 1.0
    names = loaders.load(name, tmp_path, "train").class_names
    assert names == (tuple("0123456789") if name == "mnist" else loaders.FASHION_CLASSES)
    assert "T-shirt/top" in loaders.FASHION_CLASSES and loaders.FASHION_CLASSES[-1] == "Ankle boot"


def test_idx_found_in_named_subfolder_and_via_load_dataset(tmp_path):
    write_idx_set(tmp_path / "mnist")
    d = load_dataset("mnist", tmp_path, split="test", size=14)
    assert d.images.shape == (5, 1, 14, 14)


def _corrupt(folder: Path, fname: str, data: bytes) -> Path:
    path = folder / fname
    path.write_bytes(gzip.compress(data) if fname.endswith(".gz") else data)
    return path


@pytest.mark.parametrize("fname,make,match", [
    ("train-images-idx3-ubyte.gz", lambda: idx_bytes(2049, np.zeros((12, 28, 28), np.uint8)), "bad magic number 2049"),
    ("train-labels-idx1-ubyte.gz", lambda: idx_bytes(2051, np.zeros(12, np.uint8)), "bad magic number 2051"),
    ("train-images-idx3-ubyte.gz", lambda: idx_bytes(2051, np.zeros((12, 28, 28), np.uint8))[:-100], "truncated"),
    ("train-labels-idx1-ubyte.gz", lambda: idx_bytes(2049, np.zeros(12, np.uint8)) + b"x", "longer than"),
    ("train-images-idx3-ubyte.gz", lambda: b"\x00\x00\x08\x03\x00\x00", "truncated"),
    ("train-labels-idx1-ubyte.gz", lambda: idx_bytes(2049, np.zeros(11, np.uint8)), "11 labels"),
    ("train-labels-idx1-ubyte.gz", lambda: idx_bytes(2049, np.full(12, 10, np.uint8)), r"\[0, 10\)"),
])
def test_idx_corrupt_files_name_the_file(tmp_path, fname, make, match):
    write_idx_set(tmp_path)
    path = _corrupt(tmp_path, fname, make())
    with pytest.raises(DataError, match=match) as err:
        loaders.load("mnist", tmp_path, "train")
    assert str(path) in str(err.value)


def test_idx_truncated_gzip_stream_names_the_file(tmp_path):
    write_idx_set(tmp_path)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(DataError, match="decompress") as err:
        loaders.load("mnist", tmp_path, "train")
    assert str(path) in str(err.value)


def test_idx_missing_file_is_named(tmp_path):
    write_idx_set(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match="missing file t10k-labels-idx1-ubyte.gz"):
        loaders.load("fashion-mnist", tmp_path, "test")


def test_unknown_split_and_name(tmp_path):
    with pytest.raises(DataError, match="split must be"):
        loaders.load("mnist", tmp_path, "valid")
    with pytest.raises(DataError, match="unknown dataset"):
        loaders.load("svhn", tmp_path, "train")


# ---------------------------------------------------------------- CIFAR pickles

def write_cifar10(folder: Path, n: int = 4, numpy1_globals: bool = False) -> dict[str, tuple[np.ndarray, list[int]]]:
    """CIFAR-10 python batches, pickled with protocol 2 like the originals (bytes keys, numpy arrays)."""
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    for fname in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = RNG.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        labels = RNG.integers(0, 10, size=n).tolist()
        blob = pickle.dumps({b"batch_label": fname.encode(), b"labels": labels, b"data": data,
                             b"filenames": [f"img_{i}.png".encode() for i in range(n)]}, protocol=2)
        if numpy1_globals:  # what a numpy 1.x pickle (like the published files) references
            blob = blob.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
        (folder / fname).write_bytes(blob)
        written[fname] = (data, labels)
    names = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]
    meta = {b"num_cases_per_batch": n, b"label_names": names, b"num_vis": 3072}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    return written


@pytest.mark.parametrize("numpy1_globals", [False, True])
def test_cifar10_round_trip(tmp_path, numpy1_globals):
    written = write_cifar10(tmp_path / "cifar-10-batches-py", numpy1_globals=numpy1_globals)
    train = loaders.load("cifar10", tmp_path, "train")
    assert train.images.shape == (20, 3, 32, 32) and train.images.dtype == torch.float32
    data = np.concatenate([written[f"data_batch_{i}"][0] for i in range(1, 6)])
    expected = torch.from_numpy(data.reshape(-1, 3, 32, 32).astype(np.float32) / 255.0)
    assert torch.equal(train.images, expected)
    assert train.labels.tolist() == sum((written[f"data_batch_{i}"][1] for i in range(1, 6)), [])
    assert train.class_names == loaders.CIFAR10_CLASSES
    test = loaders.load("cifar10", tmp_path, "test")
    assert test.labels.tolist() == written["test_batch"][1] and len(test) == 4
    # the red plane comes first in each row of 3072 bytes
    assert test.images[0, 0, 0, 1] == torch.tensor(written["test_batch"][0][0, 1] / 255.0, dtype=torch.float32)


def test_cifar100_round_trip(tmp_path):
    folder = tmp_path / "cifar100" / "cifar-100-python"
    folder.mkdir(parents=True)
    fine = [f"class{i:02d}".encode() for i in range(100)]
    (folder / "meta").write_bytes(pickle.dumps({b"fine_label_names": fine, b"coarse_label_names": fine[:20]},
                                               protocol=2))
    data = RNG.integers(0, 256, size=(6, 3072), dtype=np.uint8)
    for split in ("train", "test"):
        batch = {b"data": data, b"fine_labels": [0, 5, 99, 42, 7, 7], b"coarse_labels": [0, 1, 19, 3, 4, 4]}
        (folder / split).write_bytes(pickle.dumps(batch, protocol=2))
    d = loaders.load("cifar100", tmp_path, "test")
    assert d.num_classes == 100 and d.class_names[99] == "class99"
    assert d.labels.tolist() == [0, 5, 99, 42, 7, 7]
    assert torch.equal(d.images, torch.from_numpy(data.reshape(6, 3, 32, 32).astype(np.float32) / 255.0))


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("payload", ["os.system", "builtins.eval"])
def test_malicious_pickle_is_refused_without_side_effect(tmp_path, payload):
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar10(folder)
    marker = tmp_path / "pwned"
    evil = _Evil(marker) if payload == "os.system" else type("E", (), {
        "__reduce__": lambda self: (eval, (f"open({str(marker)!r}, 'w')",))})()
    (folder / "data_batch_3").write_bytes(pickle.dumps({b"data": evil, b"labels": []}, protocol=2))
    with pytest.raises(DataError, match="refusing to unpickle the global") as err:
        loaders.load("cifar10", tmp_path, "train")
    assert str(folder / "data_batch_3") in str(err.value)
    assert payload.split(".")[1] in str(err.value)  # os.system pickles as posix.system, eval as __builtin__.eval
    assert not marker.exists()


def test_codecs_encode_limited_to_latin1(tmp_path):
    path = tmp_path / "test_batch"
    # protocol-2 opcodes: GLOBAL _codecs.encode, ("x", "rot13"), REDUCE, STOP
    path.write_bytes(b"\x80\x02c_codecs\nencode\nX\x01\x00\x00\x00xX\x05\x00\x00\x00rot13\x86R.")
    with pytest.raises(DataError, match="not a valid CIFAR python pickle"):
        loaders.read_cifar_pickle(path)


@pytest.mark.parametrize("content,match", [
    ({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}, r"shape \(N, 3072\)"),
    ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]}, "2 images but 1"),
    ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 10]}, r"\[0, 10\)"),
    ({b"data": np.zeros((2, 3072), np.uint8)}, "expected keys"),
    ([1, 2, 3], "expected a pickled dict"),
])
def test_cifar_malformed_batches(tmp_path, content, match):
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar10(folder)
    (folder / "test_batch").write_bytes(pickle.dumps(content, protocol=2))
    with pytest.raises(DataError, match=match) as err:
        loaders.load("cifar10", tmp_path, "test")
    assert "test_batch" in str(err.value)


def test_cifar_truncated_and_missing_batches(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar10(folder)
    blob = (folder / "test_batch").read_bytes()
    (folder / "test_batch").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(DataError, match="not a valid CIFAR python pickle") as err:
        loaders.load("cifar10", tmp_path, "test")
    assert str(folder / "test_batch") in str(err.value)
    (folder / "data_batch_3").unlink()
    with pytest.raises(DataError, match="data_batch_3"):
        loaders.load("cifar10", tmp_path, "train")


# ---------------------------------------------------------------- .npz

def test_npz_rgb_file_and_folder(tmp_path):
    x = RNG.integers(0, 256, size=(7, 5, 6, 3), dtype=np.uint8)
    y = np.array([0, 1, 2, 0, 1, 2, 2], dtype=np.uint8)
    np.savez(tmp_path / "train.npz", x=x, y=y, class_names=np.array(["cat", "dog", "emu"]))
    np.savez_compressed(tmp_path / "test.npz", x=x[:3], y=y[:3])
    d = loaders.load("npz", tmp_path / "train.npz", "train")
    assert d.images.shape == (7, 3, 5, 6) and d.images.is_contiguous()
    assert torch.equal(d.images, torch.from_numpy(x.transpose(0, 3, 1, 2).astype(np.float32) / 255.0))
    assert d.labels.tolist() == y.tolist() and d.class_names == ("cat", "dog", "emu")
    t = loaders.load("npz", tmp_path, "test")
    assert len(t) == 3 and t.class_names == ("0", "1", "2")


def test_npz_grayscale_nhw(tmp_path):
    x = RNG.integers(0, 256, size=(4, 8, 8), dtype=np.uint8)
    np.savez(tmp_path / "g.npz", x=x, y=np.arange(4))
    d = loaders.load("npz", tmp_path / "g.npz", "train")
    assert d.images.shape == (4, 1, 8, 8) and torch.equal(d.images[:, 0], torch.from_numpy(x / np.float32(255)))


def test_cifar10_npz_fallback(tmp_path):
    (tmp_path / "cifar-10-batches-py").mkdir()  # incomplete: no batches, like the shared copy
    x = RNG.integers(0, 256, size=(5, 32, 32, 3), dtype=np.uint8)
    np.savez_compressed(tmp_path / "cifar10-train.npz", x=x, y=np.arange(5, dtype=np.uint8))
    np.savez_compressed(tmp_path / "cifar10-test-first1000.npz", x=x[:2], y=np.array([3, 8], np.uint8),
                        y_all=np.arange(10))
    assert loaders.load("cifar10", tmp_path, "train").class_names == loaders.CIFAR10_CLASSES
    test = loaders.load("cifar10", tmp_path, "test")
    assert test.labels.tolist() == [3, 8] and test.input_shape == (3, 32, 32)


@pytest.mark.parametrize("arrays,match", [
    ({"x": np.zeros((2, 4, 4, 3), np.int32), "y": np.zeros(2, np.int64)}, "must be uint8"),
    ({"x": np.zeros((2, 4, 4, 5), np.uint8), "y": np.zeros(2, np.int64)}, "C 1 or 3"),
    ({"x": np.zeros((2, 4, 4, 3), np.uint8), "y": np.zeros(3, np.int64)}, "must be 2 integer labels"),
    ({"x": np.zeros((2, 4, 4, 3), np.uint8), "y": np.zeros(2, np.float32)}, "integer labels"),
    ({"x": np.zeros((2, 4, 4, 3), np.uint8)}, "expected arrays 'x'"),
    ({"x": np.full((2, 4, 4), 2.0), "y": np.zeros(2, np.int64)}, r"lie in \[0, 1\]"),
    ({"x": np.full((2, 4, 4), np.nan, np.float32), "y": np.zeros(2, np.int64)}, "must be finite"),
    ({"x": np.zeros((2, 4, 4), np.uint8), "y": np.array([0, 2]), "class_names": np.array(["a", "b"])},
     r"\[0, 2\)"),
    ({"x": np.zeros((2, 4, 4), np.uint8), "y": np.zeros(2, np.int64), "class_names": np.arange(2)}, "array of str"),
])
def test_npz_validation(tmp_path, arrays, match):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(DataError, match=match) as err:
        loaders.load("npz", path, "train")
    assert str(path) in str(err.value)


def test_npz_pickled_object_array_and_garbage_refused(tmp_path):
    path = tmp_path / "obj.npz"
    np.savez(path, x=np.array([{"a": 1}, None], dtype=object), y=np.zeros(2, np.int64))
    with pytest.raises(DataError, match="plain arrays") as err:
        loaders.load("npz", path, "train")
    assert str(path) in str(err.value)
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="junk.npz"):
        loaders.load("npz", tmp_path / "junk.npz", "train")
    with pytest.raises(DataError, match="missing test.npz"):
        loaders.load("npz", tmp_path, "test")


# ---------------------------------------------------------------- image folders

def write_png(path: Path, arr: np.ndarray, fmt: str = "PNG") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, format=fmt)


def test_folder_rgb_with_split_folders(tmp_path):
    imgs = {c: [RNG.integers(0, 256, size=(6, 5, 3), dtype=np.uint8) for _ in range(2)] for c in ("b_dog", "a_cat")}
    for c, arrs in imgs.items():
        for i, a in enumerate(arrs):
            write_png(tmp_path / "train" / c / f"{i}.png", a)
    write_png(tmp_path / "test" / "a_cat" / "0.png", imgs["a_cat"][0])
    write_png(tmp_path / "test" / "b_dog" / "0.png", imgs["b_dog"][1])
    (tmp_path / "train" / "a_cat" / "notes.txt").write_text("ignored")
    d = loaders.load("folder", tmp_path, "train")
    assert d.class_names == ("a_cat", "b_dog") and d.labels.tolist() == [0, 0, 1, 1]
    assert d.images.shape == (4, 3, 6, 5) and d.images.dtype == torch.float32
    expected = np.stack(imgs["a_cat"] + imgs["b_dog"]).transpose(0, 3, 1, 2).astype(np.float32) / 255.0
    assert torch.equal(d.images, torch.from_numpy(expected))
    t = loaders.load("folder", tmp_path, "test")
    assert len(t) == 2 and torch.equal(t.images[1], torch.from_numpy(expected[3]))
    (tmp_path / "test").rename(tmp_path / "other")
    with pytest.raises(DataError, match="missing split folder"):
        loaders.load("folder", tmp_path, "test")


def test_folder_grayscale_mixed_jpeg_and_resize(tmp_path):
    gray = RNG.integers(0, 256, size=(8, 8), dtype=np.uint8)
    write_png(tmp_path / "zero" / "a.png", gray)
    write_png(tmp_path / "one" / "b.PNG", gray)
    d = loaders.load("folder", tmp_path, "train")
    assert d.images.shape == (2, 1, 8, 8) and torch.equal(d.images[0, 0], torch.from_numpy(gray / np.float32(255)))
    assert d.class_names == ("one", "zero")
    smooth = np.tile(np.linspace(0, 255, 8, dtype=np.uint8), (8, 1))
    write_png(tmp_path / "two" / "c.jpg", np.stack([smooth] * 3, axis=-1), fmt="JPEG")
    mixed = loaders.load("folder", tmp_path, "train")
    assert mixed.images.shape == (3, 3, 8, 8)
    assert mixed.class_names == ("one", "two", "zero") and mixed.labels.tolist() == [0, 1, 2]
    assert torch.equal(mixed.images[0, 0], mixed.images[0, 2])  # gray image replicated to RGB
    assert torch.equal(mixed.images[0, 1], torch.from_numpy(gray / np.float32(255)))
    assert float((mixed.images[1, 0] - torch.from_numpy(smooth / np.float32(255))).abs().max()) < 0.1
    resized = loaders.load("folder", tmp_path, "train", size=4)
    assert resized.images.shape == (3, 3, 4, 4)
    assert loaders.load("folder", tmp_path, "train", size=(3, 5)).images.shape == (3, 3, 3, 5)


def test_folder_errors_name_the_file(tmp_path):
    write_png(tmp_path / "a" / "0.png", np.zeros((8, 8), np.uint8))
    write_png(tmp_path / "b" / "0.png", np.zeros((9, 8), np.uint8))
    with pytest.raises(DataError, match="pass size=") as err:
        loaders.load("folder", tmp_path, "train")
    assert str(tmp_path / "b" / "0.png") in str(err.value)
    assert len(loaders.load("folder", tmp_path, "train", size=8)) == 2
    (tmp_path / "b" / "1.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    with pytest.raises(DataError, match="cannot read image") as err:
        loaders.load("folder", tmp_path, "train", size=8)
    assert str(tmp_path / "b" / "1.jpg") in str(err.value)
    (tmp_path / "c").mkdir()
    (tmp_path / "b" / "1.jpg").unlink()
    with pytest.raises(DataError, match="holds no"):
        loaders.load("folder", tmp_path, "train", size=8)
    with pytest.raises(DataError, match="does not exist"):
        loaders.load("folder", tmp_path / "nowhere", "train")
