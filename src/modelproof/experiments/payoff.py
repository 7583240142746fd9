"""The payoff table (as in the SoK of Lukas et al., S&P 2022) and per-protection figures, from rows.

An attack *succeeds* on a protection when the attacked model is plausible (the config's rule) and
the verdict is not "owned"; a forgery succeeds when its forged key verifies "owned" against the
protected model (a false claim upheld; the model is unchanged, so always plausible). A key whose
unattacked protected model is not owned is *weak*: a removal or evasion attack on it proves nothing
and is no success ("weak key" in its row's ``outcome``, its cell and the summaries). Per protection x
attack: successes over the seeds whose key is not weak, mean attacked accuracy, the largest p-value. Per protection: the attacks it survives (no seed succeeded), false claims
over its negatives (each key and negative counted once, not once per cell), fidelity (mean test
accuracy lost by protecting), ROC AUC and TPR at FPR <= 1% of the match rate over plausible
positive suspects vs negatives (scikit-learn), embedding cost (seconds) and queries to decide
(mean over verifications of the unattacked and attacked models; forged keys are not the owner's,
so forgery rows count in neither the ROC nor the queries). Per attack: the protections it
removes (or, for a forgery, lets it claim).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from statistics import mean

REMOVED, SURVIVED, MIXED, BROKEN, FAILED = "removed", "survived", "mixed", "implausible", "failed"
WEAK = "weak"  # the unattacked protected model is not owned: its key is weak, no attack's success
NO_KEY = "refused"  # protect could make no key (too few candidates survived selection): nothing to attack
NOT_RUN = "not run"  # no result in the cache yet (a run written with ``cached_only``): neither failed nor scored


@dataclass
class PayoffCell:
    """One protection x attack entry, over seeds."""

    protection: str
    attack: str
    seeds: int
    successes: int
    owned: int
    plausible: int
    accuracy_after: float | None
    p_value_max: float | None
    outcome: str
    kind: str = "removal"  # the attack's kind: removal, evasion or forgery
    weak: int = 0  # seeds whose key is weak (not owned unattacked): neither a success nor a survival


def cell_words(cell: PayoffCell) -> tuple[str, str]:
    """(headline, sentence) of a payoff cell, in words: what happened in how many seeds."""
    n, k = cell.seeds, cell.successes
    if cell.outcome == NOT_RUN:
        return "not run", "not in the cache yet: run the grid to fill it"
    if cell.outcome == FAILED:
        return "failed", f"no result in {n} seed{'s' if n != 1 else ''}"
    if cell.outcome == NO_KEY:
        return "no key", f"protect refused to make a key in {n} seed{'s' if n != 1 else ''}"
    if cell.outcome == WEAK:
        return "weak key", f"not owned in {cell.weak} of {n} seeds without any attack" + (
            "" if cell.attack == "none" else "; the attack is no success on a weak key")
    if cell.weak:
        headline, sentence = cell_words(PayoffCell(**{**cell.__dict__, "seeds": n - cell.weak, "weak": 0}))
        return headline, f"{sentence}; weak key in {cell.weak} of {n} seeds (not counted)"
    if cell.attack == "none":
        return "owned", f"owned in {cell.owned} of {n} seeds"
    if cell.kind == "forgery":
        return ("forged" if k else "forgery failed"), f"false claim upheld in {k} of {n} seeds"
    headline = {REMOVED: "removed", SURVIVED: "survived", MIXED: "removed in some seeds",
                BROKEN: "implausible only"}[cell.outcome]
    if cell.outcome == BROKEN:
        return headline, f"not owned only where the model became implausible; owned in {cell.owned} of {n}"
    return headline, f"removed in {k} of {n} seeds, owned in {cell.owned} of {n}"


@dataclass
class ProtectionSummary:
    """The per-protection columns of the payoff table."""

    protection: str
    kind: str
    survived: list[str]
    removed_by: list[str]
    false_claims: int
    negatives: int
    fidelity: float | None
    auc: float | None
    tpr_at_1: float | None
    embed_seconds: float | None
    queries: float | None
    key_size: int | None
    roc: tuple[list[float], list[float]] | None = field(default=None, repr=False)


def _ok(rows: list[dict]) -> list[dict]:
    return [r for r in rows if r.get("status") == "ok"]


def _key(row: dict) -> tuple:
    """The key a row is verified with: one per protect job (its protection, dataset, host and seed)."""
    return (row["protection"], row["dataset"], row["host"], row["seed"], row.get("key_hash"))


def weak_keys(rows: list[dict]) -> set[tuple]:
    """The keys whose unattacked protected model is not owned (see :func:`_key`)."""
    return {_key(r) for r in _ok(rows) if r["role"] == "positive" and r["attack_label"] == "none"
            and r["decision"] != "owned"}


def on_weak_key(row: dict, weak: set[tuple]) -> bool:
    """Whether a positive row is an unattacked weak key, or a removal or evasion attack on one (a forgery
    is scored on its own: its forged key, not the owner's, is what is verified)."""
    return row.get("attack_kind") != "forgery" and _key(row) in weak


def succeeded(row: dict, weak: set[tuple] = frozenset()) -> bool:
    """Whether the attack of a positive row succeeded (see the module docstring); never on a weak key."""
    if row.get("attack_kind") == "forgery":
        return row["decision"] == "owned"
    return bool(row["plausible"]) and row["decision"] != "owned" and _key(row) not in weak


def row_outcome(row: dict, weak: set[tuple]) -> str | None:
    """A positive row's outcome in words (the ``outcome`` column): owned, survived, removed, implausible,
    weak key, no key, forged, forgery failed or failed; None for a negative row."""
    if row["role"] != "positive":
        return None
    if row.get("status") == "refused":
        return "no key"
    if row.get("status") != "ok":
        return NOT_RUN if row.get("error") == "not run" else FAILED
    if on_weak_key(row, weak):
        return "weak key"
    if row.get("attack_kind") == "forgery":
        return "forged" if row["decision"] == "owned" else "forgery failed"
    if row["decision"] == "owned":
        return "owned" if row["attack_label"] == "none" else SURVIVED
    return REMOVED if row["plausible"] else BROKEN


def with_outcomes(rows: list[dict]) -> list[dict]:
    """``rows`` with each one's ``outcome`` (:func:`row_outcome`) set."""
    weak = weak_keys(rows)
    for r in rows:
        r["outcome"] = row_outcome(r, weak)
    return rows


def _outcome(n: int, successes: int, owned: int) -> str:
    if successes == n:
        return REMOVED
    if owned == n:
        return SURVIVED
    if successes == 0:
        return BROKEN  # not owned in some seed, but only by making the model implausible
    return MIXED


def payoff_cells(rows: list[dict]) -> list[PayoffCell]:
    """The protection x attack entries in row order (positive suspects only)."""
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for r in rows:
        if r["role"] == "positive":
            groups[(r["protection"], r["attack_label"])].append(r)
    weak = weak_keys(rows)
    out = []
    for (prot, attack), group in groups.items():
        ok = _ok(group)
        if not ok:
            refused = all(r.get("status") == "refused" for r in group)
            missing = all(r.get("error") == "not run" for r in group)
            out.append(PayoffCell(prot, attack, len(group), 0, 0, 0, None, None,
                                  NO_KEY if refused else NOT_RUN if missing else FAILED,
                                  group[0].get("attack_kind") or "removal"))
            continue
        scored = [r for r in ok if not on_weak_key(r, weak)]  # a weak key's seeds count for neither side
        successes = sum(succeeded(r, weak) for r in scored)
        owned = sum(r["decision"] == "owned" for r in scored) if ok[0].get("attack_kind") != "forgery" \
            else len(scored) - successes  # a forgery "survived": the owner alone holds a key the model answers
        outcome = WEAK if not scored or attack == "none" and len(scored) < len(ok) \
            else _outcome(len(scored), successes, owned)
        out.append(PayoffCell(prot, attack, len(ok), successes, owned, sum(bool(r["plausible"]) for r in ok),
                              mean(r["accuracy_after"] for r in ok), max(r["p_value"] for r in ok),
                              outcome, ok[0].get("attack_kind") or "removal", len(ok) - len(scored)))
    return out


def roc(positives: list[float], negatives: list[float]) -> tuple[float | None, float | None, tuple | None]:
    """ROC AUC, TPR at FPR <= 0.01, and the curve (fpr, tpr) of match rates; Nones without both classes."""
    if not positives or not negatives:
        return None, None, None
    from sklearn.metrics import roc_auc_score, roc_curve

    labels = [1] * len(positives) + [0] * len(negatives)
    scores = list(positives) + list(negatives)
    fpr, tpr, _ = roc_curve(labels, scores)
    tpr_at = max(float(t) for f, t in zip(fpr, tpr) if f <= 0.01 + 1e-12)
    return float(roc_auc_score(labels, scores)), tpr_at, ([float(x) for x in fpr], [float(x) for x in tpr])


def protection_summaries(rows: list[dict]) -> list[ProtectionSummary]:
    """One summary per protection, in row order."""
    cells = payoff_cells(rows)
    by_prot: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        by_prot[r["protection"]].append(r)
    out = []
    for prot, group in by_prot.items():
        pos = [r for r in _ok(group) if r["role"] == "positive" and r.get("attack_kind") != "forgery"]
        negs = {(r["dataset"], r["host"], r["seed"], r["suspect"]): r for r in _ok(group) if r["role"] == "negative"}
        mine = [c for c in cells if c.protection == prot and c.attack != "none"]
        plausible = [r["match_rate"] for r in pos if r["plausible"]]
        auc, tpr, curve = roc(plausible, [r["match_rate"] for r in negs.values()])
        keyed = {(r["dataset"], r["host"], r["seed"]): r for r in pos}
        out.append(ProtectionSummary(
            protection=prot, kind=next((r["protection_kind"] for r in group if r["protection_kind"]), ""),
            survived=[c.attack for c in mine if c.outcome not in (FAILED, WEAK, NO_KEY, NOT_RUN) and c.successes == 0],
            removed_by=[c.attack for c in mine if c.successes > 0],
            false_claims=sum(r["decision"] == "owned" for r in negs.values()), negatives=len(negs),
            fidelity=mean(r["accuracy_host"] - r["accuracy_before"] for r in keyed.values()) if keyed else None,
            auc=auc, tpr_at_1=tpr, embed_seconds=mean(r["protect_seconds"] for r in keyed.values()) if keyed else None,
            queries=mean(r["queries"] for r in pos) if pos else None,
            key_size=next((r["key_size"] for r in pos), None), roc=curve))
    return out


def attack_summaries(rows: list[dict]) -> dict[str, list[str]]:
    """For each attack, the protections it removes (succeeds on in at least one seed whose key is not weak)."""
    out: dict[str, list[str]] = defaultdict(list)
    for c in payoff_cells(rows):
        if c.attack != "none":
            out[c.attack]
            if c.successes:
                out[c.attack].append(c.protection)
    return dict(out)
