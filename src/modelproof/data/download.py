"""Optional download of MNIST, Fashion-MNIST and CIFAR-10 from their published addresses, checked by MD5.

Each file is streamed into a temporary file beside its destination, its MD5 is checked, and only then
is it moved into place with :func:`os.replace`; a failed or interrupted download leaves nothing behind.
Files already present with the right checksum are not fetched again.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
from pathlib import Path

import httpx

from ..util.errors import DataError
from ..util.files import temporary_file

_IDX = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
        "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
CIFAR10_TARBALL = "cifar-10-python.tar.gz"
_CIFAR10_FILES = ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5",
                  "test_batch", "batches.meta")

#: name -> (base URL, {file name: published MD5})
SOURCES: dict[str, tuple[str, dict[str, str]]] = {
    "mnist": ("https://ossci-datasets.s3.amazonaws.com/mnist/", dict(zip(_IDX, (
        "f68b3c2dcbeaaa9fbdd348bbdeb94873", "d53e105ee54ea40749a09fcbcd1e9432",
        "9fb629c4189551a2d022fa330f9573f3", "ec29112dd5afa0611ce80d1b7f02629c")))),
    "fashion-mnist": ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/", dict(zip(_IDX, (
        "8d4fb7e6c68d591d4c3dfef9ec88bf0d", "25c81989df183df01b3e8a0aad5dffbe",
        "bef4ecab320f06d8554ea6380940ec79", "bb300cfdad3c16e7a12a480ee83cd310")))),
    "cifar10": ("https://www.cs.toronto.edu/~kriz/", {CIFAR10_TARBALL: "c58f30108f718f92721af3b95e74349a"}),
}


def md5sum(path: Path, chunk: int = 1 << 20) -> str:
    """Hex MD5 digest of the file at ``path``."""
    digest = hashlib.md5(usedforsecurity=False)
    with Path(path).open("rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _check_md5(md5: str) -> str:
    md5 = md5.strip().lower()
    if len(md5) != 32 or any(c not in "0123456789abcdef" for c in md5):
        raise DataError(f"expected an MD5 checksum of 32 hex digits, got {md5!r}")
    return md5


def fetch(url: str, dest: Path, md5: str, *, timeout: float = 60) -> Path:
    """Download ``url`` to ``dest`` (a file path, or a folder to hold the URL's file name) unless present.

    The file is streamed to a temporary file in the same folder, its MD5 compared with ``md5``, and
    moved into place atomically. On any failure the temporary file is removed and :class:`DataError`
    names the URL (and, for a checksum mismatch, the expected and actual digests).
    """
    md5 = _check_md5(md5)
    dest = Path(dest)
    if dest.is_dir():
        dest = dest / url.rstrip("/").rsplit("/", 1)[-1]
    if dest.is_file() and md5sum(dest) == md5:
        return dest
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = temporary_file(dest, ".part")  # the usual mode, not mkstemp's 0600
    except OSError as exc:
        raise DataError(f"cannot create a file in {dest.parent} to download {url}: {exc}") from exc
    try:
        digest = hashlib.md5(usedforsecurity=False)
        with os.fdopen(fd, "wb") as out:
            with httpx.stream("GET", url, timeout=timeout, follow_redirects=True) as response:
                if response.status_code != 200:
                    raise DataError(f"download of {url} failed: HTTP {response.status_code} "
                                    f"{response.reason_phrase}".rstrip())
                for block in response.iter_bytes(1 << 16):
                    digest.update(block)
                    out.write(block)
            out.flush()
            os.fsync(out.fileno())
        actual = digest.hexdigest()
        if actual != md5:
            raise DataError(f"checksum mismatch for {url}: expected MD5 {md5}, got {actual}")
        os.replace(tmp, dest)
    except httpx.HTTPError as exc:
        tmp.unlink(missing_ok=True)
        raise DataError(f"download of {url} failed: {type(exc).__name__}: {exc}") from exc
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise DataError(f"cannot write {dest} while downloading {url}: {exc}") from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return dest


def _safe_members(tar: tarfile.TarFile, path: Path) -> list[tarfile.TarInfo]:
    """Fallback for Pythons without extraction filters: plain files and folders inside the archive only."""
    members = tar.getmembers()
    for m in members:
        parts = Path(m.name).parts
        if m.name.startswith(("/", "\\")) or ".." in parts or not (m.isfile() or m.isdir()):
            raise DataError(f"{path}: refusing to extract unsafe archive member {m.name!r}")
    return members


def extract_tarball(archive: Path, dest: Path) -> None:
    """Extract ``archive`` into ``dest`` safely (tarfile's 'data' filter), via a temporary folder."""
    dest.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".extract-", dir=dest))
    try:
        try:
            with tarfile.open(archive, "r:*") as tar:
                if hasattr(tarfile, "data_filter"):
                    tar.extractall(staging, filter="data")
                else:  # pragma: no cover - Python < 3.11.4
                    tar.extractall(staging, members=_safe_members(tar, archive))
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise DataError(f"{archive}: cannot extract the archive safely ({exc})") from exc
        for item in staging.iterdir():
            target = dest / item.name
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            elif target.exists() or target.is_symlink():
                target.unlink()
            os.replace(item, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def download_dataset(name: str, root: str | Path, *, mirror: str | None = None,
                     checksums: dict[str, str] | None = None, timeout: float = 60) -> Path:
    """Download dataset ``name`` (mnist, fashion-mnist or cifar10) into ``root/<name>`` and return that folder.

    ``mirror`` replaces the base URL (files keep their published names); ``checksums`` maps file
    names to MD5 digests that override the published ones. The result loads with
    ``load_dataset(name, <returned folder>)``.
    """
    if name not in SOURCES:
        raise DataError(f"cannot download dataset {name!r}; expected one of {', '.join(SOURCES)}")
    base, table = SOURCES[name]
    unknown = sorted(set(checksums or {}) - set(table))
    if unknown:
        raise DataError(f"checksums given for unknown files {unknown}; {name} has {sorted(table)}")
    table = {**table, **(checksums or {})}
    base = (mirror.rstrip("/") + "/") if mirror else base
    folder = Path(root) / name
    new = [p for p in (folder, *folder.parents) if not p.exists()]  # folders this call creates
    try:
        for filename, md5 in table.items():
            fetch(base + filename, folder / filename, md5, timeout=timeout)
        if name == "cifar10":
            batches = folder / "cifar-10-batches-py"
            if not all((batches / f).is_file() for f in _CIFAR10_FILES):
                extract_tarball(folder / CIFAR10_TARBALL, folder)
            missing = [f for f in _CIFAR10_FILES if not (batches / f).is_file()]
            if missing:
                raise DataError(f"{folder / CIFAR10_TARBALL}: archive lacks cifar-10-batches-py/{missing[0]}")
    except BaseException:
        for path in new:  # a failed download leaves no empty folder (verified files it fetched stay)
            if path.is_dir() and not any(path.iterdir()):
                path.rmdir()
        raise
    return folder
