"""Rollouts for the report tests, recorded through the real state machine into a real store.

:func:`promoted` and :func:`rolled_back` feed the machine what the reconciler would (ticks,
ACK results, verdicts with the judge's figures) with :func:`controller.store.transitions.
apply_input`, so the store's history, analysis log and weight steps are what a controller run
leaves behind.
"""

from __future__ import annotations

import yaml

from controller.policy.rollout_policy import RolloutPolicy
from controller.rollout.inputs import AckResult, Input, Tick, Verdict
from controller.rollout.machine import start
from controller.rollout.state import VerdictOutcome
from controller.store.rollouts import PolicySource, RolloutStore, StoredRollout
from controller.store.transitions import apply_input

POLICY_TEXT = """\
apiVersion: sluice.dev/v1alpha1
kind: RolloutPolicy
metadata:
  name: comments
spec:
  route: comments
  baseline:
    cluster: comments-python
  candidate:
    cluster: comments-go
  stages:
    - weight: 5%
      bake: 1m
    - weight: 50%
      bake: 1m
    - weight: 100%
      bake: 1m
  analysis:
    interval: 30s
    slos:
      - metric: latency_p99
        maxDrift: 10%
      - metric: error_rate
        maxDrift: 5%
      - metric: parity
        minValue: 99%
        minCompared: 10
"""

SCRIPT_REASON = "<script>alert('x')</script> p99 too high"
"""A fail reason with markup: the report must show it as text."""

T0 = 1_790_000_000.0


def policy() -> RolloutPolicy:
    return RolloutPolicy.model_validate(yaml.safe_load(POLICY_TEXT), by_alias=True)


def figures(
    outcome: VerdictOutcome, p99_ms: float, errors: float, mismatch: float
) -> dict[str, object]:
    """``details`` as the judge gives them: per SLO figures (latency in ms, rates as ratios)."""

    def slo(baseline: float | None, candidate: float, threshold: float) -> dict[str, object]:
        return {"outcome": outcome, "reason": f"{outcome} <b>", "baseline": baseline,
                "candidate": candidate, "threshold": threshold, "confidence": 0.99}  # fmt: skip

    return {
        "slos": {
            "latency_p99": slo(20.0, p99_ms, 22.0),
            "error_rate": slo(0.002, errors, 0.0021),
            "parity": slo(None, mismatch, 0.01),
        }
    }


def _create(store: RolloutStore, name: str, t0: float) -> None:
    p = policy()
    state, event = start(p, t0, "alice")
    store.create(name, p, PolicySource("policies/comments.yaml", None, False, POLICY_TEXT), state,
                 event)  # fmt: skip


def _feed(store: RolloutStore, name: str, *inputs: Input) -> StoredRollout:
    stored = store.get(name)
    for event in inputs:
        stored, decision = apply_input(store, name, event)
        assert not decision.refused, (event, decision)
    return stored


def _enter_and_ack(store: RolloutStore, name: str, now: float) -> StoredRollout:
    """Tick (the machine pushes the next weight), then every Envoy ACKs it."""
    stored = _feed(store, name, Tick(now))
    s = stored.state
    return _feed(store, name, AckResult(now + 1, s.push_seq, s.desired_weight, "acked"))


def promoted(store: RolloutStore, name: str = "comments-v2", t0: float = T0) -> StoredRollout:
    """Three stages, each judged twice (an inconclusive verdict, then passes), promoted."""
    _create(store, name, t0)
    now = t0 + 1
    stored = _enter_and_ack(store, name, now)
    plan: list[tuple[VerdictOutcome, float]] = [
        ("inconclusive", 21.0),
        ("pass", 20.5),
        ("pass", 20.4),
    ]
    for stage in range(3):
        start_at = stored.state.stage_started_at
        assert start_at is not None
        for i, (outcome, p99) in enumerate(plan):
            at = start_at + 20 * (i + 1)  # the last one at the bake's end: promoted
            details = figures(outcome, p99 + stage, 0.002, 0.001 * i)
            stored = _feed(store, name, Verdict(at, stage, outcome, f"{outcome} at {at}", details))
        if stage < 2:
            s = stored.state
            ack = AckResult(start_at + 61, s.push_seq, s.desired_weight, "acked")
            stored = _feed(store, name, ack)
    assert str(stored.state.phase) == "succeeded", stored.state
    return stored


def rolled_back(store: RolloutStore, name: str = "comments-v3", t0: float = T0) -> StoredRollout:
    """Stage 1 passes, stage 2 fails on latency (a reason with markup), rolled back to 0%."""
    _create(store, name, t0)
    stored = _enter_and_ack(store, name, t0 + 1)
    start_at = stored.state.stage_started_at
    assert start_at is not None
    for i in range(2):
        at = start_at + 30 * (i + 1)
        stored = _feed(store, name, Verdict(at, 0, "pass", "ok", figures("pass", 20.0, 0.002, 0.0)))
    s = stored.state
    stored = _feed(store, name, AckResult(start_at + 91, s.push_seq, s.desired_weight, "acked"))
    start_at = stored.state.stage_started_at
    assert start_at is not None
    bad = figures("fail", 45.0, 0.002, 0.0)
    stored = _feed(store, name, Verdict(start_at + 30, 1, "fail", SCRIPT_REASON, bad))
    s = stored.state
    stored = _feed(store, name, AckResult(start_at + 31, s.push_seq, s.desired_weight, "acked"))
    assert str(stored.state.phase) == "rolled_back", stored.state
    return stored
