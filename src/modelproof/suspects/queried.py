"""The one wrapper that counts a suspect's queries, enforces a budget and keeps the query log.

Counting, the query budget and the query log live in :class:`QueriedSuspect` only; it checks every
input and every answer (:mod:`modelproof.suspects.base`), and replays a log to resume, but only after
the suspect has given the logged answers again on a secret random sample of the logged inputs.
"""

from __future__ import annotations

import math
import secrets
from pathlib import Path

import torch

from ..util.errors import ConfigError, SuspectError
from ..util.progress import report
from .base import BudgetExhausted, Suspect, check_images, check_labels, input_digests
from .querylog import QueryLog, now

RECHECK_MIN = 20          # replayed answers re-asked of the suspect before any is trusted ...
RECHECK_FRACTION = 0.05   # ... plus this fraction of the logged answers (never more than all of them)


def recheck_size(logged: int) -> int:
    """How many logged answers are re-asked on resume: ``min(logged, 20 + ceil(5% of logged))``."""
    return min(logged, RECHECK_MIN + math.ceil(RECHECK_FRACTION * logged))


class QueriedSuspect:
    """Wraps a suspect: checks queries and answers, counts queries, enforces a budget, keeps a query log.

    The log (``log_path``, :class:`~modelproof.suspects.querylog.QueryLog`: hash-chained JSON lines,
    locked while open) holds one record per answered query: time, the endpoint that answered
    (``suspect``), SHA-256 of the input's float32 bytes and the label (never the input: keys are secret).
    An input whose digest is already in the log is answered from it without asking again, so a killed
    run resumes where it stopped, but a logged answer counts only for the suspect that gave it: before
    the first replay, :meth:`confirm` re-asks a secret random sample (:func:`recheck_size`) of the logged
    inputs at hand and refuses the whole log on any disagreement (re-asks are logged as ``recheck``
    records and are not charged to the budget). ``budget`` bounds the queries sent to the suspect over
    the whole log (earlier runs included); a batch that would exceed it raises :class:`BudgetExhausted`
    before anything is asked. Batches go to the suspect in chunks of ``chunk_size``. ``queries`` counts
    queries answered by the suspect in this process, ``replayed`` those answered from the log,
    ``rechecked`` the re-asks. Each verification decision is appended too (``"type": "decision"``).

    A log is also bound to the model: ``model`` is the suspect's ``model_identity`` (an HTTP model's
    protocol, name and version: the same model on another host or port resumes) or else its
    ``identity``, and ``key`` is ``key_digest`` when given; a log of another model or key is refused.
    """

    def __init__(self, suspect: Suspect, *, budget: int | None = None, log_path: str | Path | None = None,
                 chunk_size: int | None = 256, key_digest: str | None = None) -> None:
        if budget is not None and (isinstance(budget, bool) or not isinstance(budget, int) or budget < 0):
            raise ConfigError(f"budget must be a non-negative integer or None, got {budget!r}")
        if chunk_size is not None and chunk_size < 1:
            raise ConfigError(f"chunk_size must be a positive integer or None, got {chunk_size!r}")
        self.suspect = suspect
        self.num_classes = int(suspect.num_classes)
        self.input_shape: tuple[int, int, int] = tuple(int(s) for s in suspect.input_shape)  # type: ignore[assignment]
        self.identity = str(suspect.identity)
        self.model_identity = str(getattr(suspect, "model_identity", None) or self.identity)
        self.key_digest = key_digest
        if self.num_classes < 1 or len(self.input_shape) != 3:
            raise ConfigError(f"suspect {self.identity}: bad num_classes {self.num_classes} or input_shape {self.input_shape}")
        self.budget, self.chunk_size = budget, chunk_size
        self.queries, self.replayed, self.rechecked = 0, 0, 0
        self.log: list[dict] = []
        self.decisions: list[dict] = []
        self.log_path = Path(log_path) if log_path is not None else None
        self._answers: dict[str, int] = {}
        self._logged: dict[str, dict] = {}  # digest -> the earlier run's record (replayable once confirmed)
        self._used: dict[str, dict] = {}    # digest -> record, for the answers replayed in this process
        self._confirmed = True
        self._file: QueryLog | None = None
        if self.log_path is not None:
            self._file = QueryLog(self.log_path, self._binding())
            try:
                self._check_binding(self._file.header, 1)
                self._load_log(self._file.records)
            except BaseException:
                self._file.close()
                raise
        self._logged_before = len(self.log)
        self._confirmed = not self._logged

    def _binding(self) -> dict:
        return {"model": self.model_identity, **({"key": self.key_digest} if self.key_digest else {})}

    @property
    def spent(self) -> int:
        """Queries sent to the suspect so far, counting those of earlier runs in the log (re-asks excluded)."""
        return self._logged_before + self.queries

    @property
    def remaining(self) -> int | None:
        """Queries left in the budget (None without a budget)."""
        return None if self.budget is None else max(self.budget - self.spent, 0)

    def close(self) -> None:
        """Release the query log and close the wrapped suspect's resources (an HTTP connection pool)."""
        self.release_log()
        if callable(getattr(self.suspect, "close", None)):
            self.suspect.close()

    def release_log(self) -> None:
        """Release the query log's lock (the log stays readable; nothing more is written)."""
        if self._file is not None:
            self._file.close()

    def confirm(self, images: torch.Tensor) -> None:
        """Re-ask a secret random sample of the logged ones among ``images``; SuspectError on any disagreement.

        Called before the first replayed answer is used (the verifier calls it with every key input, so the
        sample is drawn from the whole logged key). A no-op once confirmed, or when none of ``images`` is logged.
        """
        if self._confirmed:
            return
        x = check_images(images, self.input_shape, f"suspect {self.identity}")
        logged = [(i, d) for i, d in enumerate(input_digests(x)) if d in self._logged]
        if not logged:
            return
        sample = secrets.SystemRandom().sample(logged, recheck_size(len(logged)))
        idx = torch.tensor([i for i, _ in sample], dtype=torch.int64)
        labels = check_labels(self.suspect.predict(x[idx]), len(idx), self.num_classes, f"suspect {self.identity}")
        self.rechecked += len(idx)
        differ = sum(int(y) != self._logged[d]["label"] for (_, d), y in zip(sample, labels.tolist()))
        stamp = now()
        self._append([{"type": "recheck", "time": stamp, "suspect": self.identity, "input_sha256": d, "label": int(y),
                       **self._binding()} for (_, d), y in zip(sample, labels.tolist())])
        if differ:
            where = sorted({str(self._logged[d].get("suspect")) for _, d in sample})
            raise SuspectError(f"suspect {self.identity} answered {differ} of {len(idx)} re-asked logged inputs "
                               f"differently from the query log {self.log_path} (answers given by {', '.join(where)}): "
                               "the log's answers are not this suspect's, so none is replayed; use a new log file")
        self._confirmed = True

    def replay_summary(self) -> dict | None:
        """What the answers replayed in this process rest on: count, endpoints, times, re-asks, the chain."""
        if not self._used:
            return None
        times = sorted(str(r.get("time")) for r in self._used.values())
        return {"answers": len(self._used), "endpoints": sorted({str(r.get("suspect")) for r in self._used.values()}),
                "first": times[0], "last": times[-1], "rechecked": self.rechecked, "rechecked_at": self.identity,
                "log": str(self.log_path), "chain": f"intact ({len(self._file.records) if self._file else 0} records)"}

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """Labels for ``images``: replayed from the log where known (once confirmed), asked (and logged) otherwise."""
        x = check_images(images, self.input_shape, f"suspect {self.identity}")
        digests = input_digests(x)
        if not self._confirmed and any(d in self._logged for d in digests):
            self.confirm(x)
        out = torch.empty(len(digests), dtype=torch.int64)
        todo = []
        for i, d in enumerate(digests):
            if d in self._answers:
                out[i] = self._answers[d]
                if d in self._logged:
                    self._used.setdefault(d, self._logged[d])
            else:
                todo.append(i)
        if self.budget is not None and self.spent + len(todo) > self.budget:
            raise BudgetExhausted(f"suspect {self.identity}: this batch needs {len(todo)} new queries but only "
                                  f"{self.remaining} of the budget of {self.budget} are left; nothing was asked")
        self.replayed += len(digests) - len(todo)
        step = self.chunk_size or max(len(todo), 1)
        for start in range(0, len(todo), step):
            idx = torch.tensor(todo[start:start + step], dtype=torch.int64)
            labels = check_labels(self.suspect.predict(x[idx]), len(idx), self.num_classes, f"suspect {self.identity}")
            self._record([digests[i] for i in idx.tolist()], labels.tolist())
            self.queries += len(idx)
            out[idx] = labels
            report(0, queries=self.spent)  # a shown value: the open phase's steps are its loop's, not queries
        return out

    def _record(self, digests: list[str], labels: list[int]) -> None:
        stamp = now()
        records = [{"n": len(self.log) + k, "time": stamp, "suspect": self.identity, "input_sha256": d, "label": int(y),
                    **self._binding()} for k, (d, y) in enumerate(zip(digests, labels))]
        self._append(records)
        if self.log_path is not None:
            for r in records:
                self._answers.setdefault(r["input_sha256"], r["label"])
        self.log.extend(records)

    def record_decision(self, decision: dict) -> None:
        """Append a verification decision (JSON-ready fields) to the log."""
        record = {**decision, "type": "decision", "time": now(), "suspect": self.identity, **self._binding()}
        self._append([record])
        self.decisions.append(record)

    def _append(self, records: list[dict]) -> None:
        if self._file is not None:
            self._file.append(records)

    def _check_binding(self, rec: dict, number: int) -> None:
        """Refuse a log record of another model or key, saying what differs."""
        logged = rec.get("model", rec.get("suspect"))
        differs = []
        if logged != self.model_identity:
            differs.append(f"it was made with {logged!r}, this run asks {self.model_identity!r}")
        if self.key_digest and rec.get("key") and rec["key"] != self.key_digest:
            differs.append(f"it was made with key {str(rec['key'])[:12]}..., this run uses key {self.key_digest[:12]}...")
        if differs:
            raise ConfigError(f"query log {self.log_path} (line {number}) belongs to another model or key: "
                              f"{'; '.join(differs)}; use another log file")

    def _load_log(self, records: list[dict]) -> None:
        path = self.log_path
        for number, rec in enumerate(records, start=2):
            kind = rec.get("type")
            self._check_binding(rec, number)
            if kind == "decision":
                self.decisions.append(rec)
                continue
            if not (isinstance(rec.get("input_sha256"), str) and len(rec["input_sha256"]) == 64
                    and isinstance(rec.get("label"), int) and not isinstance(rec.get("label"), bool)):
                raise ConfigError(f"query log {path}: line {number} is not a query record; refusing to resume from it")
            if not 0 <= rec["label"] < self.num_classes:
                raise ConfigError(f"query log {path}: line {number} has label {rec['label']} outside [0, {self.num_classes})")
            if kind == "recheck":
                continue
            if kind is not None:
                raise ConfigError(f"query log {path}: line {number} has unknown type {kind!r}")
            self.log.append(rec)
            self._answers.setdefault(rec["input_sha256"], rec["label"])
            self._logged.setdefault(rec["input_sha256"], rec)
