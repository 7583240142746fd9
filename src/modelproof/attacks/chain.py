"""Combined attacks: any registered attacks applied one after another (Lukas et al.'s SoK, §VI "combined").

The SoK found that no watermark survives every attack and that combinations remove them all; WRT's
``StackedAttack`` runs a list of attacks, each on the previous one's output (its CIFAR-10
configurations: transfer learning + Gaussian smoothing, weight shifting + smoothing, weight shifting +
fine-pruning + smoothing, adversarial training + RTAL). Here ``steps`` names them:

- a string, steps separated by ``;``, each a name followed by ``key=value`` parameters parsed by that
  attack's declared kinds: ``"weight-shifting epochs=5; smoothing filter=median"`` (the CLI form);
- or a list whose entries are such strings or tables ``{name = "...", params = {...}}`` (TOML).

Each step runs through its attack's own entry point on the previous step's model with the same
attacker data and seed; victim queries add up, and the details of every step are kept in order.
A preprocessing step wraps the model (later steps fine-tune through the wrapper); the evasion attack
``pirate`` may only come last, and chains do not nest. The default is WRT's ``combined_attack1``:
weight shifting, then Gaussian smoothing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from ..data.splits import Dataset
from ..util.errors import ConfigError
from .base import Attack, AttackLog, Param

DEFAULT_STEPS = "weight-shifting; smoothing"
_REGISTRY: dict[str, Callable[..., Any]] = {}  # filled by registry.py, which imports this module


def bind_registry(*, canonical_name: Callable[[object], str], make_attack: Callable[..., Attack],
                  parse_params: Callable[[str, list[str]], dict]) -> None:
    """Give chains the registry's name lookup (the registry imports this module, so not the reverse)."""
    _REGISTRY.update(canonical_name=canonical_name, make_attack=make_attack, parse_params=parse_params)


def parse_steps(steps: object) -> tuple[Attack, ...]:
    """``steps`` (a ``;``-separated string or a list of strings / tables) as the attacks they name, in order.

    A bad name or parameter fails here, naming the step.
    """
    if isinstance(steps, str):
        entries: list[Any] = [s for s in steps.split(";") if s.strip()]
    elif isinstance(steps, (list, tuple)):
        entries = list(steps)
    else:
        raise ConfigError(f"steps must be a ';'-separated string or a list of steps, got {steps!r}")
    if not entries:
        raise ConfigError("steps must name at least one attack")
    out: list[Attack] = []
    for i, entry in enumerate(entries):
        try:
            attack = _step(entry)
        except ConfigError as exc:
            raise ConfigError(f"steps[{i}]: {exc}") from None
        if attack.kind == "evasion" and i != len(entries) - 1:
            raise ConfigError(f"steps[{i}]: the evasion attack {attack.name!r} deploys the model behind a detector; "
                              "it can only be the last step")
        out.append(attack)
    return tuple(out)


def _step(entry: object) -> Attack:
    """The attack one step names: ``"name key=value ..."`` or ``{name = ..., params = {...}}``."""
    if isinstance(entry, str) and entry.split():
        name, *pairs = entry.split()
        name = _REGISTRY["canonical_name"](name)
        params = _REGISTRY["parse_params"](name, pairs)
    elif isinstance(entry, dict) and set(entry) <= {"name", "params"} and isinstance(entry.get("params", {}), dict):
        name, params = _REGISTRY["canonical_name"](entry.get("name")), dict(entry.get("params", {}))
    else:
        raise ConfigError(f"expected 'name key=value ...' or a table {{name = ..., params = {{...}}}}, got {entry!r}")
    if name == Chain.name:
        raise ConfigError("chains do not nest; list the attacks of the inner chain instead")
    try:
        return _REGISTRY["make_attack"](name, **params)
    except TypeError as exc:  # a parameter of the wrong type from a TOML table
        raise ConfigError(f"{name}: {exc}") from None


def chain_kind(steps: tuple[Attack, ...]) -> str:
    """"evasion" when the last step is, "preprocessing" when any step wraps the model, else "removal"."""
    kinds = [step.kind for step in steps]
    return "evasion" if kinds[-1] == "evasion" else "preprocessing" if "preprocessing" in kinds else "removal"


class Chain(Attack):
    """Registered attacks applied in order, each to the previous one's model."""

    name = "chain"
    description = "combined attack: registered attacks applied in order (default: weight-shifting; smoothing)"
    PARAMS = (Param("steps", "str", "attacks in order, ';'-separated, each 'name key=value ...'"),)

    def __init__(self, steps: str | list | tuple = DEFAULT_STEPS) -> None:
        self.steps = parse_steps(steps)
        self.kind = chain_kind(self.steps)  # type: ignore[misc]

    @classmethod
    def kind_of(cls, params: dict) -> str:
        """The kind of the chain these parameters build (the experiment grid reads it before running)."""
        return chain_kind(parse_steps(params.get("steps", DEFAULT_STEPS)))

    def get_params(self) -> dict[str, Any]:
        return {"steps": [{"name": s.name, "params": s.get_params()} for s in self.steps]}

    def _run(self, model: nn.Module, data: Dataset, seed: int, log: AttackLog) -> nn.Module:
        trace = []
        for i, step in enumerate(self.steps):
            outcome = step.perform(model, data, seed=seed)
            model = outcome.model
            log.queries += outcome.queries
            trace.append({"step": i, "attack": step.name, "queries": outcome.queries,
                          "seconds": round(outcome.seconds, 3), **outcome.details})
        log.details.update(chain=" -> ".join(s.name for s in self.steps), steps=trace)
        return model
