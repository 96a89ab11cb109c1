"""The rollout state machine: ``advance(state, policy, input) -> Decision``. Pure.

One rollout moves its route's candidate share through the policy's stages: push a stage's
weights, wait until every Envoy ACKed them (the bake clock starts only then), bake, and leave
the stage only after its bake time *and* a pass verdict given after the bake ended. A fail
verdict (up to the policy's failure limit) or a stage deadline without a pass triggers
``onFailure``: roll back to 0% candidate, or pause. Operators pause, resume, promote, abort
and retry. Envoy rejecting the weights (NACK) rolls back and ends ``failed``, whatever
``onFailure`` says: a configuration Envoy refuses does not get better by waiting.

Guarantees (checked by property tests in ``tests/unit/test_rollout_properties.py``): weights
stay within 0-100%; the desired weight only grows except when rolling back (or on a retry,
which starts again from 0%); rolled back, aborted and failed rollouts end with 0% candidate
ACKed (or no Envoy connected to serve anything else), except a rollout failed because the
controller cannot serve its weights at all (``invalid``: its route or a cluster is not in the
gateway, so nothing of it was ever served, and nothing can be pushed to undo); without an
operator's promote, a stage is never left before its bake time, and never without a pass
verdict; a paused rollout does not move. A push that is never confirmed (ACK timeouts, no Envoy
connected, a NACKed rollback) holds the rollout where it is, pushed again with backoff and
reported in ``hold``: it never promotes.

A first stage at 0% (a shadow stage) is a stage like the others: its weights (100% baseline,
0% candidate) are pushed and ACKed, it bakes and is left on a pass verdict; the route's mirror
to the comparator (tap-compare) is a route option of the progressing and paused phases, served
by the reconciler, so the machine needs nothing of its own for it. A rollback from it pushes
0% again, which ends the mirroring.

The machine never reads a clock and does no I/O: every input carries ``now``; actions say what
to push, what to await and what to record.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Any

from controller.policy.rollout_policy import RolloutPolicy
from controller.policy.units import format_duration
from controller.rollout.actions import (
    VERDICT_DETAIL,
    Action,
    AwaitAck,
    Decision,
    RecordEvent,
    SetWeights,
)
from controller.rollout.inputs import AckResult, Command, Input, Tick, Verdict
from controller.rollout.state import (
    Phase,
    RollbackCause,
    RolloutState,
    VerdictRecord,
)

CONTROLLER = "controller"
"""The actor of transitions the controller makes on its own."""

_END_PHASE: dict[RollbackCause, Phase] = {
    "verdict": Phase.ROLLED_BACK,
    "deadline": Phase.ROLLED_BACK,
    "abort": Phase.ABORTED,
    "error": Phase.FAILED,
}


def start(policy: RolloutPolicy, now: float, actor: str) -> tuple[RolloutState, RecordEvent]:
    """The state of a new rollout (``pending``) and the event recording its creation."""
    state = RolloutState(updated_at=now, reason="created")
    n = len(policy.spec.stages)
    event = RecordEvent(
        at=now,
        actor=actor,
        transition=str(Phase.PENDING),
        reason=(
            f"rollout of route {policy.spec.route!r} from {policy.spec.baseline.cluster} to "
            f"{policy.spec.candidate.cluster} in {n} stage(s): "
            + " → ".join(f"{s.weight:g}%" for s in policy.spec.stages)
        ),
    )
    return state, event


def advance(state: RolloutState, policy: RolloutPolicy, event: Input) -> Decision:
    """The next state of a rollout and the actions it asks for.

    Args:
        state: the current state (as stored).
        policy: the rollout's policy (as recorded when it started).
        event: the time passing, a verdict, a push's outcome, or an operator's command.

    Returns:
        A :class:`Decision`. Stale inputs (a verdict for another stage, the result of an
        earlier push) leave the state unchanged with no action; a command not allowed in the
        current phase is refused (``Decision.refused``) and changes nothing.
    """
    return _Step(state, policy).run(event)


def analysis_due(state: RolloutState, policy: RolloutPolicy, now: float) -> bool:
    """Whether the current stage should be judged now: it is baking (weights ACKed) and an
    analysis interval passed since the last analysis (or the stage's start), or the bake has
    just ended and no analysis covered the whole bake yet."""
    if state.phase != Phase.PROGRESSING or state.awaiting_ack or state.stage_started_at is None:
        return False
    interval = policy.spec.analysis.interval.total_seconds()
    last = state.last_analysis_at
    base = state.stage_started_at if last is None else last
    if now >= base + interval:
        return True
    bake_end = state.stage_started_at + _seconds(policy.spec.stages[state.stage].bake)
    return now >= bake_end and (last is None or last < bake_end)


def next_due(state: RolloutState, policy: RolloutPolicy) -> float | None:
    """The earliest time at which a :class:`Tick` or an analysis could change a baking
    stage (next analysis, bake end, deadline); None when only other inputs can move it."""
    if state.phase != Phase.PROGRESSING or state.awaiting_ack or state.stage_started_at is None:
        return None
    started = state.stage_started_at
    interval = policy.spec.analysis.interval.total_seconds()
    bake_end = started + _seconds(policy.spec.stages[state.stage].bake)
    last = state.last_analysis_at
    times = [(started if last is None else last) + interval, started + _deadline(policy, state)]
    if last is None or last < bake_end:
        times.append(bake_end)
    return min(times)


def describe_stage(policy: RolloutPolicy, index: int) -> str:
    """``"stage 2/4 (5%)"``; ``"stage 1/4 (0%, shadow)"`` for a shadow stage; ``"before stage
    1/4"`` for -1."""
    n = len(policy.spec.stages)
    if index < 0:
        return f"before stage 1/{n}"
    stage = policy.spec.stages[index]
    return f"stage {index + 1}/{n} ({stage.weight:g}%{', shadow' if stage.shadow else ''})"


def _seconds(value: timedelta) -> float:
    return value.total_seconds()


def _deadline(policy: RolloutPolicy, state: RolloutState) -> float:
    return _seconds(policy.stage_deadline(state.stage))


class _Step:
    """One application of an input to a state (a helper object: it keeps the arguments)."""

    def __init__(self, state: RolloutState, policy: RolloutPolicy) -> None:
        self.state = state
        self.policy = policy

    # -- dispatch ---------------------------------------------------------------------------

    def run(self, event: Input) -> Decision:
        if isinstance(event, Command):
            return self._command(event)
        if isinstance(event, AckResult):
            return self._ack(event)
        if isinstance(event, Verdict):
            return self._verdict(event)
        return self._tick(event)

    # -- building decisions -----------------------------------------------------------------

    def _same(self) -> Decision:
        return Decision(state=self.state)

    def _refuse(self, why: str) -> Decision:
        return Decision(state=self.state, refused=why)

    def _to(
        self,
        now: float,
        actor: str,
        reason: str,
        actions: tuple[Action, ...] = (),
        record: bool = True,
        details: dict[str, object] | None = None,
        **changes: Any,
    ) -> Decision:
        """A decision moving to ``state`` with ``changes``, recording an event (unless not
        ``record``) and then the given actions."""
        new = self.state.model_copy(update={**changes, "updated_at": now, "reason": reason})
        events: tuple[Action, ...] = ()
        if record:
            old, cur = self.state.phase, new.phase
            transition = str(cur) if old == cur else f"{old} → {cur}"
            events = (
                RecordEvent(
                    at=now,
                    actor=actor,
                    transition=transition,
                    reason=reason,
                    details=details or {},
                ),
            )
        return Decision(state=new, actions=events + actions, changed=True)

    def _push(
        self,
        now: float,
        actor: str,
        reason: str,
        weight: float,
        details: dict[str, object] | None = None,
        **changes: Any,
    ) -> Decision:
        """Move to a new desired weight: record, then push it and await its ACK."""
        seq = self.state.push_seq + 1
        timeout = _seconds(self.policy.spec.ack_timeout)
        actions: tuple[Action, ...] = (
            SetWeights(seq=seq, weight=weight, envoy_weights=self.policy.envoy_weights(weight)),
            AwaitAck(seq=seq, weight=weight, timeout_s=timeout),
        )
        return self._to(
            now,
            actor,
            reason,
            actions,
            details=details,
            desired_weight=weight,
            awaiting_ack=True,
            push_seq=seq,
            push_attempts=0,
            hold="",
            **changes,
        )

    def _enter_stage(self, now: float, actor: str, index: int, why: str) -> Decision:
        """Push stage ``index``'s weight; its bake starts when every Envoy ACKed it."""
        weight = self.policy.spec.stages[index].weight
        reason = f"{why}: {describe_stage(self.policy, index)}, pushing {weight:g}% to " + (
            f"{self.policy.spec.candidate.cluster}"
        )
        if self.policy.spec.stages[index].shadow:
            reason += " (users stay on the baseline; requests are mirrored for parity)"
        return self._push(
            now,
            actor,
            reason,
            weight,
            phase=Phase.PROGRESSING,
            stage=index,
            stage_started_at=None,
            last_analysis_at=None,
            passes=0,
            failures=0,
            last_verdict=None,
            resume_to=None,
        )

    def _roll_back(
        self, now: float, actor: str, cause: RollbackCause, why: str, details: dict[str, object]
    ) -> Decision:
        reason = f"{why}; setting {self.policy.spec.candidate.cluster} to 0%"
        return self._push(
            now,
            actor,
            reason,
            0.0,
            details=details,
            phase=Phase.ROLLING_BACK,
            cause=cause,
            resume_to=None,
        )

    def _on_failure(
        self, now: float, cause: RollbackCause, why: str, details: dict[str, object]
    ) -> Decision:
        if self.policy.spec.on_failure == "rollback":
            return self._roll_back(now, CONTROLLER, cause, why, details)
        return self._to(
            now,
            CONTROLLER,
            f"{why}; paused (onFailure: pause): resume, promote or abort",
            details=details,
            phase=Phase.PAUSED,
            resume_to=Phase.PROGRESSING,
        )

    # -- the time ---------------------------------------------------------------------------

    def _tick(self, tick: Tick) -> Decision:
        phase = self.state.phase
        if phase == Phase.PENDING:
            return self._enter_stage(tick.now, CONTROLLER, 0, "started")
        if phase == Phase.PROGRESSING:
            return self._progress(tick.now)
        return self._same()

    def _progress(self, now: float) -> Decision:
        """Leave a baked and passed stage, or give up on one past its deadline."""
        s = self.state
        if s.awaiting_ack or s.stage_started_at is None:
            return self._same()
        bake_end = s.stage_started_at + _seconds(self.policy.spec.stages[s.stage].bake)
        verdict = s.last_verdict
        passed = verdict is not None and verdict.outcome == "pass" and verdict.at >= bake_end
        if now >= bake_end and passed:
            return self._promote(now, CONTROLLER, "baked and passed")
        if now >= s.stage_started_at + _deadline(self.policy, s):
            last = f"last verdict: {verdict.outcome}" if verdict else "no verdict"
            if verdict is not None and verdict.reason:
                last += f" ({verdict.reason})"
            why = (
                f"{describe_stage(self.policy, s.stage)} had no pass verdict within its "
                f"deadline of {format_duration(self.policy.stage_deadline(s.stage))} ({last})"
            )
            return self._on_failure(now, "deadline", why, {})
        return self._same()

    def _promote(self, now: float, actor: str, why: str) -> Decision:
        s = self.state
        last = len(self.policy.spec.stages) - 1
        if s.stage >= last:
            return self._to(
                now,
                actor,
                f"{describe_stage(self.policy, s.stage)} {why}: "
                f"{self.policy.spec.candidate.cluster} serves 100%",
                phase=Phase.SUCCEEDED,
                resume_to=None,
            )
        return self._enter_stage(now, actor, s.stage + 1, why)

    # -- verdicts ---------------------------------------------------------------------------

    def _verdict(self, verdict: Verdict) -> Decision:
        s = self.state
        if (
            s.phase != Phase.PROGRESSING
            or verdict.stage != s.stage
            or s.awaiting_ack
            or s.stage_started_at is None
            or verdict.now < s.stage_started_at
        ):
            # Stale: another stage, weights not in place, or judged on a window that began
            # before this bake (a resume restarts it).
            return self._same()
        record = VerdictRecord(
            at=verdict.now,
            outcome=verdict.outcome,
            reason=verdict.reason,
            details=dict(verdict.details),
        )
        analysis = self.policy.spec.analysis
        if verdict.outcome == "fail":
            failures = s.failures + 1
            self.state = s.model_copy(
                update={"last_verdict": record, "last_analysis_at": verdict.now}
            )
            if failures >= analysis.failure_limit:
                why = f"{describe_stage(self.policy, s.stage)} failed: {verdict.reason}"
                self.state = self.state.model_copy(update={"failures": failures})
                return self._on_failure(verdict.now, "verdict", why, dict(verdict.details))
            return self._to(
                verdict.now,
                CONTROLLER,
                f"fail verdict {failures}/{analysis.failure_limit} "
                f"({analysis.failure_counting}): {verdict.reason}",
                details=dict(verdict.details),
                failures=failures,
            )
        changes: dict[str, object] = {
            "last_verdict": record,
            "last_analysis_at": verdict.now,
            "updated_at": verdict.now,
        }
        if verdict.outcome == "pass":
            changes["passes"] = s.passes + 1
            if analysis.failure_counting == "consecutive":
                changes["failures"] = 0
        # A verdict is stored without an event: one every interval would drown the history.
        # Events record what moves; the state keeps the last verdict for status.
        self.state = s.model_copy(update=changes)
        moved = self._progress(verdict.now)
        if moved.changed:
            return _carrying(moved, record)
        return Decision(state=self.state, changed=True)

    # -- push outcomes ----------------------------------------------------------------------

    def _ack(self, result: AckResult) -> Decision:
        s = self.state
        if not s.awaiting_ack or result.seq != s.push_seq or s.phase in _NO_PUSH:
            return self._same()  # stale: a result of an earlier push
        now = result.now
        if result.outcome == "invalid":
            why = f"the controller cannot serve {result.weight:g}%: {result.message}"
            return self._to(
                now,
                CONTROLLER,
                f"{why}; fix the gateway or the policy, then retry",
                phase=Phase.FAILED,
                cause="error",
                awaiting_ack=False,
                resume_to=None,
            )
        if result.outcome in ("acked", "no_nodes") and s.phase == Phase.ROLLING_BACK:
            end = _END_PHASE[s.cause or "error"]
            note = (
                "every Envoy ACKed 0%"
                if result.outcome == "acked"
                else "no Envoy connected; every Envoy that connects gets 0%"
            )
            return self._to(
                now,
                CONTROLLER,
                f"rolled back: {note}",
                phase=end,
                awaiting_ack=False,
                acked_weight=0.0,
                hold="",
            )
        if result.outcome == "acked":
            if s.phase == Phase.PAUSED:
                return self._to(
                    now,
                    CONTROLLER,
                    f"{result.weight:g}% ACKed while paused",
                    awaiting_ack=False,
                    acked_weight=result.weight,
                    hold="",
                )
            bake = format_duration(self.policy.spec.stages[s.stage].bake)
            return self._to(
                now,
                CONTROLLER,
                f"{describe_stage(self.policy, s.stage)} ACKed by every Envoy; baking for {bake}",
                awaiting_ack=False,
                acked_weight=result.weight,
                stage_started_at=now,
                hold="",
            )
        if result.outcome == "nacked" and s.phase != Phase.ROLLING_BACK:
            why = f"Envoy rejected {result.weight:g}% (NACK: {result.message})"
            self.state = s.model_copy(update={"awaiting_ack": False})
            return self._roll_back(now, CONTROLLER, "error", why, {"nack": result.message})
        # Not confirmed (timeout, no Envoy connected, not saved; or a NACK of the rollback):
        # hold, and let the reconciler push again. An event only when the reason changes.
        hold = _hold_reason(result)
        return self._to(
            now,
            CONTROLLER,
            f"holding at {result.weight:g}%: {hold}",
            record=hold != s.hold,
            hold=hold,
            push_attempts=s.push_attempts + 1,
        )

    # -- operator commands ------------------------------------------------------------------

    def _command(self, cmd: Command) -> Decision:
        s = self.state
        why = f"{cmd.kind.replace('_', ' ')} by {cmd.actor}" + (
            f": {cmd.reason}" if cmd.reason else ""
        )
        if cmd.kind == "retry":
            if s.phase not in (Phase.ROLLED_BACK, Phase.ABORTED, Phase.FAILED):
                return self._refuse(
                    f"only a rolled back, aborted or failed rollout can be retried; "
                    f"this one is {s.phase}"
                )
            return self._to(
                cmd.now,
                cmd.actor,
                f"{why}; starting again from stage 1",
                phase=Phase.PENDING,
                stage=-1,
                desired_weight=0.0,
                stage_started_at=None,
                last_analysis_at=None,
                passes=0,
                failures=0,
                last_verdict=None,
                cause=None,
                resume_to=None,
                hold="",
            )
        if s.terminal:
            return self._refuse(f"the rollout has ended ({s.phase})")
        if cmd.kind == "abort":
            if s.phase == Phase.ROLLING_BACK:
                if s.cause == "abort":
                    return self._refuse("the rollout is already being aborted")
                return self._to(
                    cmd.now, cmd.actor, f"{why}; the rollback under way ends aborted", cause="abort"
                )
            return self._roll_back(cmd.now, cmd.actor, "abort", why, {})
        if s.phase == Phase.ROLLING_BACK:
            return self._refuse("the rollout is rolling back; only abort is possible")
        if cmd.kind == "pause":
            if s.phase == Phase.PAUSED:
                return self._refuse("the rollout is already paused")
            return self._to(
                cmd.now,
                cmd.actor,
                f"{why}; weights stay at {s.served_weight or 0:g}%",
                phase=Phase.PAUSED,
                resume_to=s.phase,
            )
        if cmd.kind == "resume":
            if s.phase != Phase.PAUSED:
                return self._refuse(f"only a paused rollout can be resumed; this one is {s.phase}")
            return self._resume(cmd, why)
        return self._operator_promote(cmd, why)

    def _resume(self, cmd: Command, why: str) -> Decision:
        s = self.state
        if s.resume_to == Phase.PENDING or s.stage < 0:
            return self._to(cmd.now, cmd.actor, why, phase=Phase.PENDING, resume_to=None)
        if s.awaiting_ack:
            return self._to(
                cmd.now,
                cmd.actor,
                f"{why}; the bake starts when every Envoy ACKed {s.desired_weight:g}%",
                phase=Phase.PROGRESSING,
                resume_to=None,
            )
        bake = format_duration(self.policy.spec.stages[s.stage].bake)
        return self._to(
            cmd.now,
            cmd.actor,
            f"{why}; {describe_stage(self.policy, s.stage)} bakes again for {bake}",
            phase=Phase.PROGRESSING,
            resume_to=None,
            stage_started_at=cmd.now,
            last_analysis_at=None,
            passes=0,
            failures=0,
            last_verdict=None,
        )

    def _operator_promote(self, cmd: Command, why: str) -> Decision:
        s = self.state
        last = len(self.policy.spec.stages) - 1
        if cmd.kind == "promote_full" and s.stage < last:
            return self._enter_stage(cmd.now, cmd.actor, last, why)
        if s.stage < 0:
            return self._enter_stage(cmd.now, cmd.actor, 0, why)
        if s.stage >= last:
            if s.awaiting_ack:
                return self._refuse(
                    "the last stage's weights are not ACKed yet; promote once every Envoy "
                    "confirmed them (see status)"
                )
            return self._promote(cmd.now, cmd.actor, why)
        return self._enter_stage(cmd.now, cmd.actor, s.stage + 1, why)


_NO_PUSH = frozenset({Phase.PENDING, Phase.SUCCEEDED, Phase.ROLLED_BACK, Phase.ABORTED})


def _hold_reason(result: AckResult) -> str:
    if result.outcome == "timeout":
        return f"not every Envoy ACKed in time{': ' + result.message if result.message else ''}"
    if result.outcome == "no_nodes":
        return "no Envoy connected"
    if result.outcome == "unsaved":
        return f"the weights could not be saved: {result.message}"
    return f"Envoy rejected the rollback weights (NACK: {result.message})"


def _carrying(decision: Decision, verdict: VerdictRecord) -> Decision:
    """``decision`` with ``verdict`` in its first event's details (:data:`VERDICT_DETAIL`):
    the move it caused starts the next stage without a verdict, so the stored state never
    holds the one that ended the stage."""
    events = decision.events
    if not events:
        return decision
    first = events[0]
    carried = replace(
        first, details={**first.details, VERDICT_DETAIL: verdict.model_dump(mode="json")}
    )
    actions = tuple(carried if a is first else a for a in decision.actions)
    return replace(decision, actions=actions)
