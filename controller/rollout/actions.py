"""What a rollout asks of the world: weights to serve, an ACK to await, events to record."""

from __future__ import annotations

from dataclasses import dataclass, field

from controller.rollout.state import RolloutState


@dataclass(frozen=True)
class SetWeights:
    """Serve the candidate share ``weight`` (percent, 0-100) on the rollout's route: push
    number ``seq``.

    ``envoy_weights`` is the route's ``weighted_clusters`` (cluster → weight, summing to
    10,000: see ``controller.policy.rollout_policy.WEIGHT_SCALE``).
    """

    seq: int
    weight: float
    envoy_weights: dict[str, int]


@dataclass(frozen=True)
class AwaitAck:
    """Wait up to ``timeout_s`` seconds for every connected Envoy to ACK push ``seq``
    (``weight``), then feed the outcome back as :class:`~controller.rollout.inputs.AckResult`."""

    seq: int
    weight: float
    timeout_s: float


@dataclass(frozen=True)
class RecordEvent:
    """Append to the rollout's history: ``transition`` (``"progressing → paused"``, or one
    phase when it did not change), who caused it, and why."""

    at: float
    actor: str
    transition: str
    reason: str
    details: dict[str, object] = field(default_factory=dict)


Action = SetWeights | AwaitAck | RecordEvent

VERDICT_DETAIL = "verdict"
"""A :class:`RecordEvent`'s ``details`` key carrying the verdict that caused it (a
:class:`~controller.rollout.state.VerdictRecord` as JSON) when the new state no longer holds
it: the pass that ends a stage is cleared from ``last_verdict`` as the next stage starts, and
the analysis log (``controller.store.analysis_log``) reads it from there."""


@dataclass(frozen=True)
class Decision:
    """The machine's answer to one input.

    Attributes:
        state: the new state (the same object when nothing changed).
        actions: what to do, in order; events are to be stored with the state, atomically.
        changed: the state or the history must be written.
        refused: for a command not allowed in the current phase, why (the state is
            unchanged and nothing is recorded); empty otherwise.
    """

    state: RolloutState
    actions: tuple[Action, ...] = ()
    changed: bool = False
    refused: str = ""

    @property
    def events(self) -> tuple[RecordEvent, ...]:
        """The events among the actions."""
        return tuple(a for a in self.actions if isinstance(a, RecordEvent))

    @property
    def push(self) -> SetWeights | None:
        """The weight change among the actions, if any."""
        return next((a for a in self.actions if isinstance(a, SetWeights)), None)
