"""What moves a rollout: the time, verdicts, ACK results and operator commands.

Every input carries ``now`` (wall-clock epoch seconds, handed in by the caller).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from controller.rollout.state import VerdictOutcome


@dataclass(frozen=True)
class Tick:
    """Time passed: bakes may have ended, deadlines may have passed, a pending rollout starts."""

    now: float


@dataclass(frozen=True)
class Verdict:
    """The judge's verdict on stage ``stage`` (an index into the policy's stages).

    A verdict for another stage than the current one, or given while the stage's weights await
    their ACK, is stale and ignored.
    """

    now: float
    stage: int
    outcome: VerdictOutcome
    reason: str = ""
    details: dict[str, object] = field(default_factory=dict)


AckKind = Literal["acked", "nacked", "timeout", "no_nodes", "invalid", "unsaved"]
"""How a weight push ended: every Envoy ACKed it; one NACKed it (Envoy rejected the
configuration; the controller serves the last good weights again); not every ACK came in
time; no Envoy was connected; the controller refused the weights (``invalid``: the route or a
cluster is not in the gateway); or they could not be saved durably (``unsaved``: nothing was
served)."""


@dataclass(frozen=True)
class AckResult:
    """The outcome of push number ``seq`` (the candidate share ``weight``, percent).

    A result for another push than the one the state awaits is stale and ignored.
    """

    now: float
    seq: int
    weight: float
    outcome: AckKind
    message: str = ""


CommandKind = Literal["pause", "resume", "promote", "promote_full", "abort", "retry"]


@dataclass(frozen=True)
class Command:
    """An operator's command.

    - ``pause``: hold the rollout where it is (weights stay).
    - ``resume``: continue a paused rollout; the stage's bake starts again.
    - ``promote``: leave the current stage now, without waiting for its bake or a verdict.
    - ``promote_full``: go straight to 100% candidate (the last stage).
    - ``abort``: set the candidate to 0% and stop (phase ``aborted``).
    - ``retry``: start a rolled back, aborted or failed rollout again from its first stage.
    """

    now: float
    kind: CommandKind
    actor: str
    reason: str = ""


Input = Tick | Verdict | AckResult | Command
