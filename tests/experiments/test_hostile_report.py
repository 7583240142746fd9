"""Issue 25.7 (the report half): the experiment report never prints the config's secret, from which every
key's secret is derived."""

from __future__ import annotations

import pytest

from modelproof.experiments.report import redact_secrets

pytestmark = pytest.mark.timeout(30)


def test_secret_values_are_redacted_and_nothing_else():
    text = '[experiment]\nname = "digits"\nsecret = "modelproof digits experiment"\n[protection]\n  secret="x-1"\n'
    shown = redact_secrets(text)
    assert "modelproof digits experiment" not in shown and "x-1" not in shown
    assert shown.count('"[redacted]"') == 2 and 'name = "digits"' in shown
