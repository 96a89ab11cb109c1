"""MetricsAnalyzer: a provider that raises is a failing dependency, never a pass."""

from __future__ import annotations

import time

from controller.analysis.providers.base import CustomQuery
from controller.analysis.sli import SampleResult
from controller.policy.loading import load_policy
from controller.rollout.machine import start
from controller.runtime.analyzer import MetricsAnalyzer
from controller.store.rollouts import PolicySource, StoredRollout

POLICY = """apiVersion: sluice.dev/v1alpha1
kind: RolloutPolicy
metadata: {name: comments}
spec:
  route: comments
  baseline: {cluster: comments-python}
  candidate: {cluster: comments-go}
"""


class Exploding:
    async def sample(
        self,
        baseline: str,
        candidate: str,
        start: float,
        end: float,
        custom: tuple[CustomQuery, ...] = (),
    ) -> SampleResult:
        raise RuntimeError("boom")

    async def close(self) -> None:
        return None


async def test_a_raising_provider_gives_an_inconclusive_verdict_naming_it() -> None:
    policy = load_policy(POLICY, "p.yaml")
    state, _ = start(policy, time.time(), "t")
    state = state.model_copy(update={"stage": 0, "stage_started_at": time.time() - 10})
    rollout = StoredRollout(
        name="comments",
        route="comments",
        policy=policy,
        source=PolicySource(None, None, False, ""),
        state=state,
        revision=1,
        created_at=time.time() - 20,
    )
    verdict = await MetricsAnalyzer(Exploding()).judge(rollout, time.time())
    assert verdict.outcome == "inconclusive"
    assert "metrics provider failed: RuntimeError: boom" in verdict.reason
