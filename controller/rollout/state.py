"""The state of one rollout: its phase, its stage, the weights asked and confirmed, the verdicts.

Immutable and JSON-serializable (pydantic), so a store can keep it as one document and a
restarted controller resumes exactly where the previous one was. Times are wall-clock seconds
since the epoch, handed in by the caller (the core never reads a clock): a bake clock must
survive a restart, which a monotonic clock does not.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class Phase(StrEnum):
    """Where a rollout is in its life.

    - ``pending``: recorded, no weight moved yet.
    - ``progressing``: at a stage: its weights pushed and awaiting ACK, or baking and judged.
    - ``paused``: held by an operator or by a failure with ``onFailure: pause``; nothing moves.
    - ``succeeded``: the last stage (100% candidate) passed.
    - ``rolling_back``: the candidate is being set to 0% (after a fail verdict, an operator's
      abort, or an error), waiting for the ACK.
    - ``rolled_back``: the candidate is at 0% after a fail verdict or a stage deadline.
    - ``aborted``: the candidate is at 0% after an operator's abort.
    - ``failed``: the candidate is at 0% after an error that is not a verdict (Envoy NACKed the
      weights, or the route no longer fits the gateway); the policy or gateway needs a fix.
    """

    PENDING = "pending"
    PROGRESSING = "progressing"
    PAUSED = "paused"
    SUCCEEDED = "succeeded"
    ROLLING_BACK = "rolling_back"
    ROLLED_BACK = "rolled_back"
    ABORTED = "aborted"
    FAILED = "failed"


TERMINAL: frozenset[Phase] = frozenset(
    {Phase.SUCCEEDED, Phase.ROLLED_BACK, Phase.ABORTED, Phase.FAILED}
)
"""Phases a rollout stays in unless an operator retries it; its route is free again."""

ACTIVE: frozenset[Phase] = frozenset(Phase) - TERMINAL
"""Phases the reconciler drives; a route has at most one rollout in them."""

RollbackCause = Literal["verdict", "deadline", "abort", "error"]
"""Why a rollout rolls back: a fail verdict, a stage deadline without a pass, an operator's
abort, or an error (NACK, the route gone from the gateway). It decides the final phase."""

VerdictOutcome = Literal["pass", "fail", "inconclusive"]


class VerdictRecord(BaseModel):
    """The last verdict of the current stage, as the machine received it.

    Attributes:
        at: when it was given (epoch seconds).
        outcome: pass, fail or inconclusive.
        reason: one line for people (which SLO failed, with its values).
        details: per SLO figures for status (free-form JSON values).
    """

    model_config = ConfigDict(frozen=True)

    at: float
    outcome: VerdictOutcome
    reason: str = ""
    details: dict[str, object] = Field(default_factory=dict)


class RolloutState(BaseModel):
    """One rollout's state; :func:`controller.rollout.machine.advance` derives the next one.

    Attributes:
        phase: see :class:`Phase`.
        stage: index of the current stage in the policy's ``stages``; -1 before the first.
        desired_weight: the candidate's share in percent (0-100) the controller must serve.
        acked_weight: the candidate's share every Envoy last ACKed (None: not known yet).
        awaiting_ack: ``desired_weight`` is to be pushed (or was) and not yet ACKed; the
            reconciler pushes it (again) while this holds.
        stage_started_at: when the stage's weights were ACKed: the bake clock's start.
        last_analysis_at: when the current stage was last judged.
        passes: pass verdicts in the current stage.
        failures: fail verdicts counted toward the failure limit (consecutive or cumulative).
        last_verdict: the current stage's last verdict.
        cause: why the rollout rolls back (set from ``rolling_back`` on).
        resume_to: in ``paused``, the phase ``resume`` returns to (pending or progressing).
        hold: why the rollout is waiting although due to move (no Envoy connected, ACK
            timeout); empty when not held. Events are recorded when it changes, not per retry.
        push_seq: numbers each new weight to push; ACK results carry it, so a late result of
            an earlier push is recognised as stale.
        push_attempts: failed pushes of ``desired_weight`` so far (ACK timeout, no Envoy
            connected, not saved); the reconciler backs off on it.
        reason: the last transition's reason, for people.
        updated_at: when the state last changed.
    """

    model_config = ConfigDict(frozen=True)

    phase: Phase = Phase.PENDING
    stage: int = -1
    desired_weight: float = 0.0
    acked_weight: float | None = None
    awaiting_ack: bool = False
    stage_started_at: float | None = None
    last_analysis_at: float | None = None
    passes: int = 0
    failures: int = 0
    last_verdict: VerdictRecord | None = None
    cause: RollbackCause | None = None
    resume_to: Phase | None = None
    hold: str = ""
    push_seq: int = 0
    push_attempts: int = 0
    reason: str = ""
    updated_at: float = 0.0

    @property
    def terminal(self) -> bool:
        """True in succeeded, rolled_back, aborted and failed."""
        return self.phase in TERMINAL

    @property
    def served_weight(self) -> float | None:
        """The candidate share a controller starting now must serve for this rollout: the one
        awaiting its ACK (it may already be on the wire), else the last ACKed one; None when
        the rollout has not pushed anything (the route keeps its own weights)."""
        if self.awaiting_ack:
            return self.desired_weight
        return self.acked_weight
