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
    """1,000 requests a side, no error; keeps the windows it was asked for."""

    def __init__(self) -> None:
        self.windows: list[tuple[float, float]] = []

    async def sample(
        self,
        baseline: str,
        candidate: str,
        start: float,
        end: float,
        custom: tuple[CustomQuery, ...] = (),
    ) -> SampleResult:
        self.windows.append((start, end))
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


def _delayed(delay: str, acked_at: float) -> StoredRollout:
    policy = load_policy(POLICY + f"  analysis: {{initialDelay: {delay}}}\n", "p.yaml")
    rollout = _rollout()
    state = rollout.state.model_copy(update={"stage_started_at": acked_at})
    return StoredRollout(
        name=rollout.name,
        route=rollout.route,
        policy=policy,
        source=rollout.source,
        state=state,
        revision=1,
        created_at=acked_at - 20,
    )


async def test_the_initial_delay_holds_the_verdict_and_then_opens_the_window_after_it() -> None:
    provider = Quiet()
    acked_at = 1_000_000.0
    rollout = _delayed("3s", acked_at)
    early = await MetricsAnalyzer(provider).judge(rollout, acked_at + 2.0)
    assert early.outcome == "inconclusive"
    assert "initial delay" in early.reason
    assert "1.0s" in early.reason
    assert provider.windows == []  # nothing asked: no request of the first 3 s may count
    later = await MetricsAnalyzer(provider).judge(rollout, acked_at + 10.0)
    assert provider.windows[0] == (acked_at + 3.0, acked_at + 10.0)
    assert later.details["window"] == {"start": acked_at + 3.0, "end": acked_at + 10.0}


def test_the_initial_delay_lengthens_the_default_deadline_only() -> None:
    plain = load_policy(POLICY, "p.yaml")
    delayed = load_policy(POLICY + "  analysis: {initialDelay: 45s}\n", "p.yaml")
    assert (delayed.stage_deadline(0) - plain.stage_deadline(0)).total_seconds() == 45
