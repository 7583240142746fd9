"""The survival matrix: which protection survives which attack, at which accuracy, in one table.

One matrix per dataset and host: a row per protection, a column per attack (the config's labels, in its
order), each cell the payoff outcome of :mod:`.payoff` (survived, removed, implausible, weak key, failed;
"owned" for the unattacked model; "not run" for a cell the cache does not hold yet) as a symbol, and the
attacked model's test accuracy in percent. :func:`to_markdown` writes it as a Markdown table (what
``modelproof experiment table`` prints, and what the README and the docs tables are made from);
``report.html`` shows the same matrix. :func:`load_results` reads a run's ``results.json`` or
``results.csv``.
"""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path

from ..util.errors import ConfigError
from .payoff import BROKEN, FAILED, MIXED, NO_KEY, NOT_RUN, REMOVED, SURVIVED, WEAK, payoff_cells

OWNED = "owned"  # the unattacked model, owned
SYMBOLS = {OWNED: "owned", SURVIVED: "✓", REMOVED: "✗", MIXED: "±", BROKEN: "⊘", WEAK: "weak", FAILED: "failed",
           NO_KEY: "no key", NOT_RUN: "·"}
LEGEND = ("✓ survived (still owned), ✗ removed (not owned, accuracy plausible), ± removed in some seeds only, "
          "⊘ not owned but only at an implausible accuracy, weak: the key does not prove even the unattacked "
          "model, no key: protect refused to make one, failed: the job failed, · not run; the number is the attacked model's test accuracy in % "
          "(unattacked: the protected model's)")


@dataclass(frozen=True)
class SurvivalCell:
    """One protection x attack cell: its outcome, symbol, mean attacked accuracy and its drop (points)."""

    outcome: str
    symbol: str
    accuracy: float | None
    drop: float | None  # protected model's accuracy minus the attacked model's, in [0, 1] units

    def text(self) -> str:
        """The cell as printed: symbol and accuracy in percent (``✓ 97.9``), or the symbol alone."""
        return self.symbol if self.accuracy is None else f"{self.symbol} {100 * self.accuracy:.1f}"


@dataclass(frozen=True)
class SurvivalMatrix:
    """The survival matrix of one dataset and host."""

    title: str
    protections: list[str]
    attacks: list[str]
    cells: dict[tuple[str, str], SurvivalCell]
    host_accuracy: float | None
    # why cells read "failed" or "no key": protection -> [(outcome, error, cells)], each error once
    notes: dict[str, list[tuple[str, str, int]]] = field(default_factory=dict)

    def survives(self, protection: str) -> tuple[int, int]:
        """(attacks survived, attacks with a scored outcome) of ``protection``, the unattacked column aside."""
        scored = [self.cells[(protection, a)] for a in self.attacks if a != "none" and (protection, a) in self.cells
                  and self.cells[(protection, a)].outcome in (SURVIVED, REMOVED, MIXED, BROKEN)]
        return sum(c.outcome in (SURVIVED, BROKEN) for c in scored), len(scored)

    def only(self, patterns: list[str] | None) -> SurvivalMatrix:
        """The matrix with the attack columns that match one of the glob ``patterns`` (all when None)."""
        if not patterns:
            return self
        attacks = [a for a in self.attacks if any(fnmatchcase(a, p) for p in patterns)]
        if not attacks:
            raise ConfigError(f"--attack {' '.join(patterns)} matches no attack; the attacks are: "
                              f"{', '.join(self.attacks)}")
        return SurvivalMatrix(self.title, self.protections, attacks, self.cells, self.host_accuracy, self.notes)

    def note_lines(self) -> list[str]:
        """One line per protection and reason its cells failed or have no key (a failed protect's error
        is every cell's), e.g. ``blind: failed (34 cells): needs a failed protect: ConfigError: ...``."""
        return [f"{p}: {SYMBOLS[outcome]} ({n} cell{'s' if n != 1 else ''}): {error}"
                for p in self.protections for outcome, error, n in self.notes.get(p, [])]


def survival_matrices(rows: list[dict]) -> list[SurvivalMatrix]:
    """One :class:`SurvivalMatrix` per dataset and host of ``rows`` (a run's results), in row order."""
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for r in rows:
        groups[(r["dataset"], r["host"])].append(r)
    out = []
    for (dataset, host), group in groups.items():
        before: dict[tuple[str, str], list[float]] = defaultdict(list)
        for r in group:
            if r["role"] == "positive" and r.get("accuracy_before") is not None and r.get("status") == "ok":
                before[(r["protection"], r["attack_label"])].append(float(r["accuracy_before"]))
        cells = {}
        for c in payoff_cells(group):
            outcome = OWNED if c.attack == "none" and c.outcome == SURVIVED else c.outcome
            ref = before.get((c.protection, c.attack))
            drop = None if c.accuracy_after is None or not ref else sum(ref) / len(ref) - c.accuracy_after
            cells[(c.protection, c.attack)] = SurvivalCell(outcome, SYMBOLS[outcome], c.accuracy_after, drop)
        hosts = [float(r["accuracy_host"]) for r in group if r.get("accuracy_host") is not None]
        out.append(SurvivalMatrix(f"{dataset} / {host}", list(dict.fromkeys(r["protection"] for r in group)),
                                  list(dict.fromkeys(r["attack_label"] for r in group if r["role"] == "positive")),
                                  cells, sum(hosts) / len(hosts) if hosts else None, _notes(group)))
    return out


def _notes(rows: list[dict]) -> dict[str, list[tuple[str, str, int]]]:
    """Per protection, each distinct error of its failed or no-key positive rows, with how many cells gave it."""
    counts: dict[str, dict[tuple[str, str], int]] = defaultdict(lambda: defaultdict(int))
    for r in rows:
        status, error = r.get("status"), r.get("error")
        outcome = NO_KEY if status == "refused" else None if status == "ok" or error == "not run" else FAILED
        if r["role"] == "positive" and outcome:
            counts[r["protection"]][(outcome, str(r.get("error") or "no error recorded"))] += 1
    return {p: [(o, e, n) for (o, e), n in found.items()] for p, found in counts.items()}


def _header(label: str) -> str:
    return "unattacked" if label == "none" else label.replace("|", "/")


def to_markdown(matrix: SurvivalMatrix, *, transpose: bool = False) -> str:
    """``matrix`` as a Markdown table (protections as rows; attacks as rows with ``transpose``) and its legend."""
    empty = SurvivalCell(NOT_RUN, SYMBOLS[NOT_RUN], None, None)
    survives = {p: matrix.survives(p) for p in matrix.protections}
    if transpose:
        head = ["attack", *matrix.protections]
        body = [[_header(a), *(matrix.cells.get((p, a), empty).text() for p in matrix.protections)]
                for a in matrix.attacks]
        body.append(["survives", *(f"{s}/{n}" for s, n in survives.values())])
    else:
        head = ["protection", *map(_header, matrix.attacks), "survives"]
        body = [[p, *(matrix.cells.get((p, a), empty).text() for a in matrix.attacks), f"{s}/{n}"]
                for p, (s, n) in survives.items()]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(row) + " |" for row in body]
    host = "" if matrix.host_accuracy is None else f"; the unprotected host: {100 * matrix.host_accuracy:.1f}"
    notes = [f"- {line}" for line in matrix.note_lines()]
    return "\n".join([*lines, "", f"{matrix.title}: {LEGEND}{host}. survives: attacks survived (⊘ counts as "
                                  "survived) of those scored.", *(["", "Why cells failed or have no key:", "", *notes]
                                                                  if notes else [])])


_NUMBERS = {"p_value", "match_rate", "key_accuracy", "null_match_prob", "accuracy_host", "accuracy_before",
            "accuracy_after", "protect_seconds", "attack_seconds", "verify_seconds", "fpr", "fnr", "strength"}
_INTEGERS = {"seed", "matches", "queries", "key_size", "attack_queries"}


def _typed(column: str, value: str) -> object:
    """A results.csv field as the JSON table holds it (empty: None)."""
    if value == "":
        return None
    if column == "plausible":
        return value == "True"
    if column in _INTEGERS:
        return int(float(value))
    if column in _NUMBERS:
        return float(value)
    return value


def load_results(path: str | Path) -> list[dict]:
    """The rows of a run: ``path`` is its folder (``results.json``, else ``results.csv``) or either file."""
    path = Path(path)
    if path.is_dir():
        path = path / "results.json" if (path / "results.json").is_file() else path / "results.csv"
    if not path.is_file():
        raise ConfigError(f"{path} not found: give an experiment's output folder, results.json or results.csv")
    try:
        if path.suffix == ".csv":
            with path.open(newline="", encoding="utf-8") as f:
                rows = [{k: _typed(k, v) for k, v in r.items()} for r in csv.DictReader(f)]
        else:
            rows = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path} is not an experiment's results table ({exc})") from None
    needed = {"dataset", "host", "protection", "attack_label", "role", "status"}
    if not isinstance(rows, list) or any(not isinstance(r, dict) or needed - set(r) for r in rows):
        raise ConfigError(f"{path} is not an experiment's results table (each row needs {', '.join(sorted(needed))})")
    return rows
