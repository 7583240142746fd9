"""Help and argument errors of the attack and protect commands answer without importing torch, and the
static command tables they are built from say what the registries say."""

from __future__ import annotations

import subprocess
import sys

import pytest

_CODE = ("import sys; from modelproof.cli import main; sys.argv = ['modelproof', *sys.argv[1:]]\n"
         "try:\n    main()\nexcept SystemExit as e:\n"
         "    heavy = sorted(m for m in ('torch', 'numpy', 'scipy') if m in sys.modules)\n"
         "    print('exit', e.code, 'heavy', ','.join(heavy) or '-', file=sys.stderr)")


@pytest.mark.parametrize("args", [
    ["attack", "ftal", "--bogus"], ["attack", "--help"], ["attack", "ftal", "-h"], ["attack", "pirate", "-h"],
    ["attack", "forge-boundary", "--bogus"], ["protect", "ipguard", "-h"], ["protect", "--help"],
    ["protect", "blind", "-h"], ["protect", "zhang-noise", "--bogus"], ["protect", "margin", "-h"],
    ["protect", "frontier-stitching", "-h"]])
def test_attack_and_protect_help_and_argument_errors_do_not_import_torch(args):
    r = subprocess.run([sys.executable, "-c", _CODE, *args], capture_output=True, text=True, timeout=60)
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("exit 0" if "-h" in args or "--help" in args else "exit 2"), (args, r.stderr)
    assert last.endswith("heavy -"), (args, r.stderr)  # neither torch nor numpy nor scipy was imported


def test_the_static_tables_say_what_the_registries_say():
    from modelproof.attacks import ATTACKS
    from modelproof.attacks.forgery import FORGERIES
    from modelproof.cli.tables import ATTACK_HELP, BLIND_LOSS_WEIGHTS, DEFAULT_REFERENCES, FORGERY_HELP
    from modelproof.protections.watermarks.blind.joint import LossWeights
    from modelproof.references.calibration import DEFAULT_REFERENCES as LIBRARY_REFERENCES

    assert ATTACK_HELP == {name: cls.description for name, cls in ATTACKS.items()}
    assert list(ATTACK_HELP) == list(ATTACKS)  # same order in `attack --help` as in `attack list`
    assert FORGERY_HELP == {name: (cls.description, cls.access) for name, cls in FORGERIES.items()}
    assert DEFAULT_REFERENCES == LIBRARY_REFERENCES
    assert BLIND_LOSS_WEIGHTS == {name: getattr(LossWeights(), name) for name in BLIND_LOSS_WEIGHTS}
    assert set(BLIND_LOSS_WEIGHTS) == {"alpha", "beta", "gamma", "delta"}


def test_the_attack_group_offers_every_registered_attack_and_forgery():
    import typer

    from modelproof.attacks import ATTACKS
    from modelproof.attacks.forgery import FORGERIES
    from modelproof.cli.app import load_command

    group = load_command("attack")
    assert set(group.commands) == {"list", *ATTACKS, *FORGERIES}
    assert group.commands["ftal"].help.startswith(ATTACKS["ftal"].description[:20])
    assert isinstance(group, typer.core.TyperGroup)
