"""MetricsAnalyzer: a provider or judge that raises is a failing dependency, never a pass."""

from __future__ import annotations

import time

import pytest

from controller.analysis.providers.base import CustomQuery
from controller.analysis.sli import Sample, SampleResult, SideCounts
from controller.policy.loading import load_policy
from controller.rollout.machine import start
from controller.runtime import analyzer
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


class Quiet:
    async def sample(
        self,
        baseline: str,
        candidate: str,
        start: float,
        end: float,
        custom: tuple[CustomQuery, ...] = (),
    ) -> SampleResult:
        return Sample(start, end, SideCounts(1000.0, 0.0), SideCounts(1000.0, 0.0))

    async def close(self) -> None:
        return None


def _rollout() -> StoredRollout:
    policy = load_policy(POLICY, "p.yaml")
    state, _ = start(policy, time.time(), "t")
    state = state.model_copy(update={"stage": 0, "stage_started_at": time.time() - 10})
    return StoredRollout(
        name="comments",
        route="comments",
        policy=policy,
        source=PolicySource(None, None, False, ""),
        state=state,
        revision=1,
        created_at=time.time() - 20,
    )


async def test_a_raising_provider_gives_an_inconclusive_verdict_naming_it() -> None:
    verdict = await MetricsAnalyzer(Exploding()).judge(_rollout(), time.time())
    assert verdict.outcome == "inconclusive"
    assert "metrics provider failed: RuntimeError: boom" in verdict.reason


async def test_a_raising_judge_holds_the_stage_and_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object, **kwargs: object) -> object:
        raise ZeroDivisionError("float division by zero")

    monkeypatch.setattr(analyzer, "judge", broken)
    verdict = await MetricsAnalyzer(Quiet()).judge(_rollout(), time.time())
    assert verdict.outcome == "inconclusive"
    assert "the judge failed (holding): ZeroDivisionError" in verdict.reason
