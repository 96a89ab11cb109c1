"""How the reconciler gets a verdict on the current stage.

:class:`MetricsAnalyzer` asks a metrics provider (Prometheus, or Envoy's own stats) for both
sides over the stage so far and hands the counts to the pure judge
(:func:`controller.analysis.judge.judge`). Without a metrics provider, :class:`BakeOnlyAnalyzer`
is used: a policy without SLOs (``slos: []``) is gated on bake time alone and passes; a policy
with SLOs gets an inconclusive verdict, so it never promotes without evidence and, at the
stage deadline, follows its ``onFailure``.
"""

from __future__ import annotations

import logging
from typing import Protocol

from controller.analysis.judge import Judgement, judge
from controller.analysis.providers.base import CustomQuery, MetricsProvider, ParitySource
from controller.analysis.providers.parity import read_parity, with_parity
from controller.analysis.sli import NoSample, SampleResult, SideCounts
from controller.policy.rollout_policy import CustomSlo, ParitySlo
from controller.policy.units import format_duration
from controller.rollout.inputs import Verdict
from controller.rollout.machine import describe_stage
from controller.store.rollouts import StoredRollout

log = logging.getLogger(__name__)


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


class MetricsAnalyzer:
    """Judges stages from a metrics provider.

    The stage window is ``[state.stage_started_at + initialDelay, now]`` (the bake clock starts
    at the ACK of the stage's weights, so the window holds only requests served at this
    stage's weights, and ``spec.analysis.initialDelay`` leaves out the first ones, served
    while the side whose share grew warmed up); before it opens the verdict is inconclusive.
    When the baseline served fewer than ``minRequests`` in the stage (at high weights it serves
    almost nothing), the baseline over the rollout so far is the reference.

    A policy with a parity SLO also gets the parity comparator's counts of its route over the
    stage: from ``parity`` when given (the comparator in this process), else from the provider
    (``parity_route``: Prometheus scraping the comparator).
    """

    def __init__(self, provider: MetricsProvider, parity: ParitySource | None = None) -> None:
        self._provider = provider
        self._parity = parity

    async def judge(self, rollout: StoredRollout, now: float) -> Verdict:
        """See :class:`StageAnalyzer`."""
        policy, state = rollout.policy, rollout.state
        spec = policy.spec
        start = state.stage_started_at if state.stage_started_at is not None else now
        start += spec.analysis.initial_delay.total_seconds()
        if now < start:
            return Verdict(
                now=now,
                stage=state.stage,
                outcome="inconclusive",
                reason=f"initial delay: the analysis starts in {start - now:.1f}s"
                f" ({format_duration(spec.analysis.initial_delay)} after the stage's weights"
                " were ACKed)",
                details={"window": {"start": start, "end": now}},
            )
        custom = tuple(
            CustomQuery(slo.name, slo.query)
            for slo in spec.analysis.slos
            if isinstance(slo, CustomSlo)
        )
        baseline, candidate = spec.baseline.cluster, spec.candidate.cluster
        wants_parity = any(isinstance(slo, ParitySlo) for slo in spec.analysis.slos)
        from_provider = spec.route if wants_parity and self._parity is None else None
        reference: SideCounts | None = None
        try:
            sample: SampleResult
            if from_provider is None:  # a provider without parity support still works
                sample = await self._provider.sample(baseline, candidate, start, now, custom)
            else:
                sample = await self._provider.sample(
                    baseline, candidate, start, now, custom, parity_route=from_provider
                )
            if wants_parity and self._parity is not None:
                parity = await read_parity(self._parity, spec.route, start, now)
                sample = with_parity(sample, parity)
            if not isinstance(sample, NoSample) and sample.baseline.requests < (
                spec.analysis.min_requests
            ):
                whole = await self._provider.sample(baseline, candidate, rollout.created_at, now)
                if not isinstance(whole, NoSample):
                    reference = whole.baseline
        except Exception as exc:
            # A provider must not raise; if one does, it is a failing dependency like any
            # other: reported on the rollout, never a pass (and never a breach).
            log.exception("metrics provider failed")
            sample = NoSample("error", f"metrics provider failed: {type(exc).__name__}: {exc}")
        try:
            judgement = judge(policy, state.stage, sample, reference, window_s=now - start)
        except Exception as exc:
            # A bug must not stop the reconciler's loop: the stage holds, and at its deadline
            # onFailure applies, as for any inconclusive verdict.
            log.exception("the judge failed")
            judgement = Judgement(
                "inconclusive", f"the judge failed (holding): {type(exc).__name__}: {exc}"
            )
        details = dict(judgement.details)
        details["window"] = {"start": start, "end": now}
        return Verdict(
            now=now,
            stage=state.stage,
            outcome=judgement.outcome,
            reason=judgement.reason,
            details=details,
        )
