"""Recognise the published datasets by their files, so that one dataset's folder is not read as another's.

The label files of MNIST and Fashion-MNIST have the same format, so ``--dataset mnist --data-dir
<the Fashion-MNIST folder>`` would load (and score a model 0.08). :func:`published_as` names the
published dataset whose label file this is, from the SHA-256 of its labels (gzipped or not: the hash
is of the labels themselves, after the IDX header); an unknown file (the user's own IDX) is None.
"""

from __future__ import annotations

import hashlib

import numpy as np

from ..util.errors import DataError

#: SHA-256 of the labels (after the IDX header) -> (dataset, split) of the published files.
PUBLISHED_LABELS: dict[str, tuple[str, str]] = {
    "1feba77c54802fa5339a11837ea4b2866434b83314ec45192930f1df69120c13": ("mnist", "train"),
    "ddeff807876a9661a1110d45c266c86239a3a1b7d37da0c3716a7a683c852ff5": ("mnist", "test"),
    "657fbd221bfc9f4198cc14b5619cc33ec57c58dd0e47af4d99d6650759e869a7": ("fashion-mnist", "train"),
    "3d0e6c6ea990b53b6f8f500a41cac93881d981b315f84578b7d915342ade01e9": ("fashion-mnist", "test"),
}


def published_as(labels: np.ndarray) -> tuple[str, str] | None:
    """(dataset, split) whose published label file holds exactly ``labels``, else None."""
    return PUBLISHED_LABELS.get(hashlib.sha256(np.ascontiguousarray(labels, dtype=np.uint8).tobytes()).hexdigest())


def check_published(name: str, labels: np.ndarray, path: object) -> None:
    """DataError when ``labels`` (read from ``path`` for dataset ``name``) are another published dataset's."""
    found = published_as(labels)
    if found is not None and found[0] != name:
        raise DataError(f"{path} is the published {found[0]} {found[1]} file, not {name}: pass --dataset "
                        f"{found[0]}, or point --data-dir at the {name} files")


__all__ = ["PUBLISHED_LABELS", "published_as", "check_published"]
