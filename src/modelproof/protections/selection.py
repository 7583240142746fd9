"""Reference-aware key selection: the judges a protection chooses its key against.

A protection draws more key candidates than it needs and keeps those its protected model answers
with the key label and no *selection* reference does (Lukas et al., ICLR 2021, choose fingerprints
against independent models; IrisFP, CVPR 2026, calibrates on a different set). The references
that judge the candidates are never used to calibrate the key's null: the population records which
models selected which key, and calibration refuses them (``modelproof.references``).

:class:`Selection` is what the pipeline hands to ``Protection.protect``: the judges (each a Suspect
answering labels, with its weight digest and, when it is a local torch model, the module for
gradient-based methods) and the oversampling factor (None: the method's measured default).

:meth:`Selection.choose` is the loop every protection shares: draw ``oversample`` times the key
inputs still needed, keep the candidates the protected model answers with the key label and no
judge does, and draw again while too few survive (each draw at least a quarter of ``oversample``
x the key, repeated inputs dropped). How long it goes on is decided by the *measured* yield, not by
a fixed factor: after every draw the search projects the candidates still needed from the survivors
so far (optimistically: the one-sided 99% Clopper-Pearson upper bound on the yield) and goes on while
that projection fits the candidate budget, :data:`MAX_CANDIDATES` per key input (or
:data:`MAX_ROUNDS` x ``oversample`` where that is larger). A draw is sized to what the point
estimate of the yield says is missing, at most as many candidates as were tried before it. The
search refuses as soon as the projection exceeds the budget, so a hopeless one stops after a few
draws instead of spending the budget; KeyRefused (a ConfigError) then says how many survived, the
measured yield, and what would help. A method whose key may hold fewer inputs than asked (``partial``:
calibration and the self-check judge what a smaller key proves) spends the budget instead and keeps
what survived, refusing only when nothing did. The key records :meth:`Selection.record` (rule, candidates
tried and kept, the judges' digests), never the secret.

Optionally, *surrogates* (:func:`make_surrogates`: a fine-tuned and a pruned copy of the owner's
model) must agree: a fingerprint then keeps only points they still answer with the owner's label,
so that the key survives what a thief would do first. Watermarks choose their key before the
model learns it, so there is nothing for a surrogate of the unmarked model to agree with.
"""

from __future__ import annotations

from collections.abc import Callable
import copy
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..data.splits import Dataset
from ..keys.nulls import clopper_pearson_upper
from ..models.training import TrainConfig, fit
from ..suspects.local import TorchSuspect
from ..util.errors import ConfigError, KeyRefused

MAX_ROUNDS = 4  # the budget is at least MAX_ROUNDS x oversample x the key candidates (the former fixed cap)
# The candidate budget per key input. Measured: FGSM on the MNIST Keras CNN keeps 1 candidate in 312
# against the 24 default judges (42 of 13,088), so the former cap of 4 x 32 x the key (12,800 for 100
# points) refused it; --oversample 128 wrote a key that passed the self-check (docs/methods/key-selection.md).
# 512 per input covers a yield down to about 1 in 400 at the 99% upper bound, and bounds the worst search
# at 51,200 candidates for a 100-point key (about 6 minutes for FGSM on that CNN on one core).
MAX_CANDIDATES = 512
YIELD_CONFIDENCE = 0.99  # the projection uses this one-sided upper bound on the yield (optimistic: refuse late)

# What one draw returns: per-candidate tensors (first dimension = candidates) with at least
# "inputs" and "labels" (the key labels), optionally "own" (bool: the protected model answers the
# key label; absent means it does) and anything else to carry along for the kept ones.
Draw = Callable[[int, int], dict]


@dataclass(frozen=True)
class Judge:
    """One selection reference: a name for reports, its weight digest (None when unknown), a suspect
    with ``predict(images) -> labels`` and, for local torch models, the module itself."""

    name: str
    digest: str | None
    suspect: object
    model: nn.Module | None = field(default=None, repr=False, compare=False)

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        return torch.as_tensor(self.suspect.predict(images)).long().cpu()


@dataclass(frozen=True)
class Selection:
    """The judges a key is chosen against and how many candidates to draw per key input."""

    judges: tuple[Judge, ...]
    oversample: int | None = None
    # Copies of the owner's model that must AGREE with a fingerprint key label (see make_surrogates).
    surrogates: tuple[Judge, ...] = ()
    # What calibration and the self-check will decide, for a protection that can foresee it: given reference
    # match counts on an n-input key and the self-check's alpha, (the null they bound, whether a model matching
    # all n inputs proves itself against it at that alpha). Set by the references layer
    # (references.advice.full_match_proves); None: unknown.
    provable: Callable[[list[int], int, float], tuple[float, bool]] | None = field(default=None, repr=False,
                                                                                   compare=False)
    alpha: float = 0.01  # the self-check's level (protect's --verify-alpha)
    # A folder where a protection keeps what it derives from the judges alone (new-label's other owners'
    # models), so that later keys on the same population and data reuse it; None keeps nothing.
    store: Path | None = None

    def __post_init__(self) -> None:
        if not self.judges:
            raise ConfigError("key selection needs at least one selection reference")
        if self.oversample is not None and (isinstance(self.oversample, bool) or int(self.oversample) < 1):
            raise ConfigError(f"--oversample must be an integer of at least 1, got {self.oversample!r}")

    def answers(self, inputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """How many judges answer each input with its label: an int64 tensor of shape (N,)."""
        labels = torch.as_tensor(labels).long().cpu()
        if inputs.shape[0] != labels.shape[0]:
            raise ValueError(f"{inputs.shape[0]} inputs but {labels.shape[0]} labels")
        count = torch.zeros(labels.shape[0], dtype=torch.long)
        for judge in self.judges:
            count += (judge.predict(inputs) == labels).long()
        return count

    def unanswered(self, inputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """A boolean mask: True where no judge answers the input with its label."""
        return self.answers(inputs, labels) == 0

    def factor(self, default: int) -> int:
        """The oversampling factor: the one given, else the method's measured ``default``."""
        return int(self.oversample) if self.oversample is not None else int(default)

    def record(self, rule: str, tried: int, kept: int, **extra: object) -> dict:
        """What a key records of its selection: the rule, candidates tried and kept, the judges' digests
        (and ``extra`` entries such as the oversampling factor)."""
        return {"rule": rule, "tried": int(tried), "kept": int(kept),
                "references": [j.digest for j in self.judges if j.digest is not None], **extra}

    def agreed(self, inputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """A boolean mask: True where every surrogate answers the input with its label (True without any)."""
        ok = torch.ones(inputs.shape[0], dtype=torch.bool)
        for surrogate in self.surrogates:
            ok &= surrogate.predict(inputs) == torch.as_tensor(labels).long().cpu()
        return ok

    def choose(self, method: str, need: int, draw: Draw, *, default_oversample: int, rule: str,
               hint: str = "", max_rounds: int = MAX_ROUNDS, use_surrogates: bool = False,
               prefer: str | None = None, per_input: int = MAX_CANDIDATES,
               partial: bool = False) -> tuple[dict, dict]:
        """Draw candidates with ``draw(round, count)`` until ``need`` survive (see the module docstring).

        Returns (the first ``need`` survivors in draw order, or those with the largest per-candidate
        value ``prefer`` first, as per-candidate tensors as ``draw`` gave them; the selection record).
        A draw may return fewer candidates than asked (the data ran out); one that returns none ends
        the search. Raises KeyRefused when the measured yield projects that ``need`` survivors cannot
        be found within :func:`budget` candidates (``per_input`` per key input), or when the budget is
        spent. With ``partial`` (a key whose size the calibration and the self-check judge, such as a
        conferrable fingerprint), the projection does not stop the search, which spends its budget and
        returns the survivors it found when there are fewer than ``need`` but at least one.
        """
        factor = self.factor(default_oversample)
        limit = budget(need, factor, max_rounds, per_input)
        kept: list[dict] = []
        seen: set[bytes] = set()
        have = tried = rounds = 0
        projected = None
        while have < need and tried < limit:
            rounds += 1
            count = max(factor * (need - have), -(-factor * need // 4))
            if tried:  # what the measured yield says is missing, with a tenth to spare, at most doubling what
                # was tried (a yield measured on a few survivors is noisy: FGSM on the MNIST CNN kept 8 of 3,200,
                # and a draw sized on 1 in 400 alone overshot to 42,000 candidates where 1 in 250 needed 25,000)
                missing = -(-11 * (need - have) * tried // (10 * have)) if have else tried
                count = max(count, min(missing, tried))
            got = draw(rounds - 1, min(count, limit - tried))
            count = int(got["inputs"].shape[0])
            if count == 0:
                break
            tried += count
            ok = self.unanswered(got["inputs"], got["labels"]) & fresh(got["inputs"], seen)
            if "own" in got:
                ok &= torch.as_tensor(got["own"]).bool().cpu()
            if use_surrogates and self.surrogates:
                ok &= self.agreed(got["inputs"], got["labels"])
            kept.append({name: value[ok] for name, value in got.items()})
            have += int(ok.sum())
            seen.update(row.numpy().tobytes() for row in got["inputs"][ok].flatten(1))
            projected = projected_candidates(have, tried, need)
            if have < need and projected > limit and not partial:
                break  # even the optimistic yield cannot fill the key within the budget: refuse now
        if have < need and not (partial and have):
            seen_yield = f"1 in {tried / have:,.0f}" if have else "none"
            if projected is None or projected <= limit:
                why = "the candidates ran out"  # a draw returned none
            else:  # (a spent budget lands here too: the projection is then above what was tried)
                why = (f"filling the key would take about {projected:,.0f} candidates even at the optimistic "
                       f"{YIELD_CONFIDENCE:.0%} bound on the yield, over the budget of {limit:,}")
            raise KeyRefused(
                f"{method}: only {have} of {tried:,} candidates survived key selection against {len(self.judges)} "
                f"selection reference(s) ({rule}) in {rounds} draw(s), but the key needs {need}: measured yield "
                f"{seen_yield}; {why} ({budget(1, factor, max_rounds, per_input)} per key input); raise --oversample "
                f"(now {factor}) above {-(-limit // (max_rounds * need))}, lower the key size"
                + (f", or {hint}" if hint else ""))
        chosen = ranked({name: torch.cat([part[name] for part in kept]) for name in kept[0]}, prefer, need)
        extra = {"surrogates": len(self.surrogates)} if use_surrogates and self.surrogates else {}
        return chosen, self.record(rule, tried, have, oversample=factor, rounds=rounds, budget=limit, **extra)


def ranked(candidates: dict, prefer: str | None, need: int) -> dict:
    """The first ``need`` of ``candidates`` (per-candidate tensors), those with the largest value ``prefer``
    first when it is given, ties in draw order."""
    if prefer is not None:
        order = torch.sort(candidates[prefer], descending=True, stable=True).indices
        candidates = {name: value[order] for name, value in candidates.items()}
    return {name: value[:need] for name, value in candidates.items()}


def budget(need: int, factor: int, max_rounds: int = MAX_ROUNDS, per_input: int = MAX_CANDIDATES) -> int:
    """The most candidates a search for ``need`` key inputs may try: ``per_input`` per input (by default
    :data:`MAX_CANDIDATES`), or ``max_rounds`` x the oversampling ``factor`` per input where that is larger
    (an explicit --oversample)."""
    return int(need) * max(int(per_input), int(max_rounds) * int(factor))


def projected_candidates(have: int, tried: int, need: int, confidence: float = YIELD_CONFIDENCE) -> float:
    """Candidates a search needs in all to find ``need`` survivors, having found ``have`` in ``tried``: the
    ones tried plus the missing ones divided by the one-sided ``confidence`` upper bound on the yield
    (Clopper-Pearson; optimistic, so that a search is not refused on a few unlucky draws)."""
    if have >= need:
        return float(tried)
    upper = clopper_pearson_upper(int(have), int(tried), confidence)
    return tried + (need - have) / upper if upper > 0 else float("inf")


def left_out(selection: Selection, inputs: torch.Tensor, labels: torch.Tensor,
             minimum: int = 20) -> list[tuple[str, int, int]]:
    """Each judge in turn as a model that did not select: (name, matches, points) on the candidates the
    *other* judges leave to ``labels`` (none of them answers the label), for judges with at least
    ``minimum`` such candidates (fewer give no rate worth the name).

    A leave-one-out (jackknife) view of calibration before any search: a key selected against the
    other judges would be matched by the left-out one at about ``matches / points``, as a fresh
    calibration reference would match the key selected against all of them (slightly pessimistic:
    one judge fewer selects)."""
    labels = torch.as_tensor(labels).long().cpu()
    answered = torch.stack([judge.predict(inputs) == labels for judge in selection.judges])  # judges x inputs
    count = answered.sum(0)
    out = []
    for judge, row in zip(selection.judges, answered):
        others = count - row.long() == 0
        if int(others.sum()) >= minimum:
            out.append((judge.name, int((row & others).sum()), int(others.sum())))
    return out


def fresh(inputs: torch.Tensor, seen: set[bytes]) -> torch.Tensor:
    """A boolean mask: True for the first occurrence of each input not already in ``seen`` (raw bytes),
    so that no key holds one input twice (repeats would count as independent trials)."""
    mask, here = torch.zeros(inputs.shape[0], dtype=torch.bool), set()
    for n, row in enumerate(inputs.detach().cpu().contiguous().flatten(1)):
        raw = row.numpy().tobytes()
        if raw not in seen and raw not in here:
            mask[n] = True
            here.add(raw)
    return mask


def make_surrogates(model: nn.Module, data: Dataset, *, seed: int = 0, epochs: int = 2, lr: float = 1e-3,
                    prune: float = 0.3) -> tuple[Judge, ...]:
    """Two copies of the owner's ``model`` standing for what a thief might do to it: one fine-tuned on
    ``data`` (all layers, ``epochs`` at ``lr``), one with the ``prune`` share of each weight matrix of
    smallest magnitude set to zero. A fingerprint chosen with them as :attr:`Selection.surrogates`
    keeps only points both still answer with the owner's label. ``model`` is not changed."""
    if not 0.0 <= prune < 1.0:
        raise ConfigError(f"prune must be a share in [0, 1), got {prune!r}")
    tuned = copy.deepcopy(model)
    fit(tuned, data, TrainConfig(epochs=epochs, lr=lr), seed=seed)
    tuned.eval()
    pruned = copy.deepcopy(model).eval()
    with torch.no_grad():
        for param in pruned.parameters():
            if param.dim() > 1 and param.numel() > 1:
                cut = param.abs().flatten().kthvalue(max(1, int(prune * param.numel()))).values
                param[param.abs() <= cut] = 0.0
    return (Judge("surrogate: fine-tuned", None, TorchSuspect(tuned), tuned),
            Judge(f"surrogate: {prune:.0%} pruned", None, TorchSuspect(pruned), pruned))
