"""``modelproof protect ipguard`` and its baselines: fingerprint a trained model, write the key.

Each command builds the fingerprint from its flags and hands it to :func:`run_protect`, which
loads data and model, extracts the fingerprint and writes ``OUT/key.mpkey``. A fingerprint only
reads the model: the model file is left as it was and no model is written. The IGSM and CW-L2 searches keep
their long chunks of candidates in ``OUT.resume/``, so that an interrupted command goes on.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from .common import (
    DataDirOpt, DatasetOpt, JsonOpt, SeedOpt, SizeOpt, compute_options, dataset_from_model, user_errors)
from .protect import PassOpt, protect_group, protect_options, run_protect

if TYPE_CHECKING:
    from ..protections.base import Protection

ModelReq = Annotated[Path, typer.Option("--model", "-m", help="The trained modelproof model file to fingerprint.")]
OutDir = Annotated[Path, typer.Option("--out", "-o", help="Folder for the key (key.mpkey).")]
PointsOpt = Annotated[int, typer.Option("--points", "-n", help="Number of fingerprint points.")]
InitOpt = Annotated[str, typer.Option("--init", help="TR, TL, RR or RL: training (T) or uniform random (R) start; "
                                      "random (R) or least-likely (L) target label.")]
NullOpt = Annotated[float | None, typer.Option("--null-match-prob", help="Chance that an independent model matches "
                                               "a key label (default: the method's conservative value; calibrate "
                                               "it with `modelproof calibrate`).")]
LrOpt = Annotated[float | None, typer.Option("--lr", help="Adam learning rate (default: per dataset, the paper's "
                                             "where it gives one).")]
MaxIterOpt = Annotated[int, typer.Option("--max-iter", help="Most optimisation steps per point.")]


def _run(protection: Protection, model: Path, dataset: str, data_dir: Path | None, size: int | None, out: Path,
         passphrase: str | None, seed: int, json_out: bool) -> None:
    run_protect(protection, model=model, arch=None, dataset=dataset, data_dir=data_dir, size=size, out=out,
                passphrase=passphrase, seed=seed, json_out=json_out)


@user_errors
@dataset_from_model
@compute_options
@protect_options
def ipguard_cmd(model: ModelReq, dataset: DatasetOpt = None, data_dir: DataDirOpt = None, size: SizeOpt = None,
                k: Annotated[float | None, typer.Option("--k", help="Logit gap beyond the boundary (robustness vs "
                                                        "uniqueness; default 3, 1 under key selection).")] = None,
                init: InitOpt = "TL", points: PointsOpt = 100, lr: LrOpt = None, max_iter: MaxIterOpt = 1000,
                per_point: Annotated[bool, typer.Option("--per-point", help="Optimise one point at a time "
                                                        "(slow; for timing) instead of all in one batch.")] = False,
                null_match_prob: NullOpt = None, out: OutDir = Path("runs/ipguard"), passphrase: PassOpt = None,
                seed: SeedOpt = 0, json_out: JsonOpt = False) -> None:
    """IPGuard: fingerprint a model by points near its classification boundary (the model is not changed)."""
    from ..protections.fingerprints.ipguard import IPGuard  # torch only once the command runs

    protection = IPGuard(points=points, k=k, init=init, lr=lr, max_iter=max_iter, batched=not per_point,
                         null_match_prob=null_match_prob)
    _run(protection, model, dataset, data_dir, size, out, passphrase, seed, json_out)


@user_errors
@dataset_from_model
@compute_options
@protect_options
def random_cmd(model: ModelReq, dataset: DatasetOpt = None, data_dir: DataDirOpt = None, size: SizeOpt = None,
               points: PointsOpt = 100, null_match_prob: NullOpt = None, out: OutDir = Path("runs/random-fingerprint"),
               passphrase: PassOpt = None, seed: SeedOpt = 0, json_out: JsonOpt = False) -> None:
    """IPGuard's Random baseline: uniform random points labelled by the model."""
    from ..protections.fingerprints.baselines import RandomFingerprint  # torch only once the command runs

    _run(RandomFingerprint(points=points, null_match_prob=null_match_prob), model, dataset, data_dir, size, out,
         passphrase, seed, json_out)


EpsOpt = Annotated[float, typer.Option("--eps", help="L-infinity noise bound.")]


@user_errors
@dataset_from_model
@compute_options
@protect_options
def fgsm_cmd(model: ModelReq, dataset: DatasetOpt = None, data_dir: DataDirOpt = None, size: SizeOpt = None,
             eps: EpsOpt = 0.1, init: InitOpt = "TL", points: PointsOpt = 100, null_match_prob: NullOpt = None,
             out: OutDir = Path("runs/fgsm-fingerprint"), passphrase: PassOpt = None, seed: SeedOpt = 0,
             json_out: JsonOpt = False) -> None:
    """IPGuard's FGSM baseline: one targeted signed-gradient step of size eps."""
    from ..protections.fingerprints.baselines import FGSMFingerprint  # torch only once the command runs

    _run(FGSMFingerprint(points=points, eps=eps, init=init, null_match_prob=null_match_prob), model, dataset,
         data_dir, size, out, passphrase, seed, json_out)


@user_errors
@dataset_from_model
@compute_options
@protect_options
def igsm_cmd(model: ModelReq, dataset: DatasetOpt = None, data_dir: DataDirOpt = None, size: SizeOpt = None,
             eps: EpsOpt = 0.1, init: InitOpt = "TL", points: PointsOpt = 100, max_iter: MaxIterOpt = 1000,
             null_match_prob: NullOpt = None, out: OutDir = Path("runs/igsm-fingerprint"), passphrase: PassOpt = None,
             seed: SeedOpt = 0, json_out: JsonOpt = False) -> None:
    """IPGuard's IGSM baseline: targeted steps of 1/255 within an eps ball until the target label.

    Interrupted, the same command goes on from the candidates it kept in OUT.resume/."""
    from ..protections.fingerprints.baselines import IGSMFingerprint  # torch only once the command runs

    _run(IGSMFingerprint(points=points, eps=eps, init=init, max_iter=max_iter, null_match_prob=null_match_prob),
         model, dataset, data_dir, size, out, passphrase, seed, json_out)


@user_errors
@dataset_from_model
@compute_options
@protect_options
def cw_cmd(model: ModelReq, dataset: DatasetOpt = None, data_dir: DataDirOpt = None, size: SizeOpt = None,
           k: Annotated[float, typer.Option("--k", help="Confidence: logit margin of the target label.")] = 3.0,
           init: InitOpt = "TL", points: PointsOpt = 100, lr: LrOpt = None, max_iter: MaxIterOpt = 1000,
           binary_steps: Annotated[int, typer.Option("--binary-steps", help="Binary-search steps over c.")] = 9,
           null_match_prob: NullOpt = None, out: OutDir = Path("runs/cw-l2-fingerprint"), passphrase: PassOpt = None,
           seed: SeedOpt = 0, json_out: JsonOpt = False) -> None:
    """IPGuard's CW-L2 baseline: smallest-L2 targeted examples with confidence k (slow).

    Interrupted, the same command goes on from the candidates it kept in OUT.resume/."""
    from ..protections.fingerprints.baselines import CWL2Fingerprint  # torch only once the command runs

    protection = CWL2Fingerprint(points=points, k=k, init=init, lr=lr, binary_steps=binary_steps,
                                 max_iter=max_iter, null_match_prob=null_match_prob)
    _run(protection, model, dataset, data_dir, size, out, passphrase, seed, json_out)


def register(app: typer.Typer) -> None:
    """Add ``ipguard`` and the four baselines to the ``protect`` group."""
    group = protect_group()
    for name, fn, short in (
            ("ipguard", ipguard_cmd, "Fingerprint: points near the model's class boundary, model unchanged (Cao et al.)"),
            ("random-fingerprint", random_cmd, "Fingerprint baseline: uniform random points with the model's labels"),
            ("fgsm-fingerprint", fgsm_cmd, "Fingerprint baseline: one targeted FGSM step from each start"),
            ("igsm-fingerprint", igsm_cmd, "Fingerprint baseline: targeted 1/255 steps until the label flips"),
            ("cw-l2-fingerprint", cw_cmd, "Fingerprint baseline: smallest-L2 Carlini-Wagner targeted points (slow)")):
        group.command(name, short_help=short)(fn)
