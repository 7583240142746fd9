"""The one wrapper that counts a suspect's queries, enforces a budget and keeps the query log.

Counting, the query budget and the query log live in :class:`QueriedSuspect` only; it checks every
input and every answer (:mod:`modelproof.suspects.base`), and replays a log to resume.
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from pathlib import Path

import torch

from ..util.errors import ConfigError
from ..util.progress import report
from .base import BudgetExhausted, Suspect, check_images, check_labels, input_digests


class QueriedSuspect:
    """Wraps a suspect: checks queries and answers, counts queries, enforces a budget, keeps a query log.

    The log (``log_path``) is append-only JSON lines, one per answered query: time, suspect identity,
    SHA-256 of the input's float32 bytes and the label (never the input: keys are secret), flushed and
    fsynced per chunk. An input whose digest is already in the log is answered from it without asking
    again, so a killed run resumes where it stopped. ``budget`` bounds the queries sent to the suspect
    over the whole log (earlier runs included); a batch that would exceed it raises
    :class:`BudgetExhausted` before anything is asked. Batches go to the suspect in chunks of
    ``chunk_size`` (logged one by one). ``queries`` counts queries answered by the suspect in this
    process, ``replayed`` those answered from the log. Each verification decision taken on the log
    is appended to it too (``"type": "decision"`` lines: key digest, mode, budget, alpha, p1, the
    answer count decided on), so that a later run can refuse a look that would invalidate the test.

    A log is bound to the model, not to where it is served: ``model`` in each record is the suspect's
    ``model_identity`` (an HTTP model's protocol, name and version: the same model on another host or
    port resumes) or else its ``identity``, and ``key`` is ``key_digest`` when given; a log of another
    model or key is refused with what differs.
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
        self.queries, self.replayed = 0, 0
        self.log: list[dict] = []
        self.decisions: list[dict] = []
        self.log_path = Path(log_path) if log_path is not None else None
        self._answers: dict[str, int] = {}
        if self.log_path is not None and self.log_path.exists():
            self._load_log()
        self._logged_before = len(self.log)

    @property
    def spent(self) -> int:
        """Queries sent to the suspect so far, counting those of earlier runs in the log."""
        return self._logged_before + self.queries

    @property
    def remaining(self) -> int | None:
        """Queries left in the budget (None without a budget)."""
        return None if self.budget is None else max(self.budget - self.spent, 0)

    def close(self) -> None:
        """Close the wrapped suspect's resources (an HTTP connection pool), if it has any."""
        if callable(getattr(self.suspect, "close", None)):
            self.suspect.close()

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """Labels for ``images``: replayed from the log where known, asked (and logged) otherwise."""
        x = check_images(images, self.input_shape, f"suspect {self.identity}")
        digests = input_digests(x)
        out = torch.empty(len(digests), dtype=torch.int64)
        todo = []
        for i, d in enumerate(digests):
            if d in self._answers:
                out[i] = self._answers[d]
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
            report(len(idx), queries=self.spent)
        return out

    def _record(self, digests: list[str], labels: list[int]) -> None:
        now = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
        bound = {"model": self.model_identity, **({"key": self.key_digest} if self.key_digest else {})}
        records = [{"n": len(self.log) + k, "time": now, "suspect": self.identity, "input_sha256": d, "label": int(y),
                    **bound} for k, (d, y) in enumerate(zip(digests, labels))]
        self._append(records)
        if self.log_path is not None:
            for r in records:
                self._answers.setdefault(r["input_sha256"], r["label"])
        self.log.extend(records)

    def record_decision(self, decision: dict) -> None:
        """Append a verification decision (JSON-ready fields) to the log."""
        now = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
        record = {**decision, "type": "decision", "time": now, "suspect": self.identity, "model": self.model_identity,
                  **({"key": self.key_digest} if self.key_digest else {})}
        self._append([record])
        self.decisions.append(record)

    def _append(self, records: list[dict]) -> None:
        if self.log_path is None:
            return
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as fh:
            fh.write("".join(json.dumps(r, sort_keys=True) + "\n" for r in records).encode())
            fh.flush()
            os.fsync(fh.fileno())

    def _check_binding(self, rec: dict) -> None:
        """Refuse a log record of another model or key, saying what differs."""
        logged = rec.get("model", rec.get("suspect"))
        differs = []
        if logged != self.model_identity:
            differs.append(f"it was made with {logged!r}, this run asks {self.model_identity!r}")
        if self.key_digest and rec.get("key") and rec["key"] != self.key_digest:
            differs.append(f"it was made with key {str(rec['key'])[:12]}..., this run uses key {self.key_digest[:12]}...")
        if differs:
            raise ConfigError(f"query log {self.log_path} belongs to another model or key: {'; '.join(differs)}; "
                              "use another log file")

    def _load_log(self) -> None:
        path = self.log_path
        assert path is not None
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise ConfigError(f"cannot read query log {path}: {exc}") from None
        lines = raw.split(b"\n")
        complete = len(lines) - 1  # the piece after the last newline is empty or a truncated write
        for number, line in enumerate(lines[:complete], start=1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                if isinstance(rec, dict) and rec.get("type") == "decision":
                    self._check_binding(rec)
                    self.decisions.append(rec)
                    continue
                ok = (isinstance(rec, dict) and isinstance(rec.get("input_sha256"), str)
                      and len(rec["input_sha256"]) == 64 and isinstance(rec.get("label"), int))
            except (ValueError, UnicodeDecodeError):
                ok = False
            if not ok:
                raise ConfigError(f"query log {path}: line {number} is not a query record; refusing to resume from it")
            self._check_binding(rec)
            if not 0 <= rec["label"] < self.num_classes:
                raise ConfigError(f"query log {path}: line {number} has label {rec['label']} outside [0, {self.num_classes})")
            self.log.append(rec)
            self._answers.setdefault(rec["input_sha256"], rec["label"])
        if lines[-1]:  # drop the torn last line so that new records start on a line of their own
            with open(path, "r+b") as fh:
                fh.truncate(len(raw) - len(lines[-1]))
                fh.flush()
                os.fsync(fh.fileno())
