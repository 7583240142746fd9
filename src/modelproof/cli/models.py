"""``modelproof models``: the zoo's architectures, the input sizes they accept and their parameter counts."""

from __future__ import annotations

from typing import Annotated

import typer

from .common import JsonOpt, emit, user_errors


@user_errors
def models_cmd(classes: Annotated[int, typer.Option("--classes", help="Classes of the head counted.")] = 10,
               channels: Annotated[int, typer.Option("--channels", help="Input channels counted (1 grey, 3 colour).")] = 1,
               json_out: JsonOpt = False) -> None:
    """List the architectures for --arch: smallest input side, parameters (at the smallest side), description."""
    from ..models import ARCHITECTURES, build_model, describe
    from ..models.registry import min_side

    rows = []
    for name in ARCHITECTURES:
        side = max(min_side(name), 8)
        model = build_model(name, classes, (channels, side, side), seed=0)
        params = sum(p.numel() for p in model.parameters())
        rows.append({"name": name, "min_side": min_side(name), "counted_at": [channels, side, side],
                     "parameters": params, "description": describe(name)})
    lines = [f"{'name':<16} {'min side':>8} {'parameters':>12}  description (parameters for {classes} classes, "
             f"{channels} channel(s), at the smallest side, >= 8)"]
    lines += [f"{r['name']:<16} {r['min_side']:>8} {r['parameters']:>12,}  {r['description']}" for r in rows]
    lines.append("Inputs of any square side >= min side are accepted; the MLP's parameters grow with the side.")
    emit({"models": rows}, json_out, lines)


def register(app: typer.Typer) -> None:
    """Add ``models``."""
    app.command("models")(models_cmd)
