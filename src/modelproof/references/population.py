"""The calibration references of the default population, for callers that only calibrate (experiments, demo).

:func:`train_references` returns the first ``count`` calibration members of the default population
of ``data`` (:mod:`modelproof.references.mix`: twelve kinds, cached on disk under the user's cache
folder, see :func:`~modelproof.references.store.default_dir`), training only those the cache lacks.
``protect`` itself also chooses its key against the population's selection members
(:mod:`modelproof.references.sets`).
"""

from __future__ import annotations

from .calibration import DEFAULT_REFERENCES, MIN_REFERENCES, Reference
from ..data.splits import Dataset
from ..util.checks import check_int

_TRAINED: dict[tuple, tuple[list[Reference], float]] = {}  # one population per folder and count, per process


def train_references(data: Dataset, *, owner_arch: str | None = None, count: int = DEFAULT_REFERENCES,
                     seed: int = 0, quiet: bool = True) -> tuple[list[Reference], float]:
    """``count`` calibration references of ``data``'s default population and the seconds spent training them.

    ``owner_arch`` and ``seed`` are accepted for compatibility: the population does not depend on
    them (its members' seeds follow from the plan, never the owner's).
    """
    from .build import build_population
    from .mix import CALIBRATION
    from .store import default_dir

    del owner_arch, seed
    count = check_int("references", count, MIN_REFERENCES)
    dataset = data.name.split("/")[0] or "data"
    folder = default_dir(dataset, data)
    key = (str(folder), count)
    if key not in _TRAINED:
        pop, _, seconds = build_population(folder, (data, None), dataset=dataset, calibration=count, selection=0,
                                           quiet=quiet)
        _TRAINED[key] = (pop.references(CALIBRATION)[:count], seconds)
    return list(_TRAINED[key][0]), _TRAINED[key][1]
