"""``modelproof data info``: what a dataset holds and how it splits."""

from __future__ import annotations

import typer

from ..data import load_splits
from .common import DataDirOpt, DatasetOpt, JsonOpt, SeedOpt, SizeOpt, dataset_from_model, emit, user_errors


@user_errors
@dataset_from_model
def info(dataset: DatasetOpt = None, data_dir: DataDirOpt = None, size: SizeOpt = None,
         seed: SeedOpt = 0, json_out: JsonOpt = False) -> None:
    """Show a dataset's size, image shape, classes and its owner/attacker/test split."""
    splits = load_splits(dataset, data_dir, size=size, seed=seed)
    parts = {"owner": splits.owner, "attacker": splits.attacker, "test": splits.test}
    result = {
        "dataset": dataset, "input_shape": list(splits.input_shape), "num_classes": splits.num_classes,
        "class_names": list(splits.owner.class_names),
        "splits": {k: {"images": len(v), "class_counts": v.class_counts()} for k, v in parts.items()},
    }
    lines = [f"dataset      {dataset}", f"input shape  {tuple(splits.input_shape)} (C, H, W), float32 in [0, 1]",
             f"classes      {splits.num_classes}: {', '.join(splits.owner.class_names)}"]
    lines += [f"{k:<12} {len(v)} images" for k, v in parts.items()]
    emit(result, json_out, lines)


def register(app: typer.Typer) -> None:
    """Add the ``data`` command group."""
    group = typer.Typer(no_args_is_help=True, help="Inspect datasets.")
    group.command("info")(info)
    app.add_typer(group, name="data")
