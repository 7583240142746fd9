"""Readers for dataset files in their published formats: IDX (MNIST), CIFAR pickles, ``.npz``, image folders.

Every reader returns a :class:`~modelproof.data.Dataset` (float32 NCHW in [0,1], int64 labels) and
raises :class:`~modelproof.util.errors.DataError` naming the file and what was expected when a file is
missing, truncated or malformed. CIFAR pickles are read with an unpickler that only accepts the
handful of globals those files contain, so a hostile pickle cannot run code.
"""

from __future__ import annotations

import gzip
import io
import pickle
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .dataset import Dataset
from .identify import check_published
from ..util.errors import DataError

try:  # numpy >= 2
    from numpy._core.multiarray import _reconstruct
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core.multiarray import _reconstruct  # type: ignore[no-redef]

FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                   "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
_GRAY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"}


def load(name: str, root: Path, split: str, *, size: int | tuple[int, int] | None = None) -> Dataset:
    """Load split ``train`` or ``test`` of dataset ``name`` from the files under ``root``.

    ``size`` (an int for square images, or ``(height, width)``) only matters for ``folder``,
    whose images are resized while they are read.
    """
    root = Path(root)
    if split not in ("train", "test"):
        raise DataError(f"split must be 'train' or 'test', got {split!r}")
    if name in ("mnist", "fashion-mnist"):
        return load_idx(name, root, split)
    if name in ("cifar10", "cifar100"):
        return load_cifar(name, root, split)
    if name == "npz":
        return load_npz(_npz_file(root, split, ("{split}.npz",)), name="npz", split=split)
    if name == "folder":
        return load_folder(root, split, size=size)
    raise DataError(f"unknown dataset {name!r}; expected mnist, fashion-mnist, cifar10, cifar100, npz or folder")


def _to_float(u8: np.ndarray) -> torch.Tensor:
    """uint8 array (any layout) -> contiguous float32 tensor of the same shape, divided by 255."""
    out = np.empty(u8.shape, dtype=np.float32)
    np.divide(u8, np.float32(255.0), out=out)
    return torch.from_numpy(out)


def _dataset(images: torch.Tensor, labels: np.ndarray, classes: tuple[str, ...], name: str, source: Path,
             split: str) -> Dataset:
    return Dataset(images, torch.from_numpy(np.ascontiguousarray(labels, dtype=np.int64)), classes, name,
                   {"source": str(source), "split": split})


def _check_labels(labels: np.ndarray, num_classes: int, path: Path) -> None:
    if labels.size and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise DataError(f"{path}: labels must lie in [0, {num_classes}), "
                        f"got values in [{int(labels.min())}, {int(labels.max())}]")


# ---------------------------------------------------------------- IDX (MNIST, Fashion-MNIST)

def _find_idx(name: str, root: Path, stem: str) -> Path:
    folders = [root, root / name, root / {"mnist": "MNIST", "fashion-mnist": "FashionMNIST"}[name] / "raw"]
    names = [f"{stem}.gz", stem, stem.replace("-idx", ".idx") + ".gz", stem.replace("-idx", ".idx")]
    for folder in folders:
        for fname in names:
            if (folder / fname).is_file():
                return folder / fname
    raise DataError(f"{name}: missing file {names[0]} (or {names[1]}) in {root} or {root / name}")


def read_idx(path: Path, magic: int) -> np.ndarray:
    """Read an IDX file (optionally gzipped) of unsigned bytes whose header must carry ``magic``."""
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{path}: cannot read or decompress the file ({exc})") from exc
    if len(raw) < 4:
        raise DataError(f"{path}: file is truncated ({len(raw)} bytes), expected an IDX header")
    found = int.from_bytes(raw[:4], "big")
    if found != magic:
        raise DataError(f"{path}: bad magic number {found}, expected {magic} "
                        f"({'images' if magic == 2051 else 'labels'} IDX file)")
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: file is truncated, its header needs {header} bytes but it has {len(raw)}")
    dims = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    expected = header + int(np.prod(dims, dtype=np.int64))
    if len(raw) != expected:
        problem = "truncated" if len(raw) < expected else "longer than its header says"
        raise DataError(f"{path}: file is {problem}: header {dims} needs {expected} bytes, found {len(raw)}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def load_idx(name: str, root: Path, split: str) -> Dataset:
    """MNIST or Fashion-MNIST from the four original IDX files (gzipped or not) in ``root``."""
    prefix = "train" if split == "train" else "t10k"
    img_path = _find_idx(name, root, f"{prefix}-images-idx3-ubyte")
    lab_path = _find_idx(name, root, f"{prefix}-labels-idx1-ubyte")
    images, labels = read_idx(img_path, 2051), read_idx(lab_path, 2049)
    if len(images) != len(labels):
        raise DataError(f"{lab_path}: holds {len(labels)} labels but {img_path.name} holds {len(images)} images")
    _check_labels(labels, 10, lab_path)
    check_published(name, labels, lab_path)
    classes = tuple(str(i) for i in range(10)) if name == "mnist" else FASHION_CLASSES
    return _dataset(_to_float(images[:, None]), labels, classes, name, img_path.parent, split)


# ---------------------------------------------------------------- CIFAR python pickles

def _latin1_encode(text: str, encoding: str = "latin1", errors: str = "strict") -> bytes:
    """``_codecs.encode`` as protocol-2 pickles use it for bytes, limited to latin-1."""
    if not isinstance(text, str) or encoding.lower() not in ("latin1", "latin-1", "iso-8859-1"):
        raise pickle.UnpicklingError(f"_codecs.encode called with {type(text).__name__}, {encoding!r}")
    return text.encode("latin1", errors)


_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _latin1_encode,
}


class _CifarUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the globals a CIFAR batch holds and refuses every other one."""

    def __init__(self, file: io.BufferedIOBase, path: Path) -> None:
        super().__init__(file, encoding="bytes")
        self.path = path

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise DataError(f"{self.path}: refusing to unpickle the global {module}.{name}; a CIFAR batch "
                            f"only holds numpy arrays, lists, bytes and ints") from None


def read_cifar_pickle(path: Path) -> dict:
    """Unpickle one CIFAR batch or meta file safely; returns its dict with ``str`` keys."""
    if not path.is_file():
        raise DataError(f"missing CIFAR file {path}")
    try:
        with path.open("rb") as fh:
            obj = _CifarUnpickler(fh, path).load()  # type: ignore[arg-type]
    except DataError:
        raise
    except Exception as exc:  # untrusted input: any failure means a malformed file
        raise DataError(f"{path}: not a valid CIFAR python pickle ({type(exc).__name__}: {exc})") from exc
    if not isinstance(obj, dict):
        raise DataError(f"{path}: expected a pickled dict, got {type(obj).__name__}")
    return {k.decode("latin1") if isinstance(k, bytes) else str(k): v for k, v in obj.items()}


def _cifar_batch(path: Path, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    d = read_cifar_pickle(path)
    if "data" not in d or label_key not in d:
        raise DataError(f"{path}: expected keys 'data' and {label_key!r}, found {sorted(d)}")
    data = d["data"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise DataError(f"{path}: 'data' must be a uint8 array of shape (N, 3072), got "
                        f"{getattr(data, 'dtype', type(data).__name__)} {getattr(data, 'shape', '')}")
    try:
        labels = np.asarray(d[label_key], dtype=np.int64)
    except (TypeError, ValueError, OverflowError) as exc:
        raise DataError(f"{path}: {label_key!r} must be a list of integers ({exc})") from exc
    if labels.shape != (len(data),):
        raise DataError(f"{path}: holds {len(data)} images but {labels.size} {label_key!r}")
    return data, labels


def _cifar_names(path: Path, key: str) -> tuple[str, ...]:
    names = read_cifar_pickle(path).get(key)
    if not isinstance(names, list) or not all(isinstance(n, (bytes, str)) for n in names):
        raise DataError(f"{path}: expected {key!r} to be a list of class names")
    return tuple(n.decode("utf-8", "replace") if isinstance(n, bytes) else n for n in names)


def load_cifar(name: str, root: Path, split: str) -> Dataset:
    """CIFAR-10/100 from the original python pickles, or (CIFAR-10) from ``cifar10-<split>.npz``."""
    sub = "cifar-10-batches-py" if name == "cifar10" else "cifar-100-python"
    if name == "cifar10":
        files = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
        meta, label_key, names_key = "batches.meta", "labels", "label_names"
    else:
        files, meta, label_key, names_key = [split], "meta", "fine_labels", "fine_label_names"
    folders = [f for base in (root, root / name) for f in (base / sub, base)]
    for folder in folders:
        if all((folder / f).is_file() for f in files):
            parts = [_cifar_batch(folder / f, label_key) for f in files]
            data = np.concatenate([p[0] for p in parts])
            labels = np.concatenate([p[1] for p in parts])
            if (folder / meta).is_file():
                classes = _cifar_names(folder / meta, names_key)
            elif name == "cifar10":
                classes = CIFAR10_CLASSES
            else:
                raise DataError(f"missing CIFAR-100 class names file {folder / meta}")
            _check_labels(labels, len(classes), folder / files[-1])
            return _dataset(_to_float(data.reshape(-1, 3, 32, 32)), labels, classes, name, folder, split)
    if name == "cifar10":
        for base in (root, root / name):
            npz = _npz_file(base, split, ("cifar10-{split}.npz", "{split}.npz", "cifar10-{split}*.npz"), missing=None)
            if npz is not None:
                return load_npz(npz, name=name, default_classes=CIFAR10_CLASSES, split=split)
    first = next((f for f in files if not (folders[0] / f).is_file()), files[0])
    raise DataError(f"{name}: missing file {sub}/{first} under {root}"
                    + (" (nor cifar10-{0}.npz / {0}.npz)".format(split) if name == "cifar10" else ""))


# ---------------------------------------------------------------- .npz arrays

def _npz_file(root: Path, split: str, patterns: tuple[str, ...], missing: str | None = "raise") -> Path | None:
    """``root`` itself when it is a file, else the first file in ``root`` matching one of ``patterns``."""
    if root.is_file():
        return root
    if root.is_dir():
        for pattern in patterns:
            hits = sorted(root.glob(pattern.format(split=split)))
            if hits:
                return hits[0]
    if missing is None:
        return None
    raise DataError(f"missing {patterns[0].format(split=split)} in {root} (expected a .npz file or a folder "
                    f"holding train.npz / test.npz)")


def load_npz(path: Path, *, name: str = "npz", default_classes: tuple[str, ...] | None = None,
             split: str = "train") -> Dataset:
    """A ``.npz`` with ``x`` (uint8 NHWC or NHW, or float in [0,1]), ``y`` (integer labels), optional ``class_names``."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files if k in ("x", "y", "class_names")}
    except Exception as exc:  # untrusted input: zip, header and pickle errors all mean a bad file
        raise DataError(f"{path}: cannot read as a .npz of plain arrays ({type(exc).__name__}: {exc})") from exc
    if "x" not in arrays or "y" not in arrays:
        raise DataError(f"{path}: expected arrays 'x' (images) and 'y' (labels), found {sorted(arrays)}")
    x, y = arrays["x"], arrays["y"]
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4 or x.shape[-1] not in (1, 3):
        raise DataError(f"{path}: 'x' must have shape (N, H, W, C) with C 1 or 3, or (N, H, W); got {x.shape}")
    if x.dtype == np.uint8:
        images = _to_float(x.transpose(0, 3, 1, 2))
    elif x.dtype.kind == "f":
        if x.size and not (np.isfinite(x).all() and float(x.min()) >= 0.0 and float(x.max()) <= 1.0):
            raise DataError(f"{path}: float 'x' must be finite and lie in [0, 1], "
                            f"got values in [{float(x.min()):.3g}, {float(x.max()):.3g}]")
        images = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2), dtype=np.float32))
    else:
        raise DataError(f"{path}: 'x' must be uint8 (0..255) or float in [0, 1], got {x.dtype}")
    if y.dtype.kind not in "iu" or y.shape != (len(x),):
        raise DataError(f"{path}: 'y' must be {len(x)} integer labels (shape ({len(x)},)), got {y.dtype} {y.shape}")
    if "class_names" in arrays:
        cn = arrays["class_names"]
        if cn.dtype.kind != "U" or cn.ndim != 1:
            raise DataError(f"{path}: 'class_names' must be a 1-D array of str, got {cn.dtype} {cn.shape}")
        classes = tuple(str(c) for c in cn)
    elif default_classes is not None:
        classes = default_classes
    else:
        classes = tuple(str(i) for i in range(int(y.max()) + 1 if y.size else 0))
    _check_labels(y, len(classes), path)
    return _dataset(images, y, classes, name, path, split)


# ---------------------------------------------------------------- image folders

def load_folder(root: Path, split: str = "train", *, size: int | tuple[int, int] | None = None) -> Dataset:
    """ImageFolder tree ``root/<split>/<class>/*.png|jpg|jpeg`` (or ``root/<class>/...``), read with Pillow.

    Images become grayscale when every image is grayscale, else RGB. Without ``size`` all images must
    share the size of the first one.
    """
    from PIL import Image

    if not root.is_dir():
        raise DataError(f"image folder {root} does not exist or is not a folder")
    if (root / split).is_dir():
        base = root / split
    elif any((root / s).is_dir() for s in ("train", "test")):
        raise DataError(f"missing split folder {root / split}: {root} holds split subfolders (train/test)")
    else:
        base = root
    classes = tuple(sorted(p.name for p in base.iterdir() if p.is_dir() and not p.name.startswith(".")))
    if not classes:
        raise DataError(f"{base}: expected one subfolder per class holding .png/.jpg/.jpeg images, found none")
    hw = (size, size) if isinstance(size, int) else tuple(size) if size is not None else None
    if hw is not None and (len(hw) != 2 or min(hw) < 1):
        raise DataError(f"image size must be a positive int or (height, width), got {size!r}")
    arrays: list[np.ndarray] = []
    labels: list[int] = []
    first: Path | None = None
    for label, cls in enumerate(classes):
        files = sorted(p for p in (base / cls).iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise DataError(f"{base / cls}: class folder holds no .png/.jpg/.jpeg images")
        for path in files:
            try:
                with Image.open(path) as im:
                    im = im.convert("L" if im.mode in _GRAY_MODES else "RGB")
                    if hw is not None and im.size != (hw[1], hw[0]):
                        im = im.resize((hw[1], hw[0]), Image.Resampling.BILINEAR)
                    arr = np.asarray(im, dtype=np.uint8)
            except (OSError, ValueError, Image.DecompressionBombError) as exc:
                raise DataError(f"{path}: cannot read image ({exc})") from exc
            if arrays and arr.shape[:2] != arrays[0].shape[:2]:
                raise DataError(f"{path}: image is {arr.shape[1]}x{arr.shape[0]} (width x height) but the first "
                                f"image {first} is {arrays[0].shape[1]}x{arrays[0].shape[0]}; pass size= to resize")
            first = first or path
            arrays.append(arr)
            labels.append(label)
    if all(a.ndim == 2 for a in arrays):
        stacked = np.stack(arrays)[:, None]
    else:
        stacked = np.stack([np.repeat(a[..., None], 3, axis=2) if a.ndim == 2 else a for a in arrays])
        stacked = stacked.transpose(0, 3, 1, 2)
    return _dataset(_to_float(stacked), np.asarray(labels), classes, "folder", base, split)
