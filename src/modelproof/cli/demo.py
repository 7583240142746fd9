"""``modelproof demo``: the end-to-end story on the bundled digits."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .common import JsonOpt, QuietOpt, SeedOpt, compute_options, emit, user_errors


@user_errors
@compute_options
def demo(out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the demo's files.")] = Path("runs/demo"),
         seed: SeedOpt = 0, json_out: JsonOpt = False, quiet: QuietOpt = False) -> None:
    """Run the demo on the bundled digits and print what it did."""
    import torch

    from ..experiments.demo import run_demo

    result = run_demo(out, seed=seed, quiet=quiet, log=(lambda s: None) if json_out else typer.echo,
                      threads=torch.get_num_threads())  # as --threads set it
    emit(result, json_out, [])


def register(app: typer.Typer) -> None:
    """Add ``demo``."""
    app.command("demo")(demo)
