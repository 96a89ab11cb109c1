"""How rollouts look in the CLI: JSON documents for scripts and a rich view for people.

The JSON shape (``sluice rollout status -o json``) is stable for scripts: snake_case keys,
weights in percent of the route's requests, times in epoch seconds (``*_at``) and durations in
seconds (``*_s``).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from controller.policy.units import format_duration
from controller.store.rollouts import HistoryEvent, StoredRollout


def _utc(at: float | None) -> str:
    if at is None:
        return "-"
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M:%S")


def rollout_json(rollout: StoredRollout, now: float) -> dict[str, Any]:
    """A rollout as JSON: identity, phase, stage, weights, bake clock, last verdict, source.

    ``stage`` is 1-based (0 before the first stage); ``weights`` are the desired split in
    percent; ``in_effect`` is true when every Envoy ACKed them; ``bake_left_s`` counts down
    from the ACK of the stage's weights.
    """
    state, policy = rollout.state, rollout.policy
    stages = policy.spec.stages
    stage = state.stage
    bake: dict[str, Any] | None = None
    if stage >= 0 and state.stage_started_at is not None:
        bake_s = stages[stage].bake.total_seconds()
        ends = state.stage_started_at + bake_s
        bake = {
            "started_at": state.stage_started_at,
            "bake_s": bake_s,
            "ends_at": ends,
            "left_s": round(max(0.0, ends - now), 1),
            "deadline_at": state.stage_started_at + policy.stage_deadline(stage).total_seconds(),
        }
    verdict = state.last_verdict
    return {
        "name": rollout.name,
        "route": rollout.route,
        "baseline": policy.spec.baseline.cluster,
        "candidate": policy.spec.candidate.cluster,
        "phase": str(state.phase),
        "stage": stage + 1,
        "stages": len(stages),
        "stage_weights": [s.weight for s in stages],
        "weights": {"candidate": state.desired_weight, "baseline": 100 - state.desired_weight},
        "acked_candidate_weight": state.acked_weight,
        "in_effect": not state.awaiting_ack and state.acked_weight == state.desired_weight,
        "awaiting_ack": state.awaiting_ack,
        "hold": state.hold or None,
        "bake": bake,
        "passes": state.passes,
        "failures": state.failures,
        "failure_limit": policy.spec.analysis.failure_limit,
        "last_verdict": None
        if verdict is None
        else {
            "at": verdict.at,
            "outcome": verdict.outcome,
            "reason": verdict.reason,
            "details": verdict.details,
        },
        "rollback_cause": state.cause,
        "on_failure": policy.spec.on_failure,
        "reason": state.reason,
        "updated_at": state.updated_at,
        "created_at": rollout.created_at,
        "age_s": round(now - rollout.created_at, 1),
        "revision": rollout.revision,
        "policy": {
            "name": policy.metadata.name,
            "path": rollout.source.path,
            "git_commit": rollout.source.git_commit,
            "git_dirty": rollout.source.git_dirty,
        },
    }


def history_json(event: HistoryEvent) -> dict[str, Any]:
    """One history event as JSON (``time`` is UTC, for people; ``at`` epoch seconds)."""
    return {
        "seq": event.seq,
        "at": event.at,
        "time": _utc(event.at),
        "actor": event.actor,
        "transition": event.transition,
        "reason": event.reason,
        "details": event.details,
    }


_PHASE_STYLE = {
    "succeeded": "bold green",
    "progressing": "bold cyan",
    "paused": "bold yellow",
    "pending": "bold",
    "rolling_back": "bold red",
    "rolled_back": "bold red",
    "aborted": "bold red",
    "failed": "bold red",
}


def status_view(rollout: StoredRollout, events: list[HistoryEvent], now: float) -> RenderableType:
    """The live/one-shot view of ``sluice rollout status``."""
    data = rollout_json(rollout, now)
    head = Text()
    head.append(f"{data['name']}  ", style="bold")
    head.append(data["phase"], style=_PHASE_STYLE.get(data["phase"], ""))
    head.append(
        f"   route {data['route']}: {data['baseline']} → {data['candidate']}"
        f"   policy {data['policy']['path'] or '-'}"
        f" @ {(data['policy']['git_commit'] or 'not in git')[:12]}"
        + (" (modified)" if data["policy"]["git_dirty"] else "")
    )
    stages = Text("stages  ")
    for i, weight in enumerate(data["stage_weights"], start=1):
        style = "bold reverse" if i == data["stage"] else ("green" if i < data["stage"] else "dim")
        stages.append(f" {weight:g}% ", style=style)
        stages.append(" ")
    weights = data["weights"]
    split = Text(
        f"weights  {data['candidate']} {weights['candidate']:g}%  "
        f"{data['baseline']} {weights['baseline']:g}%  "
    )
    if data["in_effect"]:
        split.append("(ACKed by every Envoy)", style="green")
    elif data["awaiting_ack"]:
        split.append("(waiting for Envoy's ACK)", style="yellow")
    if data["hold"]:
        split.append(f"  held: {data['hold']}", style="yellow")
    lines: list[RenderableType] = [head, stages, split]
    bake = data["bake"]
    if bake is not None and data["phase"] == "progressing":
        left = bake["left_s"]
        lines.append(
            Text(
                f"bake     {format_duration_s(bake['bake_s'])}, "
                + (f"{format_duration_s(left)} left" if left > 0 else "done")
                + f"; deadline {_utc(bake['deadline_at'])} UTC"
            )
        )
    verdict = data["last_verdict"]
    verdict_line = Text("verdict  ")
    if verdict is None:
        verdict_line.append("none yet in this stage", style="dim")
    else:
        style = {"pass": "green", "fail": "red"}.get(verdict["outcome"], "yellow")
        verdict_line.append(verdict["outcome"], style=style)
        verdict_line.append(
            f" at {_utc(verdict['at'])} UTC: {verdict['reason'] or '-'}"
            f"  (failures {data['failures']}/{data['failure_limit']})"
        )
    lines.append(verdict_line)
    slos = (verdict or {}).get("details", {}).get("slos") if verdict else None
    if isinstance(slos, dict) and slos:
        lines.append(slo_table(slos))
    lines.append(Text(f"reason   {data['reason']}"))
    if events:
        table = Table(title="recent history", title_justify="left", show_edge=False)
        for column in ("time (UTC)", "actor", "transition", "reason"):
            table.add_column(column)
        for event in events:
            table.add_row(_utc(event.at), event.actor, event.transition, event.reason)
        lines.append(table)
    return Group(*lines)


def format_duration_s(seconds: float) -> str:
    """Seconds as a duration the way files write it (``90.5`` → ``"90.5s"``)."""
    return format_duration(timedelta(seconds=round(seconds, 1)))


def _value(name: str, value: object) -> str:
    if not isinstance(value, int | float):
        return "-"
    if name.startswith("latency"):
        return f"{value:g} ms"
    if name in ("error_rate", "parity"):
        return f"{value:.3%}"
    return f"{value:g}"


def _limit(name: str, value: object) -> str:
    if not isinstance(value, int | float):
        return "-"
    return f"{value:g} ms" if name.startswith("latency") else f"{value:.3%}"


def _requests(figures: dict[str, Any]) -> str:
    """``baseline/candidate`` requests; for parity, the requests the comparator compared."""
    if "compared" in figures:  # parity: the candidate's value is a share of compared requests
        noisy = figures.get("noisy") or 0
        return f"{figures['compared'] or 0:.0f} compared" + (
            f", {noisy:.0f} noisy" if noisy else ""
        )
    return (
        f"{figures.get('baseline_requests', 0):.0f}/{figures.get('candidate_requests', 0):.0f}"
        + (" (ref)" if figures.get("reference") else "")
    )


def slo_table(slos: dict[str, Any]) -> Table:
    """Every SLO of the last verdict: values, drift, the fail and pass limits tested,
    confidence, requests (parity: the mismatch rate, its limit both ways, the requests
    compared). An SLO a shadow stage does not judge shows ``not judged`` and no figures."""
    table = Table(title="SLOs (last analysis)", title_justify="left", show_edge=False)
    for column in (
        "SLO",
        "verdict",
        "baseline",
        "candidate",
        "drift",
        "fail above",
        "pass below",
        "confidence",
        "requests b/c",
    ):
        table.add_column(column)
    for name, figures in slos.items():
        outcome = str(figures.get("outcome", "-"))
        if outcome == "not judged":
            table.add_row(name, Text(outcome, style="dim"), *["-"] * 7)
            continue
        style = {"pass": "green", "fail": "red"}.get(outcome, "yellow")
        drift = figures.get("drift")
        table.add_row(
            name,
            Text(outcome, style=style),
            _value(name, figures.get("baseline")),
            _value(name, figures.get("candidate")),
            f"{drift:+.1%}" if isinstance(drift, int | float) else "-",
            _limit(name, figures.get("threshold")),
            _limit(name, figures.get("pass_threshold")),
            f"{figures.get('confidence', 0):.4f}",
            _requests(figures),
        )
    return table
