"""The report's plotly figures: the candidate's weight, and each SLO over the rollout. Pure.

Every text taken from data (reasons, transitions, cluster names) is HTML-escaped before it
goes into a figure: plotly.js renders hover text and annotations as a subset of HTML (and
decodes the entities back for display), so an unescaped ``<`` would be markup.

Source: plotly's figure reference (scatter ``line.shape: "hv"`` step lines, layout shapes
with ``yref: "paper"`` for vertical markers).
"""

from __future__ import annotations

from datetime import UTC, datetime
from html import escape
from typing import Any

import plotly.graph_objects as go

from controller.report.data import ReportData, SloSeries, stage_starts, weight_at

OUTCOME_COLOURS = {
    "pass": "#2ca02c",
    "fail": "#d62728",
    "inconclusive": "#ff7f0e",
    "not_judged": "#9e9e9e",
}
"""Marker colour of a verdict outcome (anything else is drawn as ``not_judged``)."""

OUTCOME_SYMBOLS = {"pass": "circle", "fail": "x", "inconclusive": "diamond"}
"""Marker symbol of a verdict outcome (so it does not depend on colour alone)."""

_HEIGHT_PX = 380


def when(epoch_s: float) -> str:
    """Epoch seconds as the UTC date-time string plotly.js reads (``2026-11-22 00:03:38.250``;
    no zone: plotly.js draws dates as given, and the axes say UTC)."""
    return datetime.fromtimestamp(epoch_s, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def weight_figure(data: ReportData) -> go.Figure:
    """The candidate's share over time: desired and ACKed (step lines, percent), a dotted
    line where each stage began, and every decision (history event) as a marker whose hover
    text gives its transition and reason."""
    steps, end = data.steps, data.end
    xs = [when(s.at) for s in steps] + [when(end)]
    desired = [s.desired for s in steps] + [steps[-1].desired if steps else 0.0]
    acked = [s.acked for s in steps] + [steps[-1].acked if steps else None]
    candidate = escape(data.rollout.policy.spec.candidate.cluster)
    fig = go.Figure()
    fig.add_trace(
        go.Scatter(x=xs, y=desired, name=f"{candidate} desired", mode="lines",
                   line={"shape": "hv", "width": 2, "color": "#1f77b4"})
    )  # fmt: skip
    fig.add_trace(
        go.Scatter(x=xs, y=acked, name=f"{candidate} ACKed by every Envoy", mode="lines",
                   line={"shape": "hv", "width": 2, "dash": "dash", "color": "#17becf"})
    )  # fmt: skip
    fig.add_trace(
        go.Scatter(
            x=[when(e.at) for e in data.history],
            y=[weight_at(steps, e.at) for e in data.history],
            name="decisions",
            mode="markers",
            marker={"size": 10, "symbol": "triangle-up", "color": "#444"},
            hovertext=[
                escape(f"#{e.seq} {e.transition} ({e.actor}): {e.reason}") for e in data.history
            ],
            hoverinfo="text+x",
        )
    )
    _stage_lines(fig, data)
    _layout(fig, data, "Candidate weight", "candidate share (%)")
    fig.update_yaxes(range=[-2, 105])
    return fig


def slo_figure(data: ReportData, series: SloSeries) -> go.Figure:
    """One SLO over time: the baseline's and the candidate's value at every analysis, each
    candidate marker coloured (and shaped) by that SLO's verdict, with the fail threshold as a
    horizontal line when known."""
    xs = [when(p.at) for p in series.points]
    unit = f" ({series.unit})" if series.unit else ""
    fig = go.Figure()
    if any(p.baseline is not None for p in series.points):
        baseline = escape(data.rollout.policy.spec.baseline.cluster)
        fig.add_trace(
            go.Scatter(x=xs, y=[p.baseline for p in series.points], name=f"{baseline} (baseline)",
                       mode="lines+markers", line={"color": "#7f7f7f"}, marker={"size": 6})
        )  # fmt: skip
    candidate = escape(data.rollout.policy.spec.candidate.cluster)
    fig.add_trace(
        go.Scatter(
            x=xs,
            y=[p.candidate for p in series.points],
            name=f"{candidate} (candidate)",
            mode="lines+markers",
            line={"color": "#1f77b4"},
            marker={
                "size": 11,
                "color": [OUTCOME_COLOURS.get(p.outcome, "#9e9e9e") for p in series.points],
                "symbol": [OUTCOME_SYMBOLS.get(p.outcome, "square") for p in series.points],
                "line": {"width": 1, "color": "#333"},
            },
            hovertext=[
                escape(f"stage {p.stage + 1}: {p.outcome}: {p.reason}") for p in series.points
            ],
            hoverinfo="text+x+y",
        )
    )  # fmt: skip
    if series.limit is not None:
        fig.add_hline(y=series.limit, line={"dash": "dash", "color": "#d62728", "width": 1},
                      annotation_text="fail threshold", annotation_position="top left")  # fmt: skip
    _stage_lines(fig, data)
    _layout(fig, data, f"{escape(series.title)}{unit}", f"{escape(series.name)}{unit}")
    return fig


def _stage_lines(fig: go.Figure, data: ReportData) -> None:
    stages = len(data.rollout.policy.spec.stages)
    for at, stage in stage_starts(data.steps):
        x = when(at)
        fig.add_shape(type="line", xref="x", yref="paper", x0=x, x1=x, y0=0, y1=1,
                      line={"dash": "dot", "width": 1, "color": "#888"})  # fmt: skip
        fig.add_annotation(x=x, y=1, xref="x", yref="paper", text=f"stage {stage + 1}/{stages}",
                           showarrow=False, xanchor="left", yanchor="bottom",
                           font={"size": 10, "color": "#555"})  # fmt: skip


def _layout(fig: go.Figure, data: ReportData, title: str, y_title: str) -> None:
    """Titles, and one time range for every chart (the rollout's whole life, with 2% margins)
    so they line up one above the other."""
    start, end = data.rollout.created_at, data.end
    pad = max((end - start) * 0.02, 1.0)
    layout: dict[str, Any] = {
        "title": {"text": title},
        "height": _HEIGHT_PX,
        "margin": {"l": 60, "r": 20, "t": 60, "b": 50},
        "template": "plotly_white",
        "hovermode": "closest",
        "legend": {"orientation": "h", "y": -0.2},
        "xaxis": {
            "title": {"text": "time (UTC)"},
            "type": "date",
            "range": [when(start - pad), when(end + pad)],
        },
        "yaxis": {"title": {"text": y_title}},
    }
    fig.update_layout(**layout)
