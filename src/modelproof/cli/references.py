"""``modelproof references build|add``: the reference population keys are selected and calibrated against."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .common import DataDirOpt, JsonOpt, QuietOpt, SeedOpt, SizeOpt, compute_options, emit, user_errors


@user_errors
@compute_options
def build(dataset: Annotated[str, typer.Option("--dataset", "-d", help="digits (bundled), mnist, fashion-mnist, "
                                               "cifar10, ... (the owner split of it is trained on).")] = "digits",
          arch: Annotated[list[str] | None, typer.Option("--arch", "-a", help="An owner architecture: 8 selection "
                                                         "references of it are added (repeat).")] = None,
          count: Annotated[int, typer.Option("--count", "-n", help="Calibration references (and as many selection "
                                             "references).")] = 24,
          out: Annotated[Path | None, typer.Option("--out", "-o", help="Population folder (default: the cache folder "
                                                   "`protect` uses for this dataset and split).")] = None,
          data_dir: DataDirOpt = None, size: SizeOpt = None, seed: SeedOpt = 0, json_out: JsonOpt = False,
          quiet: QuietOpt = False) -> None:
    """Train a reference population once (resumable: models already in the folder are kept)."""
    from ..references.build import build_for_dataset
    from .common import data_folder

    result = build_for_dataset(dataset, data_dir=data_folder(dataset, data_dir), size=size, seed=seed, out=out,
                               archs=tuple(arch or ()), calibration=count, selection=count, quiet=quiet or json_out)
    roles = "; ".join(f"{role}: " + ", ".join(f"{n} {k}" for k, n in sorted(kinds.items()))
                      for role, kinds in sorted(result["roles"].items()))
    div = result["diversity"]
    lines = [f"{result['members']} reference models in {result['folder']} ({len(result['trained'])} trained now in "
             f"{result['seconds']:.1f} s)", roles]
    if div.get("agreement_mean") is not None:
        lines.append(f"pairwise agreement on {div['images']} test images: mean {div['agreement_mean']:.3f}, "
                     f"min {div['agreement_min']:.3f}, max {div['agreement_max']:.3f}")
    emit(result, json_out, lines)


@user_errors
def add(folder: Annotated[Path, typer.Argument(help="The population folder.")],
        models: Annotated[list[Path], typer.Argument(help="Your own .safetensors model files or .onnx files.")],
        role: Annotated[str, typer.Option("--role", help="selection or calibration.")] = "calibration",
        json_out: JsonOpt = False, quiet: QuietOpt = False) -> None:
    """Add models of your own (e.g. public pretrained models of your field) to a population."""
    from ..references.store import add_models

    added = add_models(folder, list(models), role=role)
    emit({"added": added}, json_out, [f"added {a['name']} ({a['kind']}, {a['role']}, digest {a['digest'][:12]})"
                                      for a in added])


def register(app: typer.Typer) -> None:
    """Add the ``references`` command group."""
    group = typer.Typer(no_args_is_help=True, help="Build and extend reference populations (independent models "
                        "that keys are selected against and calibrated on).")
    group.command("build")(build)
    group.command("add")(add)
    app.add_typer(group, name="references")
