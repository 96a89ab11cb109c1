"""How the reconciler gets a verdict on the current stage.

The judge against Prometheus or Envoy's stats plugs in here (``controller.analysis``). Until a
metrics provider is configured, :class:`BakeOnlyAnalyzer` is used: a policy without SLOs
(``slos: []``) is gated on bake time alone and passes; a policy with SLOs gets an
inconclusive verdict, so it never promotes without evidence and, at the stage deadline,
follows its ``onFailure``.
"""

from __future__ import annotations

from typing import Protocol

from controller.rollout.inputs import Verdict
from controller.rollout.machine import describe_stage
from controller.store.rollouts import StoredRollout


class StageAnalyzer(Protocol):
    """Judges a rollout's current stage."""

    async def judge(self, rollout: StoredRollout, now: float) -> Verdict:
        """The verdict on ``rollout.state.stage`` over the stage so far (from
        ``state.stage_started_at`` to ``now``, epoch seconds).

        Must not raise for a failing metrics backend: an unreachable backend is an
        inconclusive verdict saying so (never a pass).
        """
        ...


class BakeOnlyAnalyzer:
    """The analyzer without a metrics provider: pass without SLOs, inconclusive with SLOs."""

    async def judge(self, rollout: StoredRollout, now: float) -> Verdict:
        """See :class:`StageAnalyzer`."""
        stage = rollout.state.stage
        where = describe_stage(rollout.policy, stage)
        if not rollout.policy.spec.analysis.slos:
            return Verdict(
                now=now, stage=stage, outcome="pass", reason=f"{where}: no SLOs, bake time only"
            )
        return Verdict(
            now=now,
            stage=stage,
            outcome="inconclusive",
            reason=f"{where}: no metrics provider configured to judge its SLOs",
        )
