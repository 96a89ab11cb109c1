"""How ``sluice demo`` looks: the live view, one line per decision, the outcome as JSON."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

from rich.console import Group, RenderableType
from rich.text import Text

from controller.cli.rolloutview import history_json, rollout_json, status_view
from controller.demo.outcome import DemoOutcome, DemoProgress, failed_slos
from controller.store.rollouts import HistoryEvent


def live_view(progress: DemoProgress) -> RenderableType:
    """The demo's screen: scenario, where things are, traffic as clients see it, and the
    rollout as ``sluice rollout status`` shows it (stage, weights, every SLO's baseline and
    candidate values with its verdict)."""
    scenario = progress.scenario
    head = Text()
    head.append("Sluice demo", style="bold")
    head.append(f" · scenario {scenario.name}: {scenario.story}")
    lines: list[RenderableType] = [head]
    for note in progress.notes:
        lines.append(Text(f"note: {note}", style="yellow"))
    judge = progress.urls.get("prometheus", "Envoy's /stats/prometheus")
    lines.append(Text(f"judge    {progress.provider} ({judge})"))
    if "gateway" in progress.urls:
        lines.append(Text(f"try      curl {progress.urls['gateway']}"))
    lines.append(Text(f"logs     {progress.workdir}"))
    lines.append(Text(f"now      {progress.step}", style="bold cyan"))
    if progress.load is not None:
        lines.append(_traffic(progress))
    if progress.rollout is not None:
        # No history table: each decision is printed above the view as it happens.
        lines.append(status_view(progress.rollout, [], time.time()))
    return Group(*lines)


def _traffic(progress: DemoProgress) -> Text:
    load = progress.load
    assert load is not None
    recent = progress.recent_by_upstream
    total_recent = sum(recent.values()) or 1
    split = ", ".join(f"{name} {n / total_recent:.0%}" for name, n in sorted(recent.items()))
    errors = load.server_errors
    share = errors / load.replies if load.replies else 0.0
    text = Text(f"traffic  {progress.recent_rate:.0f} req/s (last 5 s: {split or '-'}); ")
    text.append(f"{load.replies:,} replies, {errors:,} 5xx ({share:.2%})")
    if load.transport_errors:
        text.append(f", {load.transport_errors:,} without reply", style="red")
    if load.skipped:
        text.append(f", {load.skipped:,} not sent (the machine fell behind)", style="yellow")
    return text


def event_line(event: HistoryEvent) -> str:
    """One decision, as it happens: time, actor, transition, reason."""
    at = datetime.fromtimestamp(event.at).strftime("%H:%M:%S")
    return f"{at}  {event.actor}  {event.transition}: {event.reason}"


def outcome_json(outcome: DemoOutcome) -> dict[str, Any]:
    """The demo's outcome: the scenario and what it expected, the rollout's end (phase,
    reason, cause, stage), the figures behind the last decision (every SLO's verdict with its
    baseline and candidate values), its history, what the clients received, the weights Envoy
    applied at the end and the requests it sent each side, the report's path, the work
    directory and the processes run.

    Units as in ``sluice rollout status -o json``: weights in percent, times in epoch seconds
    (``*_at``), durations in seconds (``*_s``).
    """
    progress = outcome.progress
    scenario = progress.scenario
    rollout = progress.rollout
    status = rollout_json(rollout, time.time()) if rollout is not None else None
    return {
        "scenario": scenario.name,
        "expected": {"phase": scenario.expected_phase, "failed_slo": scenario.expected_slo},
        "as_expected": outcome.as_expected,
        "phase": outcome.phase,
        "reason": None if rollout is None else rollout.state.reason,
        "rollback_cause": None if rollout is None else rollout.state.cause,
        "failed_slos": [] if rollout is None else failed_slos(rollout),
        "decision": None if status is None else status["last_verdict"],
        "rollout": status,
        "history": [history_json(e) for e in progress.events],
        "load": None if progress.load is None else progress.load.as_json(),
        "envoy_weights": outcome.envoy_weights,
        "envoy_requests": outcome.envoy_requests,
        "provider": progress.provider,
        "notes": progress.notes,
        "report": None if outcome.report is None else str(outcome.report),
        "report_error": outcome.report_error,
        "workdir": str(progress.workdir),
        "duration_s": round(outcome.duration_s, 1),
        "processes": outcome.processes,
    }


def error_json(progress: DemoProgress, error: str) -> dict[str, Any]:
    """The document ``-o json`` prints when the demo could not finish (a part did not start
    or died, the rollout outlived ``--timeout``): the error, and the rollout and the traffic
    as far as they went."""
    scenario, rollout = progress.scenario, progress.rollout
    return {
        "scenario": scenario.name,
        "expected": {"phase": scenario.expected_phase, "failed_slo": scenario.expected_slo},
        "as_expected": False,
        "phase": "error" if rollout is None else str(rollout.state.phase),
        "error": error,
        "step": progress.step,
        "rollout": None if rollout is None else rollout_json(rollout, time.time()),
        "history": [history_json(e) for e in progress.events],
        "load": None if progress.load is None else progress.load.as_json(),
        "provider": progress.provider,
        "workdir": str(progress.workdir),
    }


def outcome_view(outcome: DemoOutcome) -> RenderableType:
    """The last lines of the demo in table mode: how it ended and where the report is."""
    data = outcome_json(outcome)
    style = "bold green" if outcome.as_expected else "bold red"
    lines: list[RenderableType] = []
    verdict = "as the scenario expects" if outcome.as_expected else "NOT as the scenario expects"
    lines.append(
        Text(f"rollout {data['phase']} in {data['duration_s']:g} s, {verdict}", style=style)
    )
    if data["reason"]:
        lines.append(Text(f"reason   {data['reason']}"))
    applied = data["envoy_weights"]
    if applied:
        total = sum(applied.values()) or 1  # Envoy's weights are relative to their sum
        weights = ", ".join(f"{k} {v / total:.0%}" for k, v in applied.items())
        lines.append(Text(f"Envoy    applies {weights} (its /config_dump)"))
    if outcome.report is not None:
        lines.append(Text(f"report   {outcome.report}", style="bold"))
    else:
        lines.append(Text(f"report   not written: {outcome.report_error}", style="red"))
    lines.append(Text(f"logs     {data['workdir']}"))
    return Group(*lines)
