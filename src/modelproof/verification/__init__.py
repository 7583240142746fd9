"""Verification: the statistics, verify and the Verdict, the self-check and evidence reports."""
