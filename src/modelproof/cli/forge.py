"""``modelproof attack forge-NAME --model M | --suspect S [--intercepted FILE] --out forged.mpkey``.

One command per registered forgery (``attacks.forgery.FORGERIES``), added to the ``attack`` group.
The counterfeiter's images are the attacker split of the dataset (split with the seed recorded in
the model file, as the removal attacks do). White-box forgeries need ``--model`` (a copy);
the others also take ``--suspect`` (an ONNX file or an HTTP endpoint). ``--intercepted`` is an
``.npz`` of intercepted query images (``x``: float in [0,1] NCHW, or uint8 NHWC) or a key file of
which only the first ``--intercepted-count`` inputs are read (never its labels). The forged key is
written like any key and checked with ``modelproof verify``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from ..util.errors import ConfigError
from .common import DataDirOpt, DatasetOpt, JsonOpt, SizeOpt, cite, compute_options, emit, short_help, user_errors
from .tables import FORGERY_HELP

if TYPE_CHECKING:
    import torch


def load_intercepted(path: Path, count: int | None = None) -> torch.Tensor:
    """Intercepted key inputs (images only) from an ``.npz`` (``x``) or the inputs of a key file."""
    import numpy as np
    import torch

    if not path.is_file():
        raise ConfigError(f"intercepted inputs file not found: {path}")
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as archive:
            if "x" not in archive:
                raise ConfigError(f"{path}: an .npz of intercepted inputs needs an array 'x'")
            x = archive["x"]
        images = (torch.from_numpy(x.astype(np.float32) / 255.0).permute(0, 3, 1, 2) if x.dtype == np.uint8
                  else torch.from_numpy(x.astype(np.float32)))
    else:
        from ..keys.container import load_key

        images = load_key(path).inputs
    if images.dim() != 4:
        raise ConfigError(f"{path}: intercepted inputs must be a batch of images, got shape {tuple(images.shape)}")
    return images[:count] if count is not None else images


def _forge_command(name: str):
    """The CLI command running forgery ``name``."""
    description, access = FORGERY_HELP[name]

    @user_errors
    @compute_options
    def command(out: Annotated[Path, typer.Option("--out", "-o", help="Where to write the forged key (.mpkey).")],
                model: Annotated[Path | None, typer.Option("--model", "-m", help="A copy of the model "
                                                           "(.safetensors).")] = None,
                suspect: Annotated[str | None, typer.Option("--suspect", "-s", help="Black box: an .onnx file or "
                                                            "http(s) endpoint (not for white-box forgeries).")] = None,
                intercepted: Annotated[Path | None, typer.Option("--intercepted", help="Intercepted key inputs: "
                                                                 ".npz with x, or a key file (inputs only).")] = None,
                intercepted_count: Annotated[int | None, typer.Option("--intercepted-count", help="Use only the "
                                                                      "first N intercepted inputs.")] = None,
                dataset: DatasetOpt = "digits", data_dir: DataDirOpt = None, size: SizeOpt = None,
                param: Annotated[list[str] | None, typer.Option("--param", "-p", help="key=value (repeatable).")] = None,
                seed: Annotated[int, typer.Option("--seed", help="The counterfeiter's seed.")] = 0,
                json_out: JsonOpt = False) -> None:
        from ..attacks.forgery import FORGERIES, make_forgery  # torch only once the command runs
        from ..attacks.registry import parse_pairs
        from ..data.splits import load_splits
        from ..keys.container import save_key
        from ..models.modelfile import load_model
        from ..suspects.local import open_suspect

        if (model is None) == (suspect is None):
            raise ConfigError("give exactly one of --model (a copy of the model) or --suspect (a black box)")
        cls = FORGERIES[name]
        if access == "white-box" and model is None:
            raise ConfigError(f"{name} needs white-box access: give --model (a copy of the model)")
        if access == "intercepted" and intercepted is None:
            raise ConfigError(f"{name} needs --intercepted (key inputs seen on the wire)")
        forgery = make_forgery(name, **parse_pairs(cls.PARAMS, f"forgery {name!r}", param or []))
        target = load_model(model) if model is not None else open_suspect(suspect)
        extra = dict(target.record.extra) if model is not None else {}
        shape = tuple(target.input_shape)
        splits = load_splits(dataset, data_dir, size=size or extra.get("size") or shape[-1],
                             seed=int(extra.get("split_seed", 0)))
        seen = load_intercepted(intercepted, intercepted_count) if intercepted is not None else None
        outcome = forgery.perform(target, splits.attacker, seen, seed=seed)
        save_key(outcome.key, out)
        emit({"forgery": name, "access": cls.access, "out": str(out), "key_size": len(outcome.key),
              "queries": outcome.queries, "seconds": outcome.seconds, "null_match_prob": outcome.key.null_match_prob,
              "details": outcome.details}, json_out,
             [f"{name} ({cls.access}) with {len(splits.attacker)} attacker images of {dataset}",
              f"forged key of {len(outcome.key)} inputs, null {outcome.key.null_match_prob:.4g}; "
              f"cost {outcome.seconds:.2f} s, {outcome.queries} queries",
              f"wrote {out} (check it with `modelproof verify --key {out} --suspect ...`)"])

    command.__doc__ = description
    return command


def add_forgery_commands(group: typer.Typer) -> None:
    """Add one ``forge-NAME`` command per registered forgery (from the table without torch) to the ``attack`` group."""
    for name, (description, access) in FORGERY_HELP.items():
        group.command(name, help=cite(f"{description} [{access}]"),
                      short_help=short_help(description))(_forge_command(name))
