"""What a rollout report shows, derived from the store's records. Pure (no I/O, no clock).

Units: times are epoch seconds; weights percent (0-100); latency in milliseconds; error rate
and parity match rate in percent (the verdicts keep rates as ratios 0-1, see
:class:`controller.analysis.verdicts.SloVerdict`; parity's ``candidate`` is the mismatch
rate, shown here as its complement, the match rate).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from controller.policy.rollout_policy import (
    CustomSlo,
    ErrorRateSlo,
    LatencySlo,
    ParitySlo,
    slo_name,
)
from controller.store.rollouts import AnalysisPoint, HistoryEvent, StoredRollout, WeightStep

Slo = LatencySlo | ErrorRateSlo | ParitySlo | CustomSlo


@dataclass(frozen=True)
class ReportData:
    """Everything one report shows.

    Attributes:
        rollout: the rollout as stored now.
        history: its decisions (history events), oldest first.
        analyses: its analysis log (every verdict with its figures), oldest first.
        steps: its weight, stage and phase changes, oldest first.
        parity_samples: the comparator's mismatch samples for the route (``samples`` of
            ``GET /v1/parity/routes/{route}``, newest last), or None when not available.
        parity_note: why there are no samples (shown when ``parity_samples`` is None or empty).
        generated_at: when the report was made (epoch seconds).
    """

    rollout: StoredRollout
    history: list[HistoryEvent]
    analyses: list[AnalysisPoint]
    steps: list[WeightStep]
    parity_samples: list[dict[str, Any]] | None
    parity_note: str
    generated_at: float

    @property
    def end(self) -> float:
        """The chart's right edge: the last thing recorded (or the creation time)."""
        times = [self.rollout.created_at, self.rollout.state.updated_at]
        times += [e.at for e in self.history] + [p.at for p in self.analyses]
        times += [s.at for s in self.steps]
        return max(times)


def current_only(data: ReportData) -> ReportData:
    """``data`` without what an earlier rollout of the same name recorded (a reused name
    continues its history and log): only entries at or after the rollout's creation."""
    since = data.rollout.created_at
    return ReportData(
        rollout=data.rollout,
        history=[e for e in data.history if e.at >= since],
        analyses=[p for p in data.analyses if p.at >= since],
        steps=[s for s in data.steps if s.at >= since],
        parity_samples=data.parity_samples,
        parity_note=data.parity_note,
        generated_at=data.generated_at,
    )


@dataclass(frozen=True)
class SloPoint:
    """One analysis of one SLO: ``baseline`` and ``candidate`` in the SLO's display unit
    (None: not known), the SLO's own outcome (``pass``, ``fail``, ``inconclusive``, or
    ``not_judged`` at a shadow stage) and its reason."""

    at: float
    stage: int
    baseline: float | None
    candidate: float | None
    outcome: str
    reason: str


@dataclass(frozen=True)
class SloSeries:
    """One SLO of the policy over the rollout: ``title`` and ``unit`` for the chart, and
    ``limit`` (the fail threshold of the last analysis that had one, display unit)."""

    name: str
    title: str
    unit: str
    points: list[SloPoint]
    limit: float | None


def slo_series(slos: tuple[Slo, ...], analyses: list[AnalysisPoint]) -> list[SloSeries]:
    """One :class:`SloSeries` per SLO of the policy, in policy order, from the analysis log
    (a point per analysis whose ``details["slos"]`` has the SLO; an analysis without figures,
    e.g. no data, gives a point with no values and the verdict's outcome)."""
    out = []
    for slo in slos:
        name = slo_name(slo)
        title, unit, scale = _display(slo)
        points, limit = [], None
        for point in analyses:
            figures = _figures(point, name)
            if figures is None:
                points.append(SloPoint(point.at, point.stage, None, None, point.outcome, ""))
                continue
            baseline = scale(_number(figures.get("baseline")))
            candidate = scale(_number(figures.get("candidate")))
            if isinstance(slo, ParitySlo):
                baseline = None  # parity compares the candidate to the baseline itself
            limit = scale(_number(figures.get("threshold"))) if "threshold" in figures else limit
            outcome = str(figures.get("outcome", point.outcome))
            reason = str(figures.get("reason", ""))
            points.append(SloPoint(point.at, point.stage, baseline, candidate, outcome, reason))
        out.append(SloSeries(name, title, unit, points, limit))
    return out


def _display(slo: Slo) -> tuple[str, str, Any]:
    """(title, unit, conversion from the verdict's unit) of an SLO."""
    if isinstance(slo, LatencySlo):
        quantile = slo.metric.removeprefix("latency_")
        return f"{quantile} latency", "ms", _same
    if isinstance(slo, ErrorRateSlo):
        return "error rate", "%", _percent
    if isinstance(slo, ParitySlo):
        return "parity match rate", "%", _match_percent
    return f"{slo.name} (custom)", "", _same


def _same(value: float | None) -> float | None:
    return value


def _percent(value: float | None) -> float | None:
    return None if value is None else value * 100.0


def _match_percent(value: float | None) -> float | None:
    return None if value is None else (1.0 - value) * 100.0


def _figures(point: AnalysisPoint, name: str) -> dict[str, Any] | None:
    slos = point.details.get("slos")
    if not isinstance(slos, dict):
        return None
    figures = slos.get(name)
    return figures if isinstance(figures, dict) else None


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def weight_at(steps: list[WeightStep], at: float) -> float:
    """The desired candidate weight (percent) in force at ``at``: the last step at or before
    it (0 before the first)."""
    weight = 0.0
    for step in steps:
        if step.at > at:
            break
        weight = step.desired
    return weight


def stage_starts(steps: list[WeightStep]) -> list[tuple[float, int]]:
    """``(at, stage)`` where each stage began (its weights were first asked for)."""
    out: list[tuple[float, int]] = []
    for step in steps:
        if step.stage >= 0 and (not out or out[-1][1] != step.stage):
            out.append((step.at, step.stage))
    return out
