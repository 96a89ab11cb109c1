"""Which rollout events people are told about, and the webhook payloads telling them. Pure.

The reconciler stores each transition with one :class:`~controller.rollout.actions.RecordEvent`;
:func:`notifications` maps such an event, with the state stored after it, to what a webhook
receives:

- ``stage_started``: every Envoy ACKed a stage's weights, its bake begins;
- ``stage_passed``: a stage baked and passed (the controller moves on, or the last one ends
  the rollout);
- ``rollback``: the controller starts setting the candidate to 0% (after a fail verdict, a
  stage deadline, a NACK), and again when the rollout ended at 0% (rolled back, aborted,
  failed);
- ``promotion``: the rollout succeeded: the candidate serves 100%.

Payloads (:func:`render`): ``json`` is :meth:`Notification.to_json`; ``slack`` is what a Slack
incoming webhook accepts, ``{"text": ...}`` in mrkdwn (https://api.slack.com/reference/surfaces/
formatting: ``&``, ``<`` and ``>`` escaped), one summary line and the reason quoted below it.

No I/O and no clock: times come from the events (epoch seconds).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

from controller.policy.rollout_policy import RolloutPolicy
from controller.rollout.actions import RecordEvent
from controller.rollout.machine import CONTROLLER
from controller.rollout.state import Phase, RolloutState

NotificationKind = Literal["stage_started", "stage_passed", "rollback", "promotion"]
NotifyFormat = Literal["json", "slack"]
FORMATS: tuple[NotifyFormat, ...] = ("json", "slack")
"""The payload formats :func:`render` knows."""

ARROW = " → "
"""Separates the phases of a ``RecordEvent.transition`` that changed phase."""

_ENDED_AT_ZERO = frozenset({Phase.ROLLED_BACK, Phase.ABORTED, Phase.FAILED})


@dataclass(frozen=True)
class Notification:
    """One thing to tell people about a rollout.

    Attributes:
        event: what happened (see the module's docstring).
        rollout: the rollout's name.
        route: the route it moves.
        baseline: the baseline cluster.
        candidate: the candidate cluster.
        stage: the stage concerned, 1-based (0: before the first stage).
        stages: how many stages the policy has.
        weight: the candidate's share in percent (0-100) the event concerns: the stage's weight
            (started, passed), 0 (rollback), 100 (promotion).
        phase: the rollout's phase after the event (``progressing``, ``rolling_back``...).
        reason: the transition's reason, for people.
        at: when it happened (epoch seconds).
        details: extra figures (JSON values): ``actor``, ``transition``, and per event
            ``bake_s``/``shadow`` (started), ``next_stage`` (passed), ``cause``/``verdict``/
            the verdict's per-SLO figures (rollback).
    """

    event: NotificationKind
    rollout: str
    route: str
    baseline: str
    candidate: str
    stage: int
    stages: int
    weight: float
    phase: str
    reason: str
    at: float
    details: dict[str, object] = field(default_factory=dict)

    def to_json(self) -> dict[str, object]:
        """The ``json`` payload: every attribute, ``at`` as RFC 3339 (UTC, milliseconds)."""
        return {
            "event": self.event,
            "rollout": self.rollout,
            "route": self.route,
            "baseline": self.baseline,
            "candidate": self.candidate,
            "stage": self.stage,
            "stages": self.stages,
            "weight": self.weight,
            "phase": self.phase,
            "reason": self.reason,
            "at": rfc3339(self.at),
            "details": self.details,
        }


def rfc3339(at: float) -> str:
    """``at`` (epoch seconds) as an RFC 3339 timestamp in UTC: ``2026-11-22T00:25:40.123Z``."""
    stamp = datetime.fromtimestamp(at, UTC).isoformat(timespec="milliseconds")
    return stamp.removesuffix("+00:00") + "Z"


def split_transition(transition: str) -> tuple[str, str]:
    """``"progressing → paused"`` → ``("progressing", "paused")``; one phase ``p`` → ``(p, p)``."""
    old, arrow, new = transition.partition(ARROW)
    return (old, new) if arrow else (old, old)


def notifications(
    name: str, state: RolloutState, policy: RolloutPolicy, event: RecordEvent
) -> list[Notification]:
    """What ``event`` (stored with ``state``, the rollout's state after it) tells people.

    Args:
        name: the rollout's name.
        state: the state stored with the event (the machine's decision).
        policy: the rollout's policy.
        event: one event of the decision.

    Returns:
        Nothing for events people are not notified of (holds, a fail verdict below the failure
        limit, pauses); one notification mostly; ``stage_passed`` then ``promotion`` when the
        last stage passed.
    """
    old, new = split_transition(event.transition)
    stages = policy.spec.stages

    def make(kind: NotificationKind, stage: int, weight: float, **extra: object) -> Notification:
        details: dict[str, object] = {
            "actor": event.actor,
            "transition": event.transition,
            **event.details,
            **extra,
        }
        return Notification(
            event=kind,
            rollout=name,
            route=policy.spec.route,
            baseline=policy.spec.baseline.cluster,
            candidate=policy.spec.candidate.cluster,
            stage=stage + 1,
            stages=len(stages),
            weight=weight,
            phase=str(state.phase),
            reason=event.reason,
            at=event.at,
            details=details,
        )

    if new == Phase.ROLLING_BACK and old != new:
        return [make("rollback", state.stage, state.desired_weight, cause=state.cause)]
    if new in _ENDED_AT_ZERO and old != new:
        extra: dict[str, object] = {"cause": state.cause or "error"}
        if state.last_verdict is not None and state.last_verdict.outcome == "fail":
            extra["verdict"] = state.last_verdict.reason
        return [make("rollback", state.stage, 0.0, **extra)]
    if new == Phase.SUCCEEDED and old != new:
        done = make("promotion", state.stage, 100.0)
        if event.actor != CONTROLLER:  # an operator's promote: no stage passed
            return [done]
        return [make("stage_passed", state.stage, stages[state.stage].weight), done]
    if old != new or state.phase != Phase.PROGRESSING:
        return []
    if (
        not state.awaiting_ack
        and state.stage_started_at == event.at
        and state.last_verdict is None
        and state.stage >= 0
    ):
        # The ACK of the stage's weights: the bake clock starts with this very event (a fail
        # verdict's event keeps the earlier start and records its verdict).
        stage = stages[state.stage]
        return [
            make(
                "stage_started",
                state.stage,
                stage.weight,
                bake_s=stage.bake.total_seconds(),
                shadow=stage.shadow,
            )
        ]
    if (
        event.actor == CONTROLLER
        and state.awaiting_ack
        and state.stage_started_at is None
        and state.push_attempts == 0
        and not state.hold
        and state.stage >= 1
    ):
        # The controller pushes the next stage's weights: only a passed stage does that (a
        # hold counts its attempts and names itself; operators' promotes have their actor).
        return [
            make(
                "stage_passed",
                state.stage - 1,
                stages[state.stage - 1].weight,
                next_stage=state.stage + 1,
            )
        ]
    return []


_TITLES: dict[NotificationKind, str] = {
    "stage_started": ":hourglass_flowing_sand:",
    "stage_passed": ":white_check_mark:",
    "rollback": ":rotating_light:",
    "promotion": ":tada:",
}


def slack_text(n: Notification) -> str:
    """The Slack message: a one-line mrkdwn summary, then the reason as a quote."""
    who = f"*{_escape(n.rollout)}*"
    cand = f"`{_escape(n.candidate)}`"
    route = f"`{_escape(n.route)}`"
    stage = f"stage {n.stage}/{n.stages} ({n.weight:g}%)"
    if n.event == "stage_started":
        line = f"{who}: {stage} started: {cand} gets {n.weight:g}% of route {route}, baking"
    elif n.event == "stage_passed":
        line = f"{who}: {stage} passed on route {route}"
    elif n.event == "promotion":
        line = f"{who}: promoted: {cand} serves 100% of route {route}"
    elif n.phase == Phase.ROLLING_BACK:
        line = f"{who}: rolling back {cand} to 0% on route {route} (cause: {n.details['cause']})"
    else:
        line = f"{who}: {_escape(n.phase.replace('_', ' '))}: {cand} is at 0% on route {route}"
    text = f"{_TITLES[n.event]} {line}"
    reason = n.reason
    if "verdict" in n.details:
        reason += f" (fail verdict: {n.details['verdict']})"
    return f"{text}\n>{_escape(reason)}" if reason else text


def render(n: Notification, fmt: NotifyFormat) -> dict[str, object]:
    """The body to POST (a JSON object) in format ``fmt``.

    Raises:
        ValueError: an unknown format (see :data:`FORMATS`).
    """
    if fmt == "json":
        return n.to_json()
    if fmt == "slack":
        return {"text": slack_text(n)}
    raise ValueError(f"unknown notification format {fmt!r}; known: {', '.join(FORMATS)}")


def _escape(text: str) -> str:
    """Slack's control characters as entities (its formatting reference)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
