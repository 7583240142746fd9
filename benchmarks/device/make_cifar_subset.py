"""A CIFAR-10 subset small enough to travel with a GPU run (the shared data does not).

Usage: python benchmarks/device/make_cifar_subset.py [--source ../shared/data/cifar10]
                                                     [--out benchmarks/device/data/cifar10] [--train 10000]

Writes ``cifar10-train.npz`` (the first ``--train`` / 10 training images of every class, in their
original order: class-balanced) and ``cifar10-test-first1000.npz`` (the 1,000 test images the shared data
holds) to ``--out``, a git-ignored folder; ``load_splits("cifar10", OUT)`` and
``modelproof ... --dataset cifar10 --data-dir OUT`` read them with the ordinary npz loader. About 2.8
MB per 1,000 images (compressed uint8), so 10,000 training images take about 28 MB.
"""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path

import numpy as np

from modelproof.util.files import atomic_write_bytes


def balanced_first(labels: np.ndarray, count: int, classes: int = 10) -> np.ndarray:
    """Indices of the first ``count // classes`` images of every class, in their original order."""
    per = count // classes
    picks = [np.flatnonzero(labels == c)[:per] for c in range(classes)]
    if any(len(p) < per for p in picks):
        raise SystemExit(f"the source holds fewer than {per} images of some class")
    return np.sort(np.concatenate(picks))


def write_npz(path: Path, x: np.ndarray, y: np.ndarray) -> int:
    """Write ``x`` (uint8 NHWC) and ``y`` (uint8) compressed, atomically; returns the bytes written."""
    buffer = io.BytesIO()
    np.savez_compressed(buffer, x=x, y=y)
    atomic_write_bytes(path, buffer.getvalue())
    return len(buffer.getvalue())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", default="../shared/data/cifar10", help="folder with cifar10-train.npz and "
                        "cifar10-test-first1000.npz")
    parser.add_argument("--out", default="benchmarks/device/data/cifar10")
    parser.add_argument("--train", type=int, default=10000, help="training images (a multiple of 10, at most 50000)")
    args = parser.parse_args()
    if not 10 <= args.train <= 50000 or args.train % 10:
        parser.error(f"--train must be a multiple of 10 between 10 and 50000, got {args.train}")
    source, out = Path(args.source), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with np.load(source / "cifar10-train.npz", allow_pickle=False) as train:
        x, y = train["x"], train["y"]
    idx = balanced_first(y, args.train)
    sizes = {"cifar10-train.npz": write_npz(out / "cifar10-train.npz", x[idx], y[idx])}
    with np.load(source / "cifar10-test-first1000.npz", allow_pickle=False) as test:
        name = "cifar10-test-first1000.npz"
        sizes[name] = write_npz(out / name, test["x"], test["y"][:len(test["x"])])
    print(json.dumps({"out": str(out), "train_images": len(idx), "test_images": 1000,
                      "bytes": sizes, "total_mb": round(sum(sizes.values()) / 2**20, 1)}))


if __name__ == "__main__":
    main()
