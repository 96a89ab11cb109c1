"""The report's HTML page: one self-contained file (plotly.js inline, no network). Pure.

Sections, each with an ``id`` a test can find: ``summary``, ``chart-weight``, one
``chart-slo-<n>`` per SLO of the policy (policy order), ``decisions`` (every history event),
``analyses`` (every verdict), ``parity`` (the comparator's mismatch samples, or why there are
none). Every text taken from data is HTML-escaped (:func:`html.escape`).
"""

from __future__ import annotations

import json
from html import escape
from typing import Any

import plotly.graph_objects as go

from controller.policy.rollout_policy import slo_name
from controller.report.charts import slo_figure, weight_figure, when
from controller.report.data import ReportData, slo_series
from controller.rollout.machine import describe_stage

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }
h1 { margin-bottom: 0.2em; } .muted { color: #666; }
table { border-collapse: collapse; width: 100%; margin: 0.5em 0 1.5em; font-size: 0.92em; }
th, td { border: 1px solid #ddd; padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #f4f4f4; } table.summary th { width: 12em; }
pre { white-space: pre-wrap; word-break: break-all; margin: 0; font-size: 0.9em; }
.outcome-pass { color: #2ca02c; } .outcome-fail { color: #d62728; }
.outcome-inconclusive { color: #ff7f0e; }
.phase { font-weight: bold; } .chart { margin-bottom: 1.5em; }
"""


def render(data: ReportData) -> str:
    """The whole HTML document of ``data`` (UTF-8 text)."""
    r = data.rollout
    charts = [("chart-weight", weight_figure(data))]
    for index, series in enumerate(slo_series(r.policy.spec.analysis.slos, data.analyses)):
        charts.append((f"chart-slo-{index + 1}", slo_figure(data, series)))
    body = [
        f"<h1>Rollout {_e(r.name)}</h1>",
        f'<p class="muted">report made {_e(_time(data.generated_at))} UTC by Sluice</p>',
        _summary(data),
        "<h2>Weights and SLOs</h2>",
        *(_chart(div_id, fig, first=i == 0) for i, (div_id, fig) in enumerate(charts)),
        _decisions(data),
        _analyses(data),
        _parity(data),
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>Sluice rollout {_e(r.name)}</title><style>{_STYLE}</style></head>\n<body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )


def _chart(div_id: str, fig: go.Figure, first: bool) -> str:
    html: str = fig.to_html(
        full_html=False,
        include_plotlyjs=first,  # plotly.js inline once, before the first chart
        div_id=div_id,
        config={"displaylogo": False, "responsive": True},
    )
    return f'<div class="chart" data-chart="{div_id}">{html}</div>'


def _summary(data: ReportData) -> str:
    r, s = data.rollout, data.rollout.state
    spec = r.policy.spec
    source = r.source.path or "(not from a file)"
    if r.source.git_commit:
        source += f" @ {r.source.git_commit[:12]}" + (" (modified)" if r.source.git_dirty else "")
    stages = ", ".join(describe_stage(r.policy, i) for i in range(len(spec.stages)))
    rows = [
        ("route", spec.route),
        ("baseline", spec.baseline.cluster),
        ("candidate", spec.candidate.cluster),
        ("policy", f"{r.policy.metadata.name} from {source}"),
        ("stages", stages),
        ("SLOs", ", ".join(slo_name(slo) for slo in spec.analysis.slos) or "none"),
        ("outcome", str(s.phase)),
        ("reason", s.reason),
        ("started", f"{_time(r.created_at)} UTC"),
        ("last change", f"{_time(s.updated_at)} UTC"),
    ]
    cells = "".join(
        f"<tr><th>{k}</th><td{' class=phase' if k == 'outcome' else ''}>{_e(v)}</td></tr>"
        for k, v in rows
    )
    return f'<h2>Summary</h2><table class="summary" id="summary">{cells}</table>'


def _decisions(data: ReportData) -> str:
    rows = "".join(
        f'<tr data-seq="{e.seq}"><td>{e.seq}</td><td>{_e(_time(e.at))}</td><td>{_e(e.actor)}</td>'
        f"<td>{_e(e.transition)}</td><td>{_e(e.reason)}</td><td>{_json(e.details)}</td></tr>"
        for e in data.history
    )
    head = "<tr><th>#</th><th>time (UTC)</th><th>actor</th><th>transition</th><th>reason</th>"
    return f'<h2>Decisions</h2><table id="decisions">{head}<th>details</th></tr>{rows}</table>'


def _analyses(data: ReportData) -> str:
    if not data.analyses:
        return '<h2>Analyses</h2><p id="analyses">No analysis was recorded.</p>'
    rows = "".join(
        f"<tr><td>{_e(_time(p.at))}</td><td>{p.stage + 1}</td><td>{p.weight:g}%</td>"
        f'<td class="outcome-{_e(p.outcome)}">{_e(p.outcome)}</td><td>{_e(p.reason)}</td></tr>'
        for p in data.analyses
    )
    head = "<tr><th>time (UTC)</th><th>stage</th><th>weight</th><th>verdict</th><th>reason</th>"
    return f'<h2>Analyses</h2><table id="analyses">{head}</tr>{rows}</table>'


def _parity(data: ReportData) -> str:
    samples = data.parity_samples
    if not samples:
        note = data.parity_note or "The comparator had no mismatch samples for this route."
        return f'<h2>Parity mismatch samples</h2><p id="parity">{_e(note)}</p>'
    count = f"<p>{len(samples)} samples, newest last.</p>"
    parts = [f'<h2>Parity mismatch samples</h2><div id="parity">{count}']
    for sample in samples:
        paths = ", ".join(str(p) for p in sample.get("paths") or []) or "(status or headers)"
        parts.append(
            f'<table class="sample"><tr><th colspan="2">{_e(_time(_float(sample.get("at"))))} UTC '
            f"{_e(sample.get('method', ''))} {_e(sample.get('url', ''))}: differs at {_e(paths)}"
            f"</th></tr><tr><th>baseline</th><th>candidate</th></tr><tr>"
            f"<td>{_reply(sample.get('primary'))}</td><td>{_reply(sample.get('candidate'))}</td>"
            "</tr></table>"
        )  # fmt: skip
    parts.append("</div>")
    return "".join(parts)


def _reply(reply: object) -> str:
    if not isinstance(reply, dict):
        return "<pre>(no reply)</pre>"
    return f"<pre>HTTP {_e(reply.get('status', '?'))}\n\n{_e(reply.get('body', ''))}</pre>"


def _json(details: dict[str, Any]) -> str:
    if not details:
        return ""
    text = json.dumps(details, indent=1, sort_keys=True, default=str)
    return f"<details><summary>figures</summary><pre>{_e(text)}</pre></details>"


def _e(value: object) -> str:
    return escape(str(value), quote=True)


def _float(value: object) -> float:
    return float(value) if isinstance(value, int | float) else 0.0


def _time(epoch_s: float) -> str:
    return when(epoch_s)
