"""Verification: the statistics, ``verify`` and the Verdict, the self-check and evidence reports."""

from __future__ import annotations

from .stats import binomial_p_value, decision_threshold, default_p1, key_p1, log_e_value, sequential_decision
from .verifier import MODES, Verdict, can_prove, verify
from .selfcheck import self_check
from .report import check_report, write_report

__all__ = [
    "MODES", "Verdict", "binomial_p_value", "can_prove", "check_report", "decision_threshold", "default_p1", "key_p1",
    "log_e_value", "self_check", "sequential_decision", "verify", "write_report"
]
