"""The experiment grid: config validation, caching and resumption, failures, payoff, report, executors."""

from __future__ import annotations

import json
import re

import pytest

from modelproof.util.errors import ConfigError
from modelproof.experiments import jobs as experiment_jobs
from modelproof.experiments.parse import parse_config
from modelproof.experiments.payoff import payoff_cells, protection_summaries, roc
from modelproof.experiments.run import comparable, run_experiment

TINY = """
[experiment]
name = "tiny"
seeds = [0]

[[datasets]]
name = "digits"
size = 16

[[hosts]]
arch = "mlp"
epochs = 3
lr = 0.003

[[protections]]
name = "ipguard"
params = { points = 20, k = 1.0, max_iter = 100 }

[[protections]]
name = "zhang-noise"
params = { key_size = 20, epochs = 3 }

[[attacks]]
name = "none"

[[attacks]]
name = "prune-weights"
params = { retrain = false }
sweep = { rate = [0.5, 0.95] }

[[attacks]]
name = "quantize"

[[negatives]]
arch = "same"
seed = 1

[[negatives]]
arch = "forest"
seed = 2
trees = 5
"""


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("experiment")
    summary = run_experiment(parse_config(TINY), out, quiet=True)
    return out, summary


@pytest.mark.parametrize("edit, message", [
    (("[[hosts]]", "[[hostz]]"), "config.hostz: unknown key"),
    (('name = "quantize"', 'name = "quantise-me"'), "attacks[2].name: unknown attack"),
    (("params = { retrain = false }", "params = { retrain = false, rat = 1 }"), "attacks[1].params: unknown parameter"),
    (("sweep = { rate = [0.5, 0.95] }", "sweep = { rate = [0.5], epochs = [1] }"), "attacks[1].sweep: sweep one"),
    (('name = "ipguard"', 'name = "watermark-x"'), "protections[0].name: unknown protection"),
    (("points = 20,", "points = -1,"), "protections[0].params:"),
    (("seeds = [0]", "seeds = [0, 0]"), "experiment.seeds must be"),
    (('arch = "mlp"', 'arch = "mlpx"'), "hosts[0].arch: unknown architecture"),
    (("epochs = 3\n", "epochs = 0\n"), "hosts[0]: epochs must be"),
    (('arch = "same"', 'arch = "tree"'), "negatives[0].arch: unknown architecture"),
    (("[[negatives]]\narch = \"same\"", "[verification]\nalpha = 2\n[[negatives]]\narch = \"same\""),
     "verification.alpha must be"),
])
def test_config_errors_name_the_bad_key(edit, message):
    old, new = edit
    assert old in TINY
    with pytest.raises(ConfigError) as info:
        parse_config(TINY.replace(old, new, 1))
    assert message in str(info.value) and "\n" not in str(info.value)


def test_grid_expands_sweeps_and_all():
    config = parse_config(TINY)
    assert [a.label for a in config.attacks] == ["none", "prune-weights rate=0.5", "prune-weights rate=0.95",
                                                 "quantize"]
    assert config.cells() == 8
    everything = parse_config(TINY.replace('name = "quantize"', 'name = "all"'))
    from modelproof.attacks import ATTACKS
    from modelproof.attacks.forgery import FORGERIES

    assert {a.name for a in everything.attacks} == set(ATTACKS) | set(FORGERIES) | {"none"}
    kinds = {c.attack.name: c.attack_kind for c in __import__("modelproof.experiments.plan",
                                                               fromlist=["plan"]).plan(everything)[1]}
    assert kinds["pirate"] == "evasion" and kinds["forge-pattern-reuse"] == "forgery" and kinds["svd"] == "removal"


@pytest.mark.parametrize("edit, message", [
    (('name = "quantize"', 'name = "forge_pattern_reusex"'), "attacks[2].name: unknown attack"),
    (('name = "quantize"', 'name = "forge-boundary"\nparams = { k = -1 }'), "attacks[2].params:"),
    (('name = "quantize"', 'name = "forge-adversarial"\nparams = { tau = 1 }'), "attacks[2].params: unknown parameter"),
    (('name = "quantize"', 'name = "pirate"\nparams = { tau = -1 }'), "attacks[2].params:"),
])
def test_evasion_and_forgery_entries_are_checked(edit, message):
    old, new = edit
    with pytest.raises(ConfigError) as info:
        parse_config(TINY.replace(old, new, 1))
    assert message in str(info.value) and "\n" not in str(info.value)


SPECIAL = TINY.replace('name = "ipguard"\nparams = { points = 20, k = 1.0, max_iter = 100 }',
                       'name = "zhang-content"\nparams = { epochs = 3 }').replace(
    '[[attacks]]\nname = "prune-weights"\nparams = { retrain = false }\nsweep = { rate = [0.5, 0.95] }\n\n'
    '[[attacks]]\nname = "quantize"',
    '[[attacks]]\nname = "pirate"\nparams = { epochs = 3, width = 0.25, tau = 0 }\n\n'
    '[[attacks]]\nname = "forge-pattern-reuse"\n\n[[attacks]]\nname = "forge-adversarial"\nparams = { max_iter = 50 }')


def test_evasion_and_forgery_cells(tmp_path):
    assert SPECIAL != TINY and "pirate" in SPECIAL and "ipguard" not in SPECIAL
    summary = run_experiment(parse_config(SPECIAL), tmp_path, quiet=True, report=False)
    assert summary.failures == []
    pos = {(r["protection"], r["attack_label"]): r for r in summary.rows if r["role"] == "positive"}
    assert {r["attack_kind"] for r in pos.values()} == {"removal", "evasion", "forgery"}
    for prot in ("zhang-content", "zhang-noise"):
        pirate, forged = pos[(prot, "pirate")], pos[(prot, "forge-pattern-reuse")]
        assert 0.0 <= pirate["fpr"] <= 1.0 and 0.0 <= pirate["fnr"] <= 1.0
        assert forged["attack_queries"] > 0 and forged["accuracy_after"] == forged["accuracy_before"]
        assert forged["fpr"] is None and pos[(prot, "none")]["fpr"] is None
    # each forgery cell verified the counterfeiter's own key, cached beside its attack entry
    from modelproof.keys.container import load_key

    forged_keys = [load_key(p) for p in sorted((tmp_path / "cache" / "attack").glob("*.mpkey"))]
    assert sorted(k.method for k in forged_keys) == ["forge-adversarial"] * 2 + ["forge-pattern-reuse"] * 2
    assert all("calibration" in k.params for k in forged_keys)  # calibrated as the owner's keys are
    # pattern reuse claims a Zhang-content model (Li et al. §6.4): the grid counts that as the forgery's success
    assert pos[("zhang-content", "forge-pattern-reuse")]["decision"] == "owned"
    # a pirate read back from the cache answers exactly as the one built: re-verify its cells only
    cache = tmp_path / "cache"
    for r in pos.values():
        if r["attack_kind"] != "removal":
            (cache / "cell" / f"{r['config_hash']}.json").unlink()
    again = run_experiment(parse_config(SPECIAL), tmp_path, quiet=True, report=False)
    assert again.counts["done"] == 6 and comparable(again.rows) == comparable(summary.rows)


def test_rows_decisions_and_files(tiny_run):
    out, summary = tiny_run
    assert summary.failures == [] and summary.counts["failed"] == 0
    rows = summary.rows
    assert len(rows) == 8 * 3  # each cell: the attacked model and two negatives
    positives = {(r["protection"], r["attack_label"]): r for r in rows if r["role"] == "positive"}
    assert positives[("zhang-noise", "none")]["decision"] == "owned"
    # calibrated on the default references, a 25-point IPGuard key on these tiny models may prove nothing:
    # then it says so ("inconclusive"), never "not owned" of its own model
    assert positives[("ipguard", "none")]["decision"] in ("owned", "inconclusive")
    strong = positives[("ipguard", "prune-weights rate=0.95")]
    assert strong["plausible"] is False and strong["accuracy_after"] < strong["accuracy_before"]
    assert all(r["decision"] != "owned" for r in rows if r["role"] == "negative")
    header = (out / "results.csv").read_text().splitlines()[0].split(",")
    assert {"decision", "p_value", "matches", "queries", "key_accuracy", "plausible", "config_hash"} <= set(header)
    assert len((out / "results.csv").read_text().splitlines()) == len(rows) + 1


def test_rerun_computes_nothing_and_param_change_recomputes_dependents(tiny_run, tmp_path):
    out, first = tiny_run
    again = run_experiment(parse_config(TINY), out, quiet=True, report=False)
    assert again.counts["done"] == 0 and again.counts["cached"] == first.jobs
    assert comparable(again.rows) == comparable(first.rows)
    changed = run_experiment(parse_config(TINY.replace("points = 20,", "points = 25,")), out, quiet=True, report=False)
    # ipguard: 1 protect + 2 negative verifications + 4 cells; nothing else
    assert changed.counts["done"] == 7
    assert {r["key_size"] for r in changed.rows if r["protection"] == "ipguard"} == {25}


def test_failed_cell_is_recorded_and_the_run_goes_on(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from modelproof.cli.app import app

    original = experiment_jobs.RUNNERS["cell"]

    def flaky(store, job):
        if job.spec["attack"] == "quantize":
            raise RuntimeError("injected failure")
        return original(store, job)

    monkeypatch.setitem(experiment_jobs.RUNNERS, "cell", flaky)
    config = tmp_path / "tiny.toml"
    config.write_text(TINY)
    result = CliRunner().invoke(app, ["experiment", "run", str(config), "--out", str(tmp_path / "out"),
                                      "--quiet", "--no-report"])
    assert result.exit_code == 1
    assert result.output.count("FAILED") == 2 and "injected failure" in result.output
    rows = json.loads((tmp_path / "out" / "results.json").read_text())
    failed = [r for r in rows if r["status"] == "failed"]
    assert {r["attack"] for r in failed} == {"quantize"} and all("injected" in r["error"] for r in failed)
    assert sum(r["status"] == "ok" and r["role"] == "positive" for r in rows) == 6


def test_payoff_outcomes_false_claims_and_roc():
    def row(prot, attack, seed, role, decision, rate, plausible=True, suspect="s"):
        return {"dataset": "d", "host": "h", "protection": prot, "protection_kind": "watermark", "attack": attack,
                "attack_label": attack, "seed": seed, "role": role, "decision": decision, "match_rate": rate,
                "p_value": 0.5 if decision != "owned" else 1e-6, "plausible": plausible, "accuracy_after": 0.9,
                "accuracy_host": 0.95, "accuracy_before": 0.94, "protect_seconds": 2.0, "queries": 20,
                "key_size": 20, "status": "ok", "suspect": suspect}

    rows = [row("w", "none", s, "positive", "owned", 1.0) for s in (0, 1)]
    rows += [row("w", "prune", s, "positive", "not owned", 0.3) for s in (0, 1)]
    rows += [row("w", "ft", 0, "positive", "owned", 0.9), row("w", "ft", 1, "positive", "not owned", 0.4)]
    rows += [row("w", "big", s, "positive", "not owned", 0.2, plausible=False) for s in (0, 1)]
    # the same negative appears in every cell of its seed: counted once
    rows += [row("w", a, 0, "negative", "owned" if a != "x" else "owned", 0.5, None, "neg") for a in ("none", "ft")]
    rows += [row("w", "none", 1, "negative", "not owned", 0.1, None, "neg")]
    outcomes = {c.attack: c.outcome for c in payoff_cells(rows)}
    assert outcomes == {"none": "survived", "prune": "removed", "ft": "mixed", "big": "implausible"}
    (summary,) = protection_summaries(rows)
    assert summary.false_claims == 1 and summary.negatives == 2
    assert summary.survived == ["big"] and set(summary.removed_by) == {"prune", "ft"}
    assert summary.fidelity == pytest.approx(0.01)
    from sklearn.metrics import roc_auc_score

    pos = [1.0, 1.0, 0.3, 0.3, 0.9, 0.4]
    assert summary.auc == pytest.approx(roc_auc_score([1] * 6 + [0] * 2, pos + [0.5, 0.1]))
    assert roc([0.9, 0.8], [0.1, 0.2])[:2] == (1.0, 1.0)


def test_forgery_succeeds_when_its_key_is_upheld():
    def row(attack, seed, decision, kind):
        return {"dataset": "d", "host": "h", "protection": "w", "protection_kind": "watermark", "attack": attack,
                "attack_label": attack, "seed": seed, "role": "positive", "decision": decision, "match_rate": 0.9,
                "p_value": 1e-6 if decision == "owned" else 0.5, "plausible": True, "accuracy_after": 0.9,
                "accuracy_host": 0.95, "accuracy_before": 0.94, "protect_seconds": 1.0, "queries": 30,
                "key_size": 20, "status": "ok", "suspect": "s", "attack_kind": kind}

    rows = [row("none", s, "owned", "removal") for s in (0, 1)]
    rows += [row("forge-a", s, "owned", "forgery") for s in (0, 1)]
    rows += [row("forge-b", s, "not owned", "forgery") for s in (0, 1)]
    outcomes = {c.attack: c.outcome for c in payoff_cells(rows)}
    assert outcomes == {"none": "survived", "forge-a": "removed", "forge-b": "survived"}
    (summary,) = protection_summaries(rows)
    assert summary.removed_by == ["forge-a"] and summary.survived == ["forge-b"]
    assert summary.queries == 30 and summary.auc is None  # forged keys are not the owner's: no ROC positives


def test_report_is_self_contained(tiny_run):
    out, summary = tiny_run
    html = (out / "report.html").read_text()
    assert 'class="payoff"' in html and "ipguard" in html
    images = re.findall(r'<img src="([^"]+)"', html)
    assert images and all(src.startswith("data:image/png;base64,") for src in images)
    assert not re.search(r'(src|href)="(https?:)?//', html) and "@import" not in html


def test_ray_missing_is_one_line_error(monkeypatch, tmp_path):
    import builtins

    real = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name == "ray":
            raise ImportError("no ray")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    with pytest.raises(ConfigError, match=r"modelproof\[cluster\]"):
        run_experiment(parse_config(TINY), tmp_path, executor="ray", quiet=True, report=False)


def _chromium() -> str | None:
    import shutil

    return next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)


@pytest.mark.skipif(_chromium() is None, reason="needs a headless Chromium (Debian: apt-get install chromium)")
def test_report_renders_in_headless_chromium(tiny_run, tmp_path):
    import subprocess

    out, _ = tiny_run
    page = (out / "report.html").resolve().as_uri()
    flags = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
             "--enable-logging=stderr", "--virtual-time-budget=5000", f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([*flags, "--dump-dom", page], capture_output=True, text=True, timeout=120)
    body = re.search(r"<body[^>]*>", dom.stdout).group(0)
    expected = len(re.findall(r"<img ", (out / "report.html").read_text()))
    assert f'data-images-ok="{expected}"' in body and 'data-images-broken="0"' in body
    assert '<table id="payoff-1" class="payoff">' in dom.stdout and "Uncaught" not in dom.stderr
    shot = tmp_path / "report.png"
    subprocess.run([*flags, "--window-size=1400,2400", f"--screenshot={shot}", page], capture_output=True,
                   timeout=120)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000


@pytest.mark.slow  # Ray's start-up alone takes 5-90 s on a loaded 2-core machine
def test_ray_executor_gives_the_local_table(tiny_run, tmp_path):
    ray = pytest.importorskip("ray")
    out, local = tiny_run
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        remote = run_experiment(parse_config(TINY), tmp_path, executor="ray", quiet=True, report=False)
    finally:
        ray.shutdown()
    assert remote.failures == [] and remote.counts["done"] == remote.jobs
    assert comparable(remote.rows) == comparable(local.rows)


@pytest.mark.slow  # two spawned workers import torch: ~30 s on a loaded 2-core machine
def test_process_pool_gives_the_local_table(tiny_run, tmp_path):
    out, local = tiny_run
    pooled = run_experiment(parse_config(TINY), tmp_path, workers=2, quiet=True, report=False)
    assert pooled.failures == [] and comparable(pooled.rows) == comparable(local.rows)


def test_a_weak_key_is_not_an_attacks_success_and_cells_read_in_words(tiny_run):
    from modelproof.experiments.payoff import attack_summaries, cell_words, on_weak_key, weak_keys, with_outcomes

    def row(attack, seed, decision):
        return {"dataset": "d", "host": "h", "protection": "w", "protection_kind": "watermark", "attack": attack,
                "attack_label": attack, "seed": seed, "role": "positive", "decision": decision, "match_rate": 0.4,
                "p_value": 0.3, "plausible": True, "accuracy_after": 0.9, "accuracy_host": 0.95,
                "accuracy_before": 0.94, "protect_seconds": 1.0, "queries": 30.4, "key_size": 20, "status": "ok",
                "suspect": "s", "attack_kind": "removal"}

    # seed 0's key is weak (not owned unattacked), seed 1's is not: ft removes it in seed 1 only
    rows = [row("none", 0, "not owned"), row("ft", 0, "not owned"), row("none", 1, "owned"), row("ft", 1, "not owned"),
            row("prune", 0, "not owned")]
    cells = {c.attack: c for c in payoff_cells(rows)}
    assert cells["none"].outcome == "weak" and cell_words(cells["none"])[0] == "weak key"
    assert cells["prune"].outcome == "weak" and cells["prune"].successes == 0  # only on the weak key
    assert cell_words(cells["prune"]) == ("weak key", "not owned in 1 of 1 seeds without any attack; the attack "
                                          "is no success on a weak key")
    assert (cells["ft"].outcome, cells["ft"].successes, cells["ft"].weak) == ("removed", 1, 1)
    assert cell_words(cells["ft"]) == ("removed", "removed in 1 of 1 seeds, owned in 0 of 1; weak key in 1 of 2 "
                                                  "seeds (not counted)")
    (summary,) = protection_summaries(rows)
    assert summary.removed_by == ["ft"] and summary.survived == []  # prune: neither removed nor survived
    assert attack_summaries(rows) == {"ft": ["w"], "prune": []}
    assert [r["outcome"] for r in with_outcomes(rows)] == ["weak key", "weak key", "owned", "removed", "weak key"]
    out, _ = tiny_run
    shown = json.loads((out / "results.json").read_text())
    weak = weak_keys(shown)
    assert all((r["outcome"] == "weak key") == on_weak_key(r, weak) for r in shown if r["role"] == "positive")
    assert all(r["outcome"] is None for r in shown if r["role"] == "negative")
    html = (out / "report.html").read_text()
    assert "seeds" in html and "largest p-value" in html and "weak key" in html
    queries = re.findall(r"<td>([^<]*)</td>\s*<td>\d+/\d+</td><td style=\"text-align:left\">", html)
    assert queries and all(q.isdigit() for q in queries), queries  # whole queries, not 30.0


def test_only_and_limit_run_a_subset_of_the_cells(tiny_run, tmp_path):
    from modelproof.experiments.plan import plan, select

    jobs, cells = plan(parse_config(TINY))
    sub_jobs, sub = select(jobs, cells, only=["zhang-noise x prune*"])
    assert sub and all(c.protection.label == "zhang-noise" and c.attack.label.startswith("prune") for c in sub)
    assert {c.cell_job for c in sub} <= {j.id for j in sub_jobs} and len(sub_jobs) < len(jobs)
    assert all(d in {j.id for j in sub_jobs} for j in sub_jobs for d in j.deps)  # dependencies come along
    assert len(select(jobs, cells, limit=2)[1]) == 2
    with pytest.raises(ConfigError, match="matches no cell"):
        select(jobs, cells, only=["nothing-like-this"])
    out, _ = tiny_run
    import shutil

    shutil.copytree(out / "cache", tmp_path / "cache")  # a rerun of a subset from the cache runs nothing
    summary = run_experiment(parse_config(TINY), tmp_path, quiet=True, report=False, only=["ipguard"], limit=1)
    assert summary.cells == 1 and summary.counts["done"] == 0 and len({r["protection"] for r in summary.rows}) == 1


def test_the_digits_grid_stays_the_size_that_fits_its_budget():
    """experiments/digits.toml picked up every attack registered later ("all"): 936 cells, past 10 minutes."""
    from pathlib import Path

    from modelproof.experiments.parse import load_config
    from modelproof.experiments.plan import plan

    jobs, cells = plan(load_config(Path(__file__).parents[2] / "experiments" / "digits.toml"))
    assert len(cells) == 576 and len(jobs) == 680  # as measured in docs/guides/experiments.md


def test_a_cached_rerun_keeps_the_report_it_finds(tiny_run, tmp_path, monkeypatch):
    """Drawing the figures again was most of a cached rerun's time."""
    import shutil

    from modelproof.experiments import report as report_module

    out, _ = tiny_run
    shutil.copytree(out / "cache", tmp_path / "again" / "cache")
    run_experiment(parse_config(TINY), tmp_path / "again", quiet=True)  # from the cache, report drawn
    monkeypatch.setattr(report_module, "write_report", lambda *a, **k: pytest.fail("report redrawn"))
    summary = run_experiment(parse_config(TINY), tmp_path / "again", quiet=True)
    assert summary.counts["done"] == 0 and summary.files["report"].endswith("report.html")


def test_a_protection_that_makes_no_key_reads_no_key_and_the_run_succeeds(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    import modelproof.references.protect as protect_module
    from modelproof.cli.app import app
    from modelproof.experiments.payoff import cell_words
    from modelproof.util.errors import KeyRefused

    original = protect_module.protect_model

    def refusing(protection, *args, **kwargs):
        if protection.name == "ipguard":
            raise KeyRefused("ipguard: only 3 of 900 candidates survived key selection\nsecond line")
        return original(protection, *args, **kwargs)

    monkeypatch.setattr(protect_module, "protect_model", refusing)
    config = tmp_path / "tiny.toml"
    config.write_text(TINY)
    args = ["experiment", "run", str(config), "--out", str(tmp_path / "out"), "--quiet", "--no-report", "--json"]
    for attempt in range(2):  # the second run reads the refusal from the cache
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, result.output
        out = json.loads(result.output)
        assert out["failures"] == [] and len(out["refusals"]) == 1 and "3 of 900" in out["refusals"][0]["reason"]
        assert out["counts"]["refused"] >= 1 + 4 + 2  # the protect, its 4 cells, its 2 negative verdicts
    rows = json.loads((tmp_path / "out" / "results.json").read_text())
    mine = [r for r in rows if r["protection"] == "ipguard"]
    assert mine and all(r["status"] == "refused" and "no key" in r["error"] for r in mine)
    assert {r["outcome"] for r in mine if r["role"] == "positive"} == {"no key"}
    cells = payoff_cells(rows)
    assert {c.outcome for c in cells if c.protection == "ipguard"} == {"refused"}
    assert cell_words(next(c for c in cells if c.protection == "ipguard"))[0] == "no key"
    assert all(r["status"] == "ok" for r in rows if r["protection"] == "zhang-noise")
    summary = {s.protection: s for s in protection_summaries(rows)}
    assert summary["ipguard"].survived == [] and summary["zhang-noise"].negatives == 2


def test_cached_only_runs_nothing_and_marks_the_rest_not_run(tiny_run, tmp_path):
    """A grid cut short still gets its table: what the cache holds, every other cell "not run" (not failed)."""
    import shutil

    from modelproof.experiments.survival import survival_matrices

    out, _ = tiny_run
    shutil.copytree(out / "cache", tmp_path / "cache")
    bigger = TINY + '\n[[attacks]]\nname = "ftal"\nparams = { epochs = 1 }\n'
    summary = run_experiment(parse_config(bigger), tmp_path, quiet=True, report=True, cached_only=True)
    assert summary.counts["done"] == 0 and summary.counts["cached"] > 0 and not summary.failures
    ftal = [r for r in summary.rows if r["attack"] == "ftal" and r["role"] == "positive"]
    assert ftal and all(r["outcome"] == "not run" and r["error"] == "not run" for r in ftal)
    assert all(r["status"] == "ok" for r in summary.rows if r["attack"] != "ftal")
    (matrix,) = survival_matrices(summary.rows)
    assert {matrix.cells[(p, "ftal")].symbol for p in matrix.protections} == {"·"}
    html = (tmp_path / "report.html").read_text()
    assert 'class="survival"' in html and 'class="not-run"' in html


def test_fingerprints_share_the_attacked_host_and_watermarks_do_not():
    """A fingerprint's protected model is the host: each attack of it runs once for every fingerprint."""
    from modelproof.experiments.plan import plan

    config = parse_config(TINY + '\n[[protections]]\nname = "random-fingerprint"\nparams = { points = 20 }\n')
    jobs, cells = plan(config)
    attack_job = {(c.protection.label, c.attack.label): j.spec["attack_job"] for c in cells for j in jobs
                  if j.id == c.cell_job}
    for attack in ("quantize", "prune-weights rate=0.5"):
        assert attack_job[("ipguard", attack)] == attack_job[("random-fingerprint", attack)]
        assert attack_job[("zhang-noise", attack)] != attack_job[("ipguard", attack)]
    assert len({c.cell_job for c in cells}) == len(cells)  # each cell is still verified with its own key


def test_a_failed_protect_keeps_its_error_in_the_tables_even_when_written_from_the_cache(tiny_run, tmp_path,
                                                                                       monkeypatch):
    """A protect that fails is every cell's "failed" with the protect's error: in results.csv, in the table's
    notes, and in a later ``--cached-only`` table (the error is recorded beside the cache, not lost)."""
    import csv
    import shutil

    import modelproof.references.protect as protect_module
    from modelproof.experiments.survival import survival_matrices, to_markdown

    original = protect_module.protect_model

    def failing(protection, *args, **kwargs):
        if protection.name == "zhang-noise":
            raise ValueError("injected protect failure: encoder collapsed\nsecond line")
        return original(protection, *args, **kwargs)

    monkeypatch.setattr(protect_module, "protect_model", failing)
    out, _ = tiny_run
    config = parse_config(TINY.replace("key_size = 20, epochs = 3", "key_size = 21, epochs = 3"))  # not cached
    shutil.copytree(out / "cache", tmp_path / "run" / "cache")
    summary = run_experiment(config, tmp_path / "run", quiet=True, report=True)
    mine = [r for r in summary.rows if r["protection"] == "zhang-noise" and r["role"] == "positive"]
    assert mine and all(r["outcome"] == "failed" and "injected protect failure" in r["error"] for r in mine)
    with (tmp_path / "run" / "results.csv").open() as f:
        assert all("injected protect failure" in r["error"] for r in csv.DictReader(f) if r["protection"] == "zhang-noise")
    (matrix,) = survival_matrices(summary.rows)
    table = to_markdown(matrix)
    note = next(line for line in table.splitlines() if line.startswith("- zhang-noise"))
    assert "failed (4 cells): needs a failed protect: ValueError: injected protect failure" in note
    assert "- ipguard" not in table and "injected protect failure" in (tmp_path / "run" / "report.html").read_text()
    # the run is stopped before its tables; they are written from the cache: the error is still there
    shutil.copytree(tmp_path / "run" / "cache", tmp_path / "later" / "cache")
    again = run_experiment(config, tmp_path / "later", quiet=True, report=False, cached_only=True)
    later = [r for r in again.rows if r["protection"] == "zhang-noise" and r["role"] == "positive"]
    assert [r["error"] for r in later] == [r["error"] for r in mine] and {r["outcome"] for r in later} == {"failed"}
    assert any("injected" in f["error"] and f["kind"] == "protect" for f in again.failures)
    # once the protect succeeds, its recorded failure is gone
    monkeypatch.setattr(protect_module, "protect_model", original)
    run_experiment(config, tmp_path / "run", quiet=True, report=False, only=["zhang-noise x none"])
    assert not list((tmp_path / "run" / "cache" / "protect").glob("*.failed.json"))
