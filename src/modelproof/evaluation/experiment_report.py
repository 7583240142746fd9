"""``write_report(out)``: one self-contained HTML page from an experiment folder's results.

No network, no external scripts, fonts or styles: CSS is inline and figures are PNG data URIs.
A tiny inline script marks the page once every image has decoded (``data-images-ok`` and
``data-images-broken`` on ``<body>``), which the headless-browser test reads. Key samples are
shown only when the config's ``report.show_keys`` is true (the default for experiments, whose keys
are made for the experiment): an evidence report (``modelproof.report``) never shows them.
"""

from __future__ import annotations

import json
import platform
from collections import defaultdict
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

from ..errors import ConfigError
from ..modelfile import atomic_write_bytes
from .experiment_payoff import attack_summaries, payoff_cells, protection_summaries

TEMPLATE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{{ name }}: experiment report</title>
<style>
body{font-family:sans-serif;margin:1.5em;color:#222;max-width:1400px}
table{border-collapse:collapse;margin:.6em 0 1.4em;font-size:12px}
th,td{border:1px solid #bbb;padding:3px 6px;text-align:center}
th{background:#eee}
td.removed{background:#f4a6a6}td.survived{background:#b6e3b6}td.mixed{background:#f7d98b}
td.implausible{background:#d6dcef}td.failed{background:#999;color:#fff}
.legend span{padding:2px 8px;margin-right:6px;font-size:12px}
figure{display:inline-block;margin:.4em}
pre{background:#f6f6f6;padding:.6em;font-size:11px;overflow:auto}
</style></head>
<body data-images-ok="" data-images-broken="">
<h1>{{ name }}</h1>
<p>{{ cells }} cells, {{ rows }} rows; {{ created }}. Verification: {{ verification }}. Plausible: {{ rule }}.
An attack <b>succeeds</b> when its model is plausible and the verdict is not "owned".</p>
<p class="legend"><span class="removed" style="background:#f4a6a6">removed (every seed)</span>
<span style="background:#f7d98b">mixed</span><span style="background:#b6e3b6">survived (owned, every seed)</span>
<span style="background:#d6dcef">not owned only when implausible</span><span style="background:#999;color:#fff">failed</span></p>
{% for group in groups %}
<h2>Payoff: {{ group.title }}</h2>
<table id="payoff-{{ loop.index }}" class="payoff"><tr><th>protection</th>{% for a in group.attacks %}<th>{{ a }}</th>{% endfor %}
<th>survives</th><th>false claims</th></tr>
{% for p in group.protections %}<tr><th>{{ p.protection }}</th>
{% for a in group.attacks %}{% set c = group.cells.get((p.protection, a)) %}{% if c %}
<td class="{{ c.outcome }}" title="succeeded {{ c.successes }}/{{ c.seeds }}, owned {{ c.owned }}/{{ c.seeds }}">{{ c.successes }}/{{ c.seeds }}<br>
acc {{ fmt(c.accuracy_after) }}<br>p {{ sci(c.p_value_max) }}</td>{% else %}<td></td>{% endif %}{% endfor %}
<td>{{ p.survived|length }}/{{ group.attacks|length - (1 if 'none' in group.attacks else 0) }}</td><td>{{ p.false_claims }}/{{ p.negatives }}</td></tr>{% endfor %}
</table>
<h3>Per protection</h3>
<table><tr><th>protection</th><th>kind</th><th>key size</th><th>fidelity (acc. lost)</th><th>ROC AUC</th><th>TPR @ FPR 1%</th>
<th>embedding s</th><th>queries to decide</th><th>false claims</th><th>removed by</th></tr>
{% for p in group.protections %}<tr><th>{{ p.protection }}</th><td>{{ p.kind }}</td><td>{{ p.key_size }}</td><td>{{ fmt(p.fidelity) }}</td>
<td>{{ fmt(p.auc) }}</td><td>{{ fmt(p.tpr_at_1) }}</td><td>{{ fmt(p.embed_seconds, 1) }}</td><td>{{ fmt(p.queries, 1) }}</td>
<td>{{ p.false_claims }}/{{ p.negatives }}</td><td style="text-align:left">{{ p.removed_by|join(', ') or '-' }}</td></tr>{% endfor %}
</table>
<h3>Per attack: protections removed</h3>
<table><tr><th>attack</th><th>removes</th></tr>{% for a, removed in group.by_attack.items() %}
<tr><th>{{ a }}</th><td style="text-align:left">{{ removed|join(', ') or '-' }}</td></tr>{% endfor %}</table>
{% if group.special %}<h3>Evasion and forgery</h3>
<table><tr><th>protection</th><th>attack</th><th>kind</th><th>seed</th><th>decision</th><th>p-value</th><th>accuracy</th></tr>
{% for r in group.special %}<tr><td>{{ r.protection }}</td><td>{{ r.attack_label }}</td><td>{{ r.attack_kind }}</td><td>{{ r.seed }}</td>
<td>{{ r.decision }}</td><td>{{ sci(r.p_value) }}</td><td>{{ fmt(r.accuracy_after) }}</td></tr>{% endfor %}</table>{% endif %}
<h3>Robustness curves</h3>
{% for title, uri in group.curves %}<figure><img src="{{ uri }}" alt="robustness: {{ title }}"><figcaption>{{ title }}</figcaption></figure>{% else %}<p>No swept attack in this config.</p>{% endfor %}
<h3>ROC of the match rate</h3>
{% if group.roc %}<figure><img src="{{ group.roc }}" alt="ROC curves"></figure>{% else %}<p>Needs positive and negative suspects.</p>{% endif %}
{% endfor %}
{% if keys %}<h2>Key samples beside their nearest owner image</h2>
{% for name, uri in keys %}<figure><img src="{{ uri }}" alt="key samples of {{ name }}"><figcaption>{{ name }}</figcaption></figure>{% endfor %}{% endif %}
{% if failures %}<h2>Failures</h2><table><tr><th>job</th><th>error</th></tr>
{% for f in failures %}<tr><td>{{ f.job }}</td><td style="text-align:left">{{ f.error }}</td></tr>{% endfor %}</table>{% endif %}
<h2>Config</h2><pre>{{ config }}</pre>
<h2>Versions</h2><table>{% for k, v in versions.items() %}<tr><th>{{ k }}</th><td>{{ v }}</td></tr>{% endfor %}</table>
<script>
window.addEventListener("load", function () {
  var ok = 0, broken = [];
  Array.prototype.forEach.call(document.images, function (img) {
    if (img.complete && img.naturalWidth > 0) { ok += 1; } else { broken.push(img.alt); }
  });
  document.body.setAttribute("data-images-ok", String(ok));
  document.body.setAttribute("data-images-broken", String(broken.length));
});
</script>
</body></html>
"""


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version(), "platform": platform.platform()}
    for dist in ("modelproof", "torch", "numpy", "scikit-learn", "matplotlib", "jinja2", "ray"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return out


def _fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _sci(value: float | None) -> str:
    return "-" if value is None else f"{value:.1e}"


def _group(title: str, rows: list[dict]) -> dict:
    from .experiment_figures import robustness_curves, roc_figure

    cells = payoff_cells(rows)
    protections = protection_summaries(rows)
    return {"title": title, "attacks": list(dict.fromkeys(c.attack for c in cells)), "protections": protections,
            "cells": {(c.protection, c.attack): c for c in cells}, "by_attack": attack_summaries(rows),
            "special": [r for r in rows if r.get("attack_kind") in ("evasion", "forgery") and r["role"] == "positive"],
            "curves": robustness_curves(rows),
            "roc": roc_figure({p.protection: p.roc for p in protections if p.roc})}


def _key_previews(out: Path, rows: list[dict], show: bool) -> list[tuple[str, str]]:
    """A key-sample grid per protection (its first key in the rows), read from the cached protect result."""
    from .experiment_figures import key_grid

    grids: dict[str, str] = {}
    for r in rows:
        path = out / "cache" / "protect" / f"{r['key_hash']}.json"
        if show and r["protection"] not in grids and path.is_file():
            preview = json.loads(path.read_text()).get("preview")
            if preview:
                grids[r["protection"]] = key_grid(preview)
    return list(grids.items())


def write_report(out: str | Path) -> Path:
    """Write ``out/report.html`` from ``out/results.json`` and the cache; returns its path."""
    try:
        import jinja2
    except ImportError:
        raise ConfigError("the experiment report needs jinja2: pip install 'modelproof[report]'") from None
    out = Path(out)
    if not (out / "results.json").is_file():
        raise ConfigError(f"{out} holds no experiment results (results.json); run `modelproof experiment run` first")
    rows = json.loads((out / "results.json").read_text())
    config_text = (out / "config.toml").read_text() if (out / "config.toml").is_file() else ""
    failures = json.loads((out / "failures.json").read_text()) if (out / "failures.json").is_file() else []
    by_group: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for r in rows:
        by_group[(r["dataset"], r["host"])].append(r)
    import tomllib

    raw = tomllib.loads(config_text) if config_text else {}
    ver = raw.get("verification", {})
    plaus = raw.get("plausibility", {})
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    html = env.from_string(TEMPLATE).render(
        name=raw.get("experiment", {}).get("name", out.name), cells=len({r["config_hash"] for r in rows
                                                                         if r["role"] == "positive"}),
        rows=len(rows), created=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        verification=f"{ver.get('mode', 'fixed')}, alpha {ver.get('alpha', 0.01)}, budget {ver.get('budget', 'none')}",
        rule=", ".join(f"{k} {v}" for k, v in plaus.items()) or "max_drop 0.03",
        groups=[_group(f"{d} / {h}", g) for (d, h), g in by_group.items()], keys=_key_previews(out, rows, raw.get("report", {}).get("show_keys", True)),
        failures=failures, config=config_text, versions=_versions(), fmt=_fmt, sci=_sci)
    path = out / "report.html"
    atomic_write_bytes(path, html.encode())
    return path
