"""A shadow stage (a first stage at 0%) in the rollout machine, and the route options the
reconciler serves with a parity policy: the mirror to the comparator while progressing or
paused, none once rolling back or ended."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controller.policy.rollout_policy import RolloutPolicy
from controller.rollout.actions import Decision, SetWeights
from controller.rollout.inputs import AckResult, Command, Input, Tick, Verdict
from controller.rollout.machine import advance, describe_stage, start
from controller.rollout.state import TERMINAL, Phase, RolloutState
from controller.runtime.reconciler import rollout_overlay, route_mirror, route_options
from controller.store.rollouts import PolicySource, StoredRollout
from controller.xds.resources import Mirror, RouteOptions

BASE, CAND = "comments-python", "comments-go"


def make_policy(**spec: Any) -> RolloutPolicy:
    """A policy with a shadow stage and parity (mirror 25%); ``spec`` replaces spec fields
    (``parity=None``: without a parity section)."""
    return RolloutPolicy.model_validate(
        {
            "apiVersion": "sluice.dev/v1alpha1",
            "kind": "RolloutPolicy",
            "metadata": {"name": "comments"},
            "spec": {
                "route": "comments",
                "baseline": {"cluster": BASE},
                "candidate": {"cluster": CAND},
                "stages": [
                    {"weight": "0%", "bake": "60s"},
                    {"weight": "10%", "bake": "60s"},
                    {"weight": "100%", "bake": "60s"},
                ],
                "analysis": {
                    "interval": "10s",
                    "slos": [{"metric": "parity", "minValue": "99.9%"}],
                },
                "parity": {"mirror": "25%"},
                **spec,
            },
        }
    )


POLICY = make_policy()


def _pushes(decision: Decision) -> list[SetWeights]:
    return [a for a in decision.actions if isinstance(a, SetWeights)]


def _walk(policy: RolloutPolicy, *inputs: Input) -> tuple[RolloutState, list[Decision]]:
    state, _ = start(policy, 0.0, "op")
    decisions = []
    for inp in inputs:
        decision = advance(state, policy, inp)
        decisions.append(decision)
        state = decision.state
    return state, decisions


def test_the_shadow_stage_pushes_0_percent_bakes_and_moves_on_a_pass() -> None:
    state, (enter, ack, early, verdict) = _walk(
        POLICY,
        Tick(1.0),
        AckResult(now=2.0, seq=1, weight=0.0, outcome="acked"),
        Verdict(now=30.0, stage=0, outcome="pass"),  # before the bake's end: not enough
        Verdict(now=62.0, stage=0, outcome="pass"),
    )
    [push] = _pushes(enter)
    assert (push.weight, push.envoy_weights) == (0.0, {BASE: 10_000, CAND: 0})
    assert enter.state.phase == Phase.PROGRESSING
    assert enter.state.awaiting_ack
    assert "stage 1/3 (0%, shadow)" in enter.state.reason
    assert "users stay on the baseline" in enter.state.reason
    assert ack.state.stage_started_at == 2.0
    assert ack.state.acked_weight == 0.0
    assert ack.state.served_weight == 0.0  # served: 0% is a weight, not "nothing pushed"
    assert early.state.stage == 0
    assert _pushes(early) == []
    [second] = _pushes(verdict)
    assert (state.stage, second.weight, second.envoy_weights) == (1, 10.0, {BASE: 9000, CAND: 1000})


def test_a_fail_at_the_shadow_stage_rolls_back_to_0_percent() -> None:
    state, decisions = _walk(
        POLICY,
        Tick(1.0),
        AckResult(now=2.0, seq=1, weight=0.0, outcome="acked"),
        Verdict(now=12.0, stage=0, outcome="fail", reason="parity: 2% mismatched"),
    )
    [rollback] = _pushes(decisions[-1])
    assert rollback.weight == 0.0
    assert state.phase == Phase.ROLLING_BACK
    assert route_options(POLICY, state.phase) is None  # the mirror goes with the rollback
    end = advance(state, POLICY, AckResult(now=13.0, seq=2, weight=0.0, outcome="acked")).state
    assert (end.phase, end.desired_weight, end.acked_weight) == (Phase.ROLLED_BACK, 0.0, 0.0)


def test_a_deadline_at_the_shadow_stage_follows_on_failure() -> None:
    policy = make_policy(onFailure="pause")
    deadline = 2.0 + policy.stage_deadline(0).total_seconds()
    state, _ = _walk(
        policy,
        Tick(1.0),
        AckResult(now=2.0, seq=1, weight=0.0, outcome="acked"),
        Verdict(now=70.0, stage=0, outcome="inconclusive", reason="12 compared of 500"),
        Tick(deadline),
    )
    assert (state.phase, state.stage, state.desired_weight) == (Phase.PAUSED, 0, 0.0)
    assert "stage 1/3 (0%, shadow) had no pass verdict" in state.reason
    assert route_options(policy, state.phase) is not None  # paused: still mirroring


def test_an_operator_promotes_out_of_the_shadow_stage() -> None:
    state, decisions = _walk(
        POLICY,
        Tick(1.0),
        AckResult(now=2.0, seq=1, weight=0.0, outcome="acked"),
        Command(now=3.0, kind="promote", actor="op"),
    )
    [push] = _pushes(decisions[-1])
    assert (state.stage, push.weight) == (1, 10.0)


def test_describe_stage_names_the_shadow_stage() -> None:
    assert describe_stage(POLICY, 0) == "stage 1/3 (0%, shadow)"
    assert describe_stage(POLICY, 1) == "stage 2/3 (10%)"


# --- the route options the reconciler serves -------------------------------------------------


@pytest.mark.parametrize(
    ("percent", "per_million"),
    [("10%", 100_000), ("0.0001%", 1), ("33.3333%", 333_333), ("100%", 1_000_000)],
)
def test_the_mirror_share_is_per_million(percent: str, per_million: int) -> None:
    mirror = route_mirror(make_policy(parity={"mirror": percent}))
    assert mirror is not None
    assert mirror.fraction_per_million == per_million


def test_the_mirror_follows_the_parity_section() -> None:
    assert route_mirror(POLICY) == Mirror(
        cluster="sluice-parity",
        fraction_per_million=250_000,
        route="comments",
        methods=("GET", "HEAD"),
        shadow_suffix=True,
    )
    sister = make_policy(
        parity={
            "comparator": {"cluster": "parity"},
            "methods": ["GET", "POST"],
            "sister": {"candidate": {"cluster": "comments-go-sister"}},
            "shadowSuffix": False,
        }
    )
    # With a sister target, every method is mirrored (the comparator keeps writes away
    # from production); without one, only the policy's methods.
    assert route_mirror(sister) == Mirror("parity", 100_000, "comments", None, shadow_suffix=False)
    assert route_mirror(make_policy(parity=None)) is None


@pytest.mark.parametrize("phase", list(Phase))
def test_the_mirror_is_served_while_progressing_or_paused(phase: Phase) -> None:
    options = route_options(POLICY, phase)
    if phase in (Phase.PROGRESSING, Phase.PAUSED):
        # Parity alone (no override, no sticky) is a route option of its own.
        assert options == RouteOptions(mirror=route_mirror(POLICY))
    else:
        assert options is None


def test_forcing_sticky_and_mirror_together() -> None:
    policy = make_policy(override={"header": "x-sluice-target"}, sticky={"cookie": "s"})
    options = route_options(policy, Phase.PROGRESSING)
    assert options is not None
    assert options.force == (("candidate", CAND), ("baseline", BASE))
    assert options.hash_cookie == "s"
    assert options.mirror == route_mirror(policy)


def test_a_restarted_controller_serves_the_shadow_stage_and_its_mirror() -> None:
    state, _ = _walk(POLICY, Tick(1.0), AckResult(now=2.0, seq=1, weight=0.0, outcome="acked"))
    stored = StoredRollout(
        name="comments",
        route="comments",
        policy=POLICY,
        source=PolicySource("p.yaml", None, False, ""),
        state=state,
        revision=3,
        created_at=0.0,
    )
    overlay = rollout_overlay([stored])
    assert overlay.weights == {"comments": {BASE: 10_000, CAND: 0}}
    assert overlay.options == {"comments": RouteOptions(mirror=route_mirror(POLICY))}


# --- random walks ------------------------------------------------------------------------------

INPUT = st.one_of(
    st.tuples(st.just("tick"), st.floats(0, 90)),
    st.tuples(st.just("verdict"), st.sampled_from(["pass", "pass", "fail", "inconclusive"])),
    st.tuples(st.just("ack"), st.sampled_from(["acked", "acked", "timeout", "nacked"])),
    st.tuples(st.just("command"), st.sampled_from(["pause", "resume", "abort", "retry"])),
)


@settings(max_examples=200, deadline=None)
@given(steps=st.lists(INPUT, max_size=60), on_failure=st.sampled_from(["rollback", "pause"]))
def test_shadow_walks_keep_users_off_the_candidate_until_a_pass(
    steps: list[tuple[str, Any]], on_failure: str
) -> None:
    """Whatever comes: at the shadow stage every push is 0% (100% baseline); stage 1 is
    entered only after the shadow stage's ACK, its bake and a pass verdict after the bake;
    the mirror is served exactly while progressing or paused; the ends are at 0% candidate."""
    policy = make_policy(onFailure=on_failure)
    bake = policy.spec.stages[0].bake.total_seconds()
    state, _ = start(policy, 0.0, "op")
    now = 0.0
    passes: list[float] = []
    for kind, value in steps:
        now += value if kind == "tick" else 1.0
        inp: Input
        if kind == "tick":
            inp = Tick(now)
        elif kind == "verdict":
            inp = Verdict(now=now, stage=state.stage, outcome=value)
        elif kind == "ack":
            inp = AckResult(now=now, seq=state.push_seq, weight=state.desired_weight, outcome=value)
        else:
            inp = Command(now=now, kind=value, actor="op")
        before = state
        decision = advance(state, policy, inp)
        state = decision.state
        if isinstance(inp, Verdict) and inp.outcome == "pass" and before.stage == 0:
            passes.append(now)
        if isinstance(inp, Command) and inp.kind == "retry" and not decision.refused:
            passes.clear()
        for push in _pushes(decision):
            if state.stage <= 0 or state.phase == Phase.ROLLING_BACK:
                assert push.envoy_weights == {BASE: 10_000, CAND: 0}
        if before.stage == 0 and state.stage == 1:
            assert before.stage_started_at is not None
            assert not before.awaiting_ack
            assert now >= before.stage_started_at + bake
            assert any(t >= before.stage_started_at + bake for t in passes)
        options = route_options(policy, state.phase)
        assert (options is not None) == (state.phase in (Phase.PROGRESSING, Phase.PAUSED))
        if options is not None:
            assert options.mirror == route_mirror(policy)
        if state.phase in TERMINAL - {Phase.SUCCEEDED}:
            assert state.desired_weight == 0.0
