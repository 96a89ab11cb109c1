"""Properties of the rollout state machine over random policies and random input sequences.

Hypothesis draws a policy (1-6 stages with increasing weights ending at 100%, bakes,
deadlines, analysis interval, failure limit and counting, onFailure) and a sequence of inputs
at non-decreasing times: ticks, verdicts (mostly for the current stage, sometimes for another),
push results (mostly for the current push, sometimes for an earlier one), operator commands.
After every step the properties of ``controller.rollout.machine``'s docstring are checked:

(a) weights stay within 0-100%; every SetWeights' Envoy weights are >= 0 and sum to 10,000;
(b) the desired weight only grows, except when entering rolling_back, or on a retry;
(c) rolled_back, aborted and failed are reached only by the ACK (or no-Envoy result) of the 0%
    push, so with 0% desired and ACKed; except ``failed`` by an ``invalid`` push result, which
    cannot push anything: the rollout fails where it stands (desired weight the refused one,
    ACKed weight the last ACKed one, nothing awaited, nothing pushed);
(d) without an operator's promote, a stage is left (a push for a later stage, or succeeded)
    only once its weights were ACKed, its bake time has passed since the ACK (or since the
    last resume, which starts the bake again), and a pass verdict for it was given at or after
    the bake's end; one stage at a time;
(e) without an operator's promote since the last retry, succeeded implies a pass verdict in
    every stage;
(f) while paused, ticks and verdicts change nothing and push nothing;
(g) refused commands change nothing and record nothing;
(h) the state round-trips through JSON.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st

from controller.policy.rollout_policy import RolloutPolicy
from controller.rollout.actions import AwaitAck, Decision, RecordEvent, SetWeights
from controller.rollout.inputs import AckResult, Command, Input, Tick, Verdict
from controller.rollout.machine import advance, start
from controller.rollout.state import Phase, RolloutState

BASE, CAND = "legacy", "rewrite"
ENDS = (Phase.ROLLED_BACK, Phase.ABORTED, Phase.FAILED)


def _pct(hundredths: int) -> str:
    return f"{hundredths // 100}.{hundredths % 100:02d}%"


@st.composite
def policies(draw: st.DrawFn) -> RolloutPolicy:
    n = draw(st.integers(1, 6))
    below = sorted(draw(st.sets(st.integers(1, 9999), min_size=n - 1, max_size=n - 1)))
    interval = draw(st.integers(1, 30))
    stages = []
    for weight in [*below, 10000]:
        bake = draw(st.integers(0, 120))
        stage = {"weight": _pct(weight), "bake": f"{bake}s"}
        if draw(st.booleans()):
            stage["deadline"] = f"{bake + draw(st.integers(0, 200))}s"
        stages.append(stage)
    return RolloutPolicy.model_validate(
        {
            "apiVersion": "sluice.dev/v1alpha1",
            "kind": "RolloutPolicy",
            "metadata": {"name": "r"},
            "spec": {
                "route": "r",
                "baseline": {"cluster": BASE},
                "candidate": {"cluster": CAND},
                "stages": stages,
                "analysis": {
                    "interval": f"{interval}s",
                    "failureLimit": draw(st.integers(1, 3)),
                    "failureCounting": draw(st.sampled_from(["consecutive", "cumulative"])),
                },
                "onFailure": draw(st.sampled_from(["rollback", "pause"])),
                "ackTimeout": "5s",
            },
        }
    )


KINDS = ("tick",) * 3 + ("verdict",) * 4 + ("ack",) * 4 + ("command",)
ACKS = ("acked",) * 6 + ("nacked", "timeout", "no_nodes", "invalid", "unsaved")
OUTCOMES = ("pass",) * 3 + ("fail", "inconclusive")
COMMANDS = ("pause", "resume", "abort", "retry")
PROMOTES = ("promote", "promote_full")
INTERVAL = -1.0
DTS = (0.0, 0.5, 1.0, INTERVAL, 7.0, 30.0, 61.0, 200.0)
"""Time steps; ``INTERVAL``: the policy's analysis interval."""


@dataclass(frozen=True)
class Mood:
    """What a walk may draw: some walks are calm (only passes and ACKs, so they get far),
    others rough (fail verdicts, every push outcome, operator commands)."""

    kinds: tuple[str, ...]
    outcomes: tuple[str, ...]
    acks: tuple[str, ...]


MOODS = st.builds(
    Mood,
    kinds=st.sampled_from(
        [KINDS, tuple(k for k in KINDS if k != "command"), KINDS + ("command",) * 4]
    ),
    outcomes=st.sampled_from([OUTCOMES, ("pass", "pass", "inconclusive")]),
    acks=st.sampled_from([ACKS, ("acked",) * 5 + ("timeout",)]),
)

STEPS = st.integers(0, 80).flatmap(
    lambda n: st.lists(st.integers(0, 8 * 100 * 10 * 100 - 1), min_size=n, max_size=n)
)
"""Each step one number: a time step (one of ``DTS``) and three numbers that pick the input
given the state (one draw per step keeps hypothesis quick)."""


def make_input(step: int, mood: Mood, state: RolloutState, now: float, promotes: bool) -> Input:
    step, b = divmod(step, 100)
    step, a = divmod(step, 10)
    k = step % 100
    kind = mood.kinds[k % len(mood.kinds)]
    if kind == "tick":
        return Tick(now=now)
    if kind == "verdict":
        # Mostly for the current stage; sometimes for the one before or after (stale).
        stage = state.stage + (0, 0, 0, 0, 0, 0, 0, -1, 1, 2)[a]
        outcome = mood.outcomes[b % len(mood.outcomes)]
        return Verdict(now=now, stage=stage, outcome=outcome)  # type: ignore[arg-type]
    if kind == "ack":
        outcome = mood.acks[b % len(mood.acks)]
        if a < 8:  # the current push, reported with the weight pushed
            seq, weight = state.push_seq, state.desired_weight
        else:  # a late result of an earlier push
            seq, weight = b % max(1, state.push_seq), float(b)
        return AckResult(now=now, seq=seq, weight=weight, outcome=outcome)  # type: ignore[arg-type]
    kinds = COMMANDS + PROMOTES if promotes else COMMANDS
    return Command(now=now, kind=kinds[b % len(kinds)], actor="op")  # type: ignore[arg-type]


@dataclass
class Harness:
    """Feeds inputs and checks every step; it keeps what it fed, not what the machine thinks."""

    policy: RolloutPolicy
    state: RolloutState
    promoted_since_retry: bool = False
    resumed_at: float = float("-inf")  # the last accepted resume: the bake starts again
    failed_invalid: bool = False
    acked_at: dict[int, float] = field(default_factory=dict)  # push seq -> time of its ACK
    passes: dict[int, list[float]] = field(default_factory=dict)  # stage -> pass verdict times
    phases: set[Phase] = field(default_factory=set)  # every phase the walk went through

    def step(self, inp: Input) -> None:
        before = self.state
        decision = advance(before, self.policy, inp)
        after = decision.state
        # What the harness remembers, from the inputs it fed.
        if isinstance(inp, AckResult) and inp.outcome == "acked":
            self.acked_at.setdefault(inp.seq, inp.now)
        if isinstance(inp, Verdict) and inp.outcome == "pass":
            self.passes.setdefault(inp.stage, []).append(inp.now)
        self.check(before, inp, decision)
        if isinstance(inp, Command) and not decision.refused:
            if inp.kind in PROMOTES:
                self.promoted_since_retry = True
            if inp.kind == "resume":
                self.resumed_at = inp.now
            if inp.kind == "retry":
                self.promoted_since_retry = False
                self.passes.clear()
        if after.phase != before.phase and after.phase in ENDS:
            self.failed_invalid = isinstance(inp, AckResult) and inp.outcome == "invalid"
        self.state = after
        self.phases.add(after.phase)

    def check(self, before: RolloutState, inp: Input, decision: Decision) -> None:
        after = decision.state
        stages = self.policy.spec.stages
        # Decisions are consistent: unchanged means the same state and nothing to do.
        if not decision.changed:
            assert after is before
            assert decision.actions == ()
        # (h) JSON round trip.
        assert RolloutState.model_validate_json(after.model_dump_json()) == after
        # (a) weights within 0-100; pushes well formed.
        assert 0 <= after.desired_weight <= 100
        assert after.acked_weight is None or 0 <= after.acked_weight <= 100
        pushes = [a for a in decision.actions if isinstance(a, SetWeights)]
        awaits = [a for a in decision.actions if isinstance(a, AwaitAck)]
        assert len(pushes) == len(awaits) <= 1
        for push, wait in zip(pushes, awaits, strict=True):
            assert push.envoy_weights[CAND] == round(push.weight * 100)
            assert sum(push.envoy_weights.values()) == 10000
            assert min(push.envoy_weights.values()) >= 0
            assert (
                (push.seq, push.weight)
                == (wait.seq, wait.weight)
                == (
                    after.push_seq,
                    after.desired_weight,
                )
            )
            assert push.seq == before.push_seq + 1
            assert after.awaiting_ack
        if after.desired_weight != before.desired_weight:
            assert pushes or (isinstance(inp, Command) and inp.kind == "retry")
        # (b) the desired weight only grows, except into a rollback or on a retry.
        if after.desired_weight < before.desired_weight:
            entering_rollback = (
                after.phase == Phase.ROLLING_BACK and before.phase != Phase.ROLLING_BACK
            )
            retry = isinstance(inp, Command) and inp.kind == "retry"
            assert entering_rollback or retry, (before, inp, after)
        if after.phase == Phase.ROLLING_BACK and before.phase != Phase.ROLLING_BACK:
            assert [p.weight for p in pushes] == [0.0]
        # (c) the ends: 0% desired and ACKed, reached only by the 0% push's ACK or no-Envoy.
        if after.phase in ENDS and before.phase != after.phase:
            assert isinstance(inp, AckResult)
            assert inp.seq == before.push_seq
            assert before.awaiting_ack
            if inp.outcome == "invalid":
                # Nothing could be pushed: the rollout fails where it stands.
                assert after.phase == Phase.FAILED
                assert after.desired_weight == before.desired_weight
                assert after.acked_weight == before.acked_weight
                assert not after.awaiting_ack
                assert pushes == []
            else:
                assert before.phase == Phase.ROLLING_BACK
                assert inp.outcome in ("acked", "no_nodes")
                assert before.desired_weight == 0.0
        if after.phase in ENDS and not (
            after.phase == Phase.FAILED and (self.failed_invalid or _invalid(inp, before, after))
        ):
            assert (after.desired_weight, after.acked_weight, after.awaiting_ack) == (0, 0, False)
        # (d) no stage left early or without a pass, unless an operator promoted.
        promote = isinstance(inp, Command) and inp.kind in PROMOTES
        left = before.phase == Phase.PROGRESSING and (
            after.stage > before.stage or after.phase == Phase.SUCCEEDED
        )
        if left and not promote:
            i = before.stage
            assert before.stage_started_at is not None
            assert not before.awaiting_ack
            # The bake ran from the stage's ACK, or from the last resume if that came later.
            started = max(self.acked_at.get(before.push_seq, float("inf")), self.resumed_at)
            assert started == before.stage_started_at
            bake_end = started + stages[i].bake.total_seconds()
            assert inp.now >= bake_end
            assert any(t >= bake_end for t in self.passes.get(i, [])), (i, self.passes)
        if after.stage > before.stage and not promote:
            assert after.stage == before.stage + 1  # one stage at a time
        # (e) succeeded without promotes: a pass verdict in every stage.
        if after.phase == Phase.SUCCEEDED and before.phase != Phase.SUCCEEDED:
            assert after.stage == len(stages) - 1
            assert (after.desired_weight, after.acked_weight) == (100.0, 100.0)
            if not self.promoted_since_retry and not promote:
                assert all(self.passes.get(i) for i in range(len(stages)))
        # A NACK of a forward push rolls back (and will end failed), whatever onFailure says.
        if (
            isinstance(inp, AckResult)
            and inp.outcome == "nacked"
            and inp.seq == before.push_seq
            and before.awaiting_ack
            and before.phase in (Phase.PROGRESSING, Phase.PAUSED)
        ):
            assert (after.phase, after.cause) == (Phase.ROLLING_BACK, "error")
        # A pending rollout has moved nothing yet, also after a retry.
        if after.phase == Phase.PENDING:
            assert (after.stage, after.desired_weight, after.awaiting_ack) == (-1, 0.0, False)
        # (f) a paused rollout does not move.
        if before.phase == Phase.PAUSED and isinstance(inp, Tick | Verdict):
            assert after is before
            assert decision.actions == ()
        # (g) refused commands change nothing and record nothing.
        if decision.refused:
            assert isinstance(inp, Command)
            assert after is before
            assert decision.actions == ()
            assert not decision.changed
        # Every event is stamped with the input's time, and its actor is the operator's for
        # an accepted command, the controller's otherwise.
        for event in decision.actions:
            if isinstance(event, RecordEvent):
                assert event.at == inp.now
                assert event.actor == (inp.actor if isinstance(inp, Command) else "controller")


def _invalid(inp: Input, before: RolloutState, after: RolloutState) -> bool:
    return isinstance(inp, AckResult) and inp.outcome == "invalid" and before.phase != after.phase


def run_sequence(policy: RolloutPolicy, mood: Mood, steps: list[int], promotes: bool) -> Harness:
    state, _ = start(policy, 0.0, "op")
    harness = Harness(policy, state)
    interval = policy.spec.analysis.interval.total_seconds()
    now = 0.0
    for step in steps:
        dt = DTS[step // (100 * 10 * 100)]
        now += interval if dt == INTERVAL else dt
        harness.step(make_input(step, mood, harness.state, now, promotes))
    return harness


SETTINGS = settings(max_examples=250, deadline=None)


@SETTINGS
@given(policy=policies(), mood=MOODS, steps=STEPS)
def test_properties_with_every_command(policy: RolloutPolicy, mood: Mood, steps: list[int]) -> None:
    run_sequence(policy, mood, steps, promotes=True)


@SETTINGS
@given(policy=policies(), mood=MOODS, steps=STEPS)
def test_properties_without_promotes(policy: RolloutPolicy, mood: Mood, steps: list[int]) -> None:
    run_sequence(policy, mood, steps, promotes=False)


def test_the_walks_reach_every_phase() -> None:
    """The inputs drawn are not vacuous: walks of the same kind (seeded, without promotes) go
    through every phase, successes and every end included."""
    rnd = random.Random(3)
    policy = RolloutPolicy.model_validate(
        {
            "apiVersion": "sluice.dev/v1alpha1",
            "kind": "RolloutPolicy",
            "metadata": {"name": "r"},
            "spec": {
                "route": "r",
                "baseline": {"cluster": BASE},
                "candidate": {"cluster": CAND},
                "stages": [{"weight": "5%", "bake": "30s"}, {"weight": "100%", "bake": "30s"}],
                "analysis": {"interval": "10s"},
            },
        }
    )
    moods = [
        Mood(kinds, outcomes, acks)
        for kinds in (KINDS, KINDS + ("command",) * 4)
        for outcomes in (OUTCOMES, ("pass", "inconclusive"))
        for acks in (ACKS, ("acked",))
    ]
    seen: set[Phase] = set()
    for _ in range(100):
        steps = [rnd.randrange(8 * 100 * 10 * 100) for _ in range(60)]
        seen |= run_sequence(policy, rnd.choice(moods), steps, promotes=False).phases
    assert seen == set(Phase), set(Phase) - seen
