"""``modelproof attack list`` and ``modelproof attack NAME --model M --dataset D --out M2``.

``attack`` is a command group: ``list`` plus one command per registered attack. Each attack command
loads the model file, takes the attacker split of the dataset (with the split seed recorded in the
model file, so the attacker never holds the owner's images), runs the attack, prints the test
accuracy before and after, the change, the cost and plausibility, and writes the attacked model
(a model file, or ONNX for ``--out *.onnx``; see ``attacks.saving``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from ..util.errors import ConfigError
from ..util.files import check_output
from .forge import add_forgery_commands
from .common import (
    DataDirOpt, DatasetOpt, ForceOpt, JsonOpt, cite, short_help, SizeOpt, compute_options, dataset_from_model, emit, user_errors)
from .tables import ATTACK_HELP

if TYPE_CHECKING:
    from ..attacks import Attack

QUERY_ATTACKS = ("extract", "knockoff", "transfer-learning")  # their ``source`` may be another dataset
ModelOpt = Annotated[Path, typer.Option("--model", "-m", help="The modelproof .safetensors model file to attack.")]
OutOpt = Annotated[Path, typer.Option("--out", "-o", help="Where to write the attacked model (.safetensors or .onnx).")]
ParamOpt = Annotated[list[str] | None, typer.Option("--param", "-p", help="Attack parameter key=value (repeatable).")]
AttackSeedOpt = Annotated[int, typer.Option("--seed", help="Seed of the attack's randomness.")]
MaxDropOpt = Annotated[float, typer.Option("--max-drop", help="Plausible if test accuracy drops by at most this.")]
MinAccOpt = Annotated[float | None, typer.Option("--min-accuracy", help="Also require this absolute test accuracy.")]
QueryDataOpt = Annotated[str | None, typer.Option("--query-dataset", help="extract, knockoff: query images from "
                                                  "this dataset (train split); transfer-learning: pretrain on it.")]
QueryDirOpt = Annotated[Path | None, typer.Option("--query-data-dir", help="Folder of --query-dataset "
                                                                           "(default: --data-dir).")]


@user_errors
def list_attacks(json_out: JsonOpt = False) -> None:
    """List the attacks and forgeries: name, one-line description and parameters with defaults."""
    from ..attacks import describe_attacks
    from ..attacks.forgery import describe_forgeries

    table, forgeries = describe_attacks(), describe_forgeries()
    width = max(len(entry["name"]) for entry in table + forgeries)
    lines: list[str] = []
    for entry in table + forgeries:
        lines.append(f"{entry['name']:<{width}} {entry['description']}")
        for p in entry["params"]:
            lines.append(f"    {p['name']}={p['default']!s:<10} ({p['kind']}) {p['help']}")
    emit({"attacks": table, "forgeries": forgeries}, json_out, lines)


def check_out(name: str, attack: Attack, out: Path) -> None:
    """Refuse, before any work, an output the attack's model could not be written to."""
    from ..attacks import Chain
    from ..attacks.saving import output_suffixes

    suffix = out.suffix.lower()
    if suffix not in (".safetensors", ".onnx"):
        raise ConfigError(f"--out {out}: must end in .safetensors (a model file) or .onnx")
    if out.is_dir():
        raise ConfigError(f"--out {out} is a folder; name the model file to write")
    allowed = output_suffixes(attack)
    if suffix in allowed:
        return
    if not allowed:
        steps = attack.steps if isinstance(attack, Chain) else (attack,)
        hint = "; use --param mode=weights for a savable int8 model" if any(s.name == "quantize" for s in steps) \
            else "; no file format holds both"
        raise ConfigError(f"the {name} attack's model cannot be stored in a model file or ONNX{hint}")
    if allowed == (".onnx",):
        raise ConfigError(f"the {name} attack's model has layers no zoo record describes; write it as ONNX "
                          f"(--out {out.with_suffix('.onnx')})")
    raise ConfigError(f"the {name} attack's model (a model behind a filter or transform) cannot be exported to "
                      f"ONNX; write it as a model file (--out {out.with_suffix('.safetensors')})")


def _attack_command(name: str):
    """The CLI command running attack ``name``."""

    @user_errors
    @dataset_from_model
    @compute_options
    def command(model: ModelOpt, out: OutOpt, dataset: DatasetOpt = None, data_dir: DataDirOpt = None,
                size: SizeOpt = None, param: ParamOpt = None, seed: AttackSeedOpt = 0,
                max_drop: MaxDropOpt = 0.03, min_accuracy: MinAccOpt = None,
                query_dataset: QueryDataOpt = None, query_data_dir: QueryDirOpt = None,
                json_out: JsonOpt = False, force: ForceOpt = False) -> None:
        from ..attacks import Plausibility, make_attack, parse_params, run_attack  # torch only once it runs
        from ..attacks.saving import save_attacked
        from ..data.splits import load_dataset, load_splits
        from ..models.modelfile import load_model

        check_output(out, inputs=(model,), force=force)
        params = parse_params(name, param or [])
        if query_dataset is not None:
            if name not in QUERY_ATTACKS:
                raise ConfigError(f"--query-dataset is for the {', '.join(QUERY_ATTACKS)} attacks, not {name!r}")
            params["source"] = load_dataset(query_dataset, query_data_dir or data_dir, split="train")
        attack = make_attack(name, **params)
        check_out(name, attack, out)
        plausibility = Plausibility(max_drop=max_drop, min_accuracy=min_accuracy)
        net = load_model(model)
        extra = dict(net.record.extra)
        split_seed = int(extra.get("split_seed", 0))
        shape = tuple(net.input_shape)
        size = size or extra.get("size") or shape[-1]
        splits = load_splits(dataset, data_dir, size=size, seed=split_seed)
        result = run_attack(attack, net, splits, seed=seed, plausibility=plausibility)
        save_extra = {"split_seed": split_seed, "size": size, "attack": name, "attack_params": result.params,
                      **({"structurally_pruned": True} if result.details.get("structurally_pruned") else {})}
        written = save_attacked(result.model, out, attack=name, dataset=dataset, extra=save_extra)
        summary = {**result.to_dict(), "model": str(model), "dataset": dataset, "out": str(written),
                   "attacker_images": len(splits.attacker), "test_images": len(splits.test)}
        emit(summary, json_out, [
            f"{name} on {model.name} with {len(splits.attacker)} attacker images of {dataset}",
            f"test accuracy {result.accuracy_before:.4f} -> {result.accuracy_after:.4f} "
            f"(change {result.change:+.4f}) on {len(splits.test)} images",
            *([f"rate=auto chose rate {result.details['rate']:.4g}"
               + ("" if result.details.get("found_within_bound", True) else " (no rate kept the accuracy bound)")]
              if result.details.get("auto") else []),
            f"cost {result.seconds:.1f} s, {result.queries} victim queries",
            f"plausible: {'yes' if result.plausible else 'no'} ({result.rule})",
            f"wrote {written}"])

    command.__doc__ = ATTACK_HELP[name]
    return command


def register(app: typer.Typer) -> None:
    """Add the ``attack`` command group: ``list`` and one command per attack."""
    group = typer.Typer(no_args_is_help=True, help="Run removal attacks on a model file, or forge a key "
                                                        "for it (see `attack list`).")
    group.command("list")(list_attacks)
    for name, description in ATTACK_HELP.items():  # the registry's attacks, from a table without torch
        if name == "pirate":  # its own options (--tau, --surrogate-fraction): cli/attack_pirate.py
            from .attack_pirate import pirate_command

            group.command(name, help=cite(description), short_help=short_help(description))(pirate_command)
            continue
        group.command(name, help=cite(description), short_help=short_help(description))(_attack_command(name))
    add_forgery_commands(group)
    app.add_typer(group, name="attack")
