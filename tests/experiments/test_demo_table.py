"""The demo's table keeps its columns: a refused method's reason goes under it, not inside it."""

from __future__ import annotations

from modelproof.experiments.demo import format_table


def test_refusals_are_listed_under_the_table():
    good = {"method": "zhang-noise", "key_size": 50, "accuracy_before": 0.95, "accuracy_after": 0.94,
            "key_accuracy": 1.0, "decision": "owned", "p_value": 1e-20, "false_claims": "0/3",
            "sequential_queries": 12, "seconds": 3.2}
    reason = "zhang-unrelated: the new key does not prove its own protected model at alpha = 0.01 " * 2
    text = format_table([good, {"method": "zhang-unrelated", "error": reason}, good])
    lines = text.splitlines()
    width = len(lines[0])
    table = lines[:4]
    assert all(len(line) <= width for line in table), table
    assert table[2].startswith("zhang-unrelated") and "refused" in table[2] and "alpha" not in table[2]
    assert lines[4] == "" and lines[5] == f"zhang-unrelated refused: {reason}"
