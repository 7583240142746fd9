"""Downloads against a real HTTP server on 127.0.0.1: checksums, atomic writes, skips, errors, safe extraction."""

from __future__ import annotations

import gzip
import hashlib
import io
import pickle
import tarfile
import threading
from collections import Counter
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from modelproof.data import download, loaders
from modelproof.data.splits import load_dataset
from modelproof.util.errors import DataError


class _Handler(SimpleHTTPRequestHandler):
    """Serves a folder, counts requests per path, and cuts ``/cut/...`` responses short."""

    counts: Counter

    def do_GET(self) -> None:
        self.counts[self.path] += 1
        if self.path.startswith("/cut/"):
            self.send_response(200)
            self.send_header("Content-Length", "100000")
            self.end_headers()
            self.wfile.write(b"x" * 1000)
            self.wfile.flush()
            self.close_connection = True
            return
        super().do_GET()

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def server(tmp_path):
    """(base URL, served folder, request counter) of a server running for the test."""
    served = tmp_path / "served"
    served.mkdir()
    counts: Counter = Counter()
    handler = type("H", (_Handler,), {"counts": counts})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(handler, directory=str(served)))
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/", served, counts
    httpd.shutdown()
    httpd.server_close()


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def make_mnist(folder: Path, n: int = 6) -> dict[str, str]:
    rng = np.random.default_rng(1)
    sums = {}
    for prefix in ("train", "t10k"):
        x = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        y = rng.integers(0, 10, size=n, dtype=np.uint8)
        for kind, magic, arr in (("images-idx3", 2051, x), ("labels-idx1", 2049, y)):
            raw = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in arr.shape) + arr.tobytes()
            name = f"{prefix}-{kind}-ubyte.gz"
            data = gzip.compress(raw)
            (folder / name).write_bytes(data)
            sums[name] = md5(data)
    return sums


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*")) if folder.exists() else []


def test_download_mnist_from_mirror_then_skip_present_files(server, tmp_path):
    url, served, counts = server
    sums = make_mnist(served)
    root = tmp_path / "data"
    folder = download.download_dataset("mnist", root, mirror=url, checksums=sums)
    assert folder == root / "mnist"
    assert leftovers(folder) == sorted(sums)
    assert len(load_dataset("mnist", root, split="train")) == 6
    assert len(loaders.load("mnist", folder, "test")) == 6
    assert sum(counts.values()) == 4
    download.download_dataset("mnist", root, mirror=url.rstrip("/"), checksums=sums)
    assert sum(counts.values()) == 4  # all present with the right checksum: nothing fetched
    (folder / "t10k-labels-idx1-ubyte.gz").write_bytes(b"stale")
    download.download_dataset("mnist", root, mirror=url, checksums=sums)
    assert counts["/t10k-labels-idx1-ubyte.gz"] == 2 and sum(counts.values()) == 5
    assert md5((folder / "t10k-labels-idx1-ubyte.gz").read_bytes()) == sums["t10k-labels-idx1-ubyte.gz"]


def test_checksum_mismatch_leaves_nothing(server, tmp_path):
    url, served, _ = server
    (served / "file.bin").write_bytes(b"corrupted content")
    dest = tmp_path / "dest"
    expected = md5(b"the real content")
    with pytest.raises(DataError) as err:
        download.fetch(url + "file.bin", dest / "file.bin", expected)
    msg = str(err.value)
    assert url + "file.bin" in msg and expected in msg and md5(b"corrupted content") in msg
    assert leftovers(dest) == []


def test_checksum_mismatch_in_dataset_download(server, tmp_path):
    url, served, _ = server
    sums = make_mnist(served)
    sums["train-labels-idx1-ubyte.gz"] = "0" * 32
    with pytest.raises(DataError, match="checksum mismatch for .*train-labels-idx1-ubyte.gz: expected MD5 0{32}"):
        download.download_dataset("fashion-mnist", tmp_path / "d", mirror=url, checksums=sums)
    assert "train-labels-idx1-ubyte.gz" not in leftovers(tmp_path / "d")
    assert not [n for n in leftovers(tmp_path / "d") if n.endswith(".part")]
    sums["train-images-idx3-ubyte.gz"] = "0" * 32  # the first file fails: nothing fetched at all
    with pytest.raises(DataError):
        download.download_dataset("mnist", tmp_path / "new" / "root", mirror=url, checksums=sums)
    assert not (tmp_path / "new").exists()  # the folders it created are gone, not left empty
    (tmp_path / "mine").mkdir()
    with pytest.raises(DataError):
        download.download_dataset("mnist", tmp_path / "mine", mirror=url, checksums=sums)
    assert (tmp_path / "mine").is_dir() and leftovers(tmp_path / "mine") == []  # the user's folder stays


def test_404_gives_clean_error(server, tmp_path):
    url, _, counts = server
    with pytest.raises(DataError, match=r"download of .*missing\.gz failed: HTTP 404"):
        download.fetch(url + "missing.gz", tmp_path / "out" / "missing.gz", "0" * 32)
    assert counts["/missing.gz"] == 1 and leftovers(tmp_path / "out") == []


def test_interrupted_transfer_leaves_no_temp_file(server, tmp_path):
    url, _, _ = server
    with pytest.raises(DataError, match="download of .*/cut/big.bin failed"):
        download.fetch(url + "cut/big.bin", tmp_path / "dl" / "big.bin", "0" * 32, timeout=10)
    assert leftovers(tmp_path / "dl") == []


def test_fetch_into_folder_and_bad_arguments(server, tmp_path):
    url, served, counts = server
    (served / "a.txt").write_bytes(b"hello")
    assert download.fetch(url + "a.txt", tmp_path, md5(b"hello")) == tmp_path / "a.txt"
    assert (tmp_path / "a.txt").read_bytes() == b"hello"
    with pytest.raises(DataError, match="32 hex digits"):
        download.fetch(url + "a.txt", tmp_path / "b.txt", "xyz")
    with pytest.raises(DataError, match="cannot download dataset 'svhn'"):
        download.download_dataset("svhn", tmp_path)
    with pytest.raises(DataError, match="unknown files"):
        download.download_dataset("mnist", tmp_path, mirror=url, checksums={"train.gz": "0" * 32})
    assert sum(counts.values()) == 1


def test_published_table():
    base, table = download.SOURCES["cifar10"]
    assert base + "cifar-10-python.tar.gz" == "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
    assert table["cifar-10-python.tar.gz"] == "c58f30108f718f92721af3b95e74349a"
    assert download.SOURCES["mnist"][1]["train-images-idx3-ubyte.gz"] == "f68b3c2dcbeaaa9fbdd348bbdeb94873"
    assert download.SOURCES["fashion-mnist"][1]["t10k-labels-idx1-ubyte.gz"] == "bb300cfdad3c16e7a12a480ee83cd310"


def _tar_bytes(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_cifar10_tarball_downloaded_extracted_and_loaded(server, tmp_path):
    url, served, counts = server
    rng = np.random.default_rng(2)
    members = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": rng.integers(0, 256, size=(3, 3072), dtype=np.uint8), b"labels": [1, 2, 9]}
        members[f"cifar-10-batches-py/{name}"] = pickle.dumps(batch, protocol=2)
    members["cifar-10-batches-py/batches.meta"] = pickle.dumps(
        {b"label_names": [c.encode() for c in loaders.CIFAR10_CLASSES]}, protocol=2)
    blob = _tar_bytes(members)
    (served / "cifar-10-python.tar.gz").write_bytes(blob)
    folder = download.download_dataset("cifar10", tmp_path, mirror=url,
                                       checksums={"cifar-10-python.tar.gz": md5(blob)})
    assert (folder / "cifar-10-batches-py" / "test_batch").is_file()
    assert not [n for n in leftovers(folder) if n.startswith(".")]
    assert len(loaders.load("cifar10", folder, "train")) == 15
    assert load_dataset("cifar10", tmp_path, split="test").labels.tolist() == [1, 2, 9]
    download.download_dataset("cifar10", tmp_path, mirror=url, checksums={"cifar-10-python.tar.gz": md5(blob)})
    assert sum(counts.values()) == 1


def test_unsafe_tarball_is_refused(server, tmp_path):
    url, served, _ = server
    blob = _tar_bytes({"cifar-10-batches-py/test_batch": b"x", "../escaped.txt": b"owned"})
    (served / "cifar-10-python.tar.gz").write_bytes(blob)
    dest = tmp_path / "inner"
    with pytest.raises(DataError, match="cannot extract the archive safely"):
        download.download_dataset("cifar10", dest, mirror=url, checksums={"cifar-10-python.tar.gz": md5(blob)})
    assert not (dest / "escaped.txt").exists() and not (tmp_path / "escaped.txt").exists()
    assert leftovers(dest / "cifar10") == ["cifar-10-python.tar.gz"]
