"""Reading an experiment config: the TOML sections, each checked with a one-line error naming the bad key.

:func:`load_config` and :func:`parse_config` turn the file described in :mod:`modelproof.experiments.config`
into an :class:`~modelproof.experiments.config.ExperimentConfig`.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from ..util.errors import ConfigError
from .config import (
    DATASET_KEYS, HOST_KEYS, SECTIONS, UNATTACKED, ExperimentConfig, Item, Negative, registered_attacks)


def _table(where: str, value: object) -> dict:
    if not isinstance(value, dict):
        raise ConfigError(f"{where} must be a table, got {type(value).__name__}")
    return value


def _tables(raw: dict, key: str, required: bool = True) -> list[dict]:
    value = raw.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise ConfigError(f"{key} must be an array of tables ([[{key}]])")
    if required and not value:
        raise ConfigError(f"{key}: at least one [[{key}]] entry is needed")
    return value


def _unknown(where: str, table: dict, allowed: set[str]) -> None:
    extra = sorted(set(table) - allowed)
    if extra:
        raise ConfigError(f"{where}.{extra[0]}: unknown key; expected one of {', '.join(sorted(allowed))}")


def _typed(where: str, value: object, kind: type | tuple[type, ...], what: str) -> Any:
    if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
        raise ConfigError(f"{where} must be {what}, got {value!r}")
    if not isinstance(value, kind):
        raise ConfigError(f"{where} must be {what}, got {value!r}")
    return value


def _prefixed(where: str, fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    except TypeError as exc:  # an unexpected keyword for a constructor
        raise ConfigError(f"{where}: {exc}") from None


def _dataset(where: str, table: dict, base: Path | None) -> dict:
    from ..data.splits import DATASETS

    _unknown(where, table, DATASET_KEYS)
    name = _typed(f"{where}.name", table.get("name", "digits"), str, "a dataset name")
    if name not in DATASETS:
        raise ConfigError(f"{where}.name: unknown dataset {name!r}; expected one of {', '.join(DATASETS)}")
    out = {"name": name, "data_dir": table.get("data_dir"), "size": table.get("size"),
           "attacker_fraction": table.get("attacker_fraction", 0.3),
           "test_fraction": table.get("test_fraction", 0.2), "split_seed": table.get("split_seed", 0),
           "owner_images": table.get("owner_images"), "attacker_images": table.get("attacker_images")}
    if out["data_dir"] is not None:
        _typed(f"{where}.data_dir", out["data_dir"], str, "a folder path")
        if base is not None and not Path(out["data_dir"]).is_absolute():  # relative to the config file
            out["data_dir"] = str((base / out["data_dir"]).resolve())
    for key in ("size", "owner_images", "attacker_images"):
        if out[key] is not None and (_typed(f"{where}.{key}", out[key], int, "a positive integer") < 1):
            raise ConfigError(f"{where}.{key} must be a positive integer, got {out[key]!r}")
    _typed(f"{where}.split_seed", out["split_seed"], int, "an integer")
    for key in ("attacker_fraction", "test_fraction"):
        if not 0.0 < _typed(f"{where}.{key}", out[key], float, "a number in (0, 1)") < 1.0:
            raise ConfigError(f"{where}.{key} must lie in (0, 1), got {out[key]!r}")
    return out


def _host(where: str, table: dict) -> dict:
    from ..models import ARCHITECTURES
    from ..models.training import TrainConfig

    _unknown(where, table, HOST_KEYS)
    arch = _typed(f"{where}.arch", table.get("arch", "mlp"), str, "an architecture name")
    if arch not in ARCHITECTURES:
        raise ConfigError(f"{where}.arch: unknown architecture {arch!r}; expected one of {', '.join(ARCHITECTURES)}")
    train = {k: v for k, v in table.items() if k not in ("arch", "label")}
    _prefixed(where, TrainConfig, **train)
    return {"arch": arch, "label": str(table.get("label", arch)), "train": train}


def _relative_source(params: dict, base: Path) -> dict:
    """An attack's ``source = "DATASET:DIR"`` with a relative DIR read from the config file's folder."""
    source = params.get("source")
    if isinstance(source, str) and ":" in source:
        name, _, root = source.partition(":")
        if root and not Path(root).is_absolute():
            return {**params, "source": f"{name}:{(base / root).resolve()}"}
    return params


def _items(kind: str, tables: list[dict], base: Path | None = None) -> list[Item]:
    registry = _registered_protections() if kind == "protections" else registered_attacks()
    named = []
    for i, table in enumerate(tables):
        where = f"{kind}[{i}]"
        _unknown(where, table, {"name", "label", "params"} | ({"sweep"} if kind == "attacks" else set()))
        name = _typed(f"{where}.name", table.get("name"), str, "a registered name")
        if name not in ("all", UNATTACKED):
            name = _attack_name(f"{where}.name", name) if kind == "attacks" else name
            if name not in registry:
                raise ConfigError(f"{where}.name: unknown {kind[:-1]} {name!r}; expected one of "
                                  f"{', '.join(sorted(registry))}, all")
        elif name == UNATTACKED and kind != "attacks":
            raise ConfigError(f"{where}.name: 'none' is only an attack (the unattacked model)")
        named.append(name)
    out: list[Item] = []
    for i, table in enumerate(tables):
        where, name = f"{kind}[{i}]", named[i]
        params = dict(_table(f"{where}.params", table.get("params", {})))
        if kind == "attacks" and base is not None:
            params = _relative_source(params, base)
        if name == "all":
            for other in registry:  # a protection may stay out of "all" (in_all False: too slow for a grid)
                if other not in named and getattr(registry[other], "in_all", True):
                    defaults = dict(getattr(registry[other], "demo_params", {}) or {}) if kind == "protections" else {}
                    defaults.pop("secret", None)
                    out.append(_checked(kind, f"{where} ({other})", Item(other, other, {**defaults, **params})))
            continue
        sweep = _table(f"{where}.sweep", table.get("sweep", {}))
        if len(sweep) > 1:
            raise ConfigError(f"{where}.sweep: sweep one parameter at a time, got {', '.join(sweep)}")
        label = str(table.get("label", name))
        if not sweep:
            out.append(_checked(kind, where, Item(name, label, params)))
            continue
        (param, values), = sweep.items()
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{where}.sweep.{param} must be a non-empty list of values")
        for value in values:
            strength = (param, float(value)) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
            out.append(_checked(kind, where,
                                Item(name, f"{label} {param}={value:g}" if strength else f"{label} {param}={value}",
                                     {**params, param: value}, strength)))
    labels = [item.label for item in out]
    dupes = sorted({x for x in labels if labels.count(x) > 1})
    if dupes:
        raise ConfigError(f"{kind}: label {dupes[0]!r} appears twice; give each entry its own label")
    return out


def _checked(kind: str, where: str, item: Item) -> Item:
    """Build the protection or attack once so that a bad parameter fails now, naming its entry."""
    if item.name == UNATTACKED:
        if item.params:
            raise ConfigError(f"{where}.params: the 'none' attack takes no parameters")
        return item
    if kind == "attacks":
        from ..attacks import make_attack
        from ..attacks.forgery import FORGERIES, make_forgery

        _prefixed(f"{where}.params", make_forgery if item.name in FORGERIES else make_attack, item.name, **item.params)
    else:
        from ..protections.base import make_protection

        if "secret" in item.params:
            raise ConfigError(f"{where}.params.secret: set experiment.secret instead (each key's secret is derived)")
        _prefixed(f"{where}.params", make_protection, item.name, **item.params)
    return item


def _negatives(tables: list[dict]) -> list[Negative]:
    from ..models import ARCHITECTURES

    out = []
    for i, table in enumerate(tables):
        where = f"negatives[{i}]"
        _unknown(where, table, {"arch", "seed", "trees"})
        arch = _typed(f"{where}.arch", table.get("arch", "same"), str, "'same', 'forest' or an architecture")
        if arch not in ("same", "forest") and arch not in ARCHITECTURES:
            raise ConfigError(f"{where}.arch: unknown architecture {arch!r}; expected same, forest or one of "
                              f"{', '.join(ARCHITECTURES)}")
        seed = _typed(f"{where}.seed", table.get("seed", i + 1), int, "an integer")
        trees = _typed(f"{where}.trees", table.get("trees", 20), int, "a positive integer")
        if trees < 1:
            raise ConfigError(f"{where}.trees must be a positive integer, got {trees}")
        out.append(Negative(arch, seed, trees))
    return out


def _verification(table: dict) -> dict:
    from ..verification.verifier import MODES

    _unknown("verification", table, {"alpha", "mode", "budget", "batch_size"})
    out = {"alpha": table.get("alpha", 0.01), "mode": table.get("mode", "fixed"), "budget": table.get("budget"),
           "batch_size": table.get("batch_size", 10)}
    alpha = _typed("verification.alpha", out["alpha"], (int, float), "a number in (0, 1)")
    if not 0 < alpha < 1:
        raise ConfigError(f"verification.alpha must be a number in (0, 1), got {alpha!r}")
    if out["mode"] not in MODES:
        raise ConfigError(f"verification.mode must be one of {', '.join(MODES)}, got {out['mode']!r}")
    for key in ("budget", "batch_size"):
        if out[key] is not None and _typed(f"verification.{key}", out[key], int, "a positive integer") < 1:
            raise ConfigError(f"verification.{key} must be a positive integer, got {out[key]!r}")
    return out


def _plausibility(table: dict) -> dict:
    from ..attacks import Plausibility

    _unknown("plausibility", table, {"max_drop", "min_accuracy"})
    out = {"max_drop": table.get("max_drop", 0.03 if "min_accuracy" not in table else None),
           "min_accuracy": table.get("min_accuracy")}
    _prefixed("plausibility", Plausibility, **out)
    return out


def parse_config(text: str, source: str = "config", base: Path | None = None) -> ExperimentConfig:
    """Validate the TOML ``text`` into an :class:`ExperimentConfig`; ConfigError naming the bad key.

    Relative ``data_dir`` paths are taken relative to ``base`` (the config file's folder)."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML ({exc})") from None
    _unknown("config", raw, SECTIONS)
    exp = _table("experiment", raw.get("experiment", {}))
    _unknown("experiment", exp, {"name", "seeds", "secret", "threads"})
    seeds = exp.get("seeds", [0])
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and not isinstance(s, bool)
                                                             and s >= 0 for s in seeds) or len(set(seeds)) < len(seeds):
        raise ConfigError(f"experiment.seeds must be a non-empty list of distinct non-negative integers, got {seeds!r}")
    threads = _typed("experiment.threads", exp.get("threads", 1), int, "a positive integer")
    if threads < 1:
        raise ConfigError(f"experiment.threads must be a positive integer, got {threads}")
    hosts = [_host(f"hosts[{i}]", t) for i, t in enumerate(_tables(raw, "hosts"))]
    if len({h["label"] for h in hosts}) < len(hosts):
        raise ConfigError("hosts: two hosts share a label; give each its own label")
    report = _table("report", raw.get("report", {}))
    _unknown("report", report, {"show_keys"})
    return ExperimentConfig(
        name=str(_typed("experiment.name", exp.get("name", Path(source).stem), str, "a string")),
        seeds=tuple(seeds), secret=str(_typed("experiment.secret", exp.get("secret", "modelproof-experiment"), str,
                                              "a string")), threads=threads,
        datasets=tuple(_dataset(f"datasets[{i}]", t, base) for i, t in enumerate(_tables(raw, "datasets"))),
        hosts=tuple(hosts), protections=tuple(_items("protections", _tables(raw, "protections"))),
        attacks=tuple(_items("attacks", _tables(raw, "attacks"), base)),
        negatives=tuple(_negatives(_tables(raw, "negatives", required=False))),
        verification=_verification(_table("verification", raw.get("verification", {}))),
        plausibility=_plausibility(_table("plausibility", raw.get("plausibility", {}))),
        show_keys=bool(_typed("report.show_keys", report.get("show_keys", True), bool, "true or false")),
        source=text)


def load_config(path: str | Path) -> ExperimentConfig:
    """Read and validate the experiment config at ``path``."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"experiment config not found: {path}")
    return parse_config(path.read_text(encoding="utf-8"), str(path), path.resolve().parent)


def _registered_protections() -> dict[str, type]:
    from ..protections.base import PROTECTIONS, discover_protections

    discover_protections()
    return PROTECTIONS


def _attack_name(where: str, name: str) -> str:
    """The registered spelling of an attack or forgery name (case-insensitive, ``_`` read as ``-``)."""
    registry = registered_attacks()
    key = name.strip().lower().replace("_", "-")
    if key not in registry:
        raise ConfigError(f"{where}: unknown attack {name!r}; expected one of {', '.join(registry)}, all")
    return key
