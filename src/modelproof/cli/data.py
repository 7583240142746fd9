"""``modelproof data info`` (what a dataset holds and how it splits) and ``data download``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .common import DataDirOpt, DatasetOpt, JsonOpt, SeedOpt, SizeOpt, dataset_from_model, emit, user_errors


@user_errors
@dataset_from_model
def info(dataset: DatasetOpt = None, data_dir: DataDirOpt = None, size: SizeOpt = None,
         seed: SeedOpt = 0, json_out: JsonOpt = False) -> None:
    """Show a dataset's size, image shape, classes and its owner/attacker/test split."""
    from ..data.splits import load_splits

    splits = load_splits(dataset, data_dir, size=size, seed=seed)
    parts = {"owner": splits.owner, "attacker": splits.attacker, "test": splits.test}
    result = {
        "dataset": dataset, "input_shape": list(splits.input_shape), "num_classes": splits.num_classes,
        "class_names": list(splits.owner.class_names),
        "splits": {k: {"images": len(v), "class_counts": v.class_counts()} for k, v in parts.items()},
    }
    folder = "bundled with modelproof (scikit-learn's digits)" if dataset == "digits" else str(data_dir)
    result["folder"] = folder
    lines = [f"dataset      {dataset}", f"folder       {folder}", f"input shape  {tuple(splits.input_shape)} (C, H, W), float32 in [0, 1]",
             f"classes      {splits.num_classes}: {', '.join(splits.owner.class_names)}"]
    lines += [f"{k:<12} {len(v)} images" for k, v in parts.items()]
    emit(result, json_out, lines)


@user_errors
def download(name: Annotated[str, typer.Argument(help="mnist, fashion-mnist or cifar10.")],
             root: Annotated[Path, typer.Argument(help="Folder to download into (the files go to ROOT/NAME).")],
             mirror: Annotated[str | None, typer.Option(help="Base URL of a mirror holding the same files.")] = None,
             timeout: Annotated[float, typer.Option(help="Seconds to wait for the server.")] = 60.0,
             json_out: JsonOpt = False) -> None:
    """Download a dataset's published files, checksum-verified, written atomically."""
    from ..data.download import download_dataset

    folder = download_dataset(name, root, mirror=mirror, timeout=timeout)
    emit({"dataset": name, "folder": str(folder)}, json_out,
         [f"{name} is in {folder}", f"use it with: --dataset {name} --data-dir {folder}"
          f"  (or export MODELPROOF_DATA={Path(root)})"])


def register(app: typer.Typer) -> None:
    """Add the ``data`` command group."""
    group = typer.Typer(no_args_is_help=True, help="Inspect and download datasets.")
    group.command("info")(info)
    group.command("download")(download)
    app.add_typer(group, name="data")
