"""Rules for the test suite itself: no test can hang it."""

from __future__ import annotations

import tomllib
from pathlib import Path


def test_every_test_has_a_timeout(pytestconfig):
    options = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    assert 0 < int(options["timeout"]) <= 600
    assert float(pytestconfig.getini("timeout")) == float(options["timeout"])  # pytest-timeout reads it
