"""The rollout state machine's contract: one table of phase by input, and the rules around it.

``TABLE`` below is the contract in one place. Its rows are states a rollout can be in (every
phase; progressing awaiting its ACK, baking before and after the bake's end; paused from
pending and from progressing, with and without an ACK in flight; rolling back with each
cause; the four ends). Its columns are inputs (ticks before and after the bake's end and past
the deadline; pass/fail/inconclusive verdicts for the current stage at those times and for a
stale stage; every push outcome for the current push and for an earlier one; every operator
command). A cell says what the machine answers:

- ``SAME``: nothing changes, nothing is done (stale or irrelevant input);
- ``REFUSED``: a command not allowed here (state unchanged, nothing recorded);
- ``go(phase, stage, desired, acked, awaiting, event, push=..., by=..., **fields)``: the new
  state's phase, stage, desired and ACKed weights, whether an ACK is awaited; the event's
  transition (None: no event) and its actor; ``push``: the seq of the SetWeights + AwaitAck of
  the desired weight; ``fields``: other state fields, which otherwise must not change.

Row groups (``"ticks"``, ``"verdicts"``, ``"acks"``, ``"stale acks"``…) fill the inputs a row
does not name one by one. Expected values are written out; nothing is derived from the machine.

Timeline of the table's stage (stage 2/3, 50%, bake 60s, analysis every 10s, deadline 160s):
its weights were pushed as push 2 and ACKed at t=100; the bake
ends at 160, the deadline at 260. Inputs come at 150 (early), 200 (late) or 300 (overdue);
push results and commands at 200.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from controller.policy.rollout_policy import RolloutPolicy
from controller.rollout.actions import VERDICT_DETAIL, AwaitAck, Decision, RecordEvent, SetWeights
from controller.rollout.inputs import AckResult, Command, Input, Tick, Verdict
from controller.rollout.machine import advance, analysis_due, next_due, start
from controller.rollout.state import Phase, RolloutState, VerdictRecord

CTL = "controller"
ALICE = "alice"
BASE, CAND = "comments-python", "comments-go"


def make_policy(
    stages: list[dict[str, str]] | None = None,
    on_failure: str = "rollback",
    **analysis: object,
) -> RolloutPolicy:
    return RolloutPolicy.model_validate(
        {
            "apiVersion": "sluice.dev/v1alpha1",
            "kind": "RolloutPolicy",
            "metadata": {"name": "comments"},
            "spec": {
                "route": "comments",
                "baseline": {"cluster": BASE},
                "candidate": {"cluster": CAND},
                "stages": stages
                or [
                    {"weight": "2.5%", "bake": "60s"},
                    {"weight": "50%", "bake": "60s", "deadline": "160s"},
                    {"weight": "100%", "bake": "60s", "deadline": "160s"},
                ],
                "analysis": {"interval": "10s", **analysis},
                "onFailure": on_failure,
                "ackTimeout": "10s",
            },
        }
    )


POLICY = make_policy()

ENVOY = {
    0.0: {BASE: 10000, CAND: 0},
    2.5: {BASE: 9750, CAND: 250},
    50.0: {BASE: 5000, CAND: 5000},
    100.0: {BASE: 0, CAND: 10000},
}
"""The route's weighted_clusters for each candidate share the table pushes (sum 10,000)."""

STARTED, BAKE_END, DEADLINE = 100.0, 160.0, 260.0
EARLY, LATE, OVERDUE = 150.0, 200.0, 300.0

# -- the states (rows) ----------------------------------------------------------------------


def _st(**kw: Any) -> RolloutState:
    return RolloutState(updated_at=90.0, **kw)


_AWAITING = {"stage": 1, "desired_weight": 50.0, "acked_weight": 2.5, "awaiting_ack": True}
_BAKING = {
    "stage": 1,
    "desired_weight": 50.0,
    "acked_weight": 50.0,
    "stage_started_at": STARTED,
    "push_seq": 2,
}


def _rolling_back(cause: str) -> RolloutState:
    return _st(
        phase=Phase.ROLLING_BACK,
        cause=cause,
        **{**_BAKING, "desired_weight": 0.0, "awaiting_ack": True, "push_seq": 3},
    )


def _ended(phase: Phase, cause: str | None) -> RolloutState:
    weight = 100.0 if phase == Phase.SUCCEEDED else 0.0
    stage = 2 if phase == Phase.SUCCEEDED else 1
    return _st(
        phase=phase,
        stage=stage,
        desired_weight=weight,
        acked_weight=weight,
        cause=cause,
        push_seq=3,
        stage_started_at=STARTED,
    )


STATES: dict[str, RolloutState] = {
    "pending": _st(),
    "progressing, awaiting ACK": _st(phase=Phase.PROGRESSING, push_seq=2, **_AWAITING),
    "progressing, baking": _st(phase=Phase.PROGRESSING, **_BAKING),
    "progressing, pass before bake end": _st(
        phase=Phase.PROGRESSING,
        passes=1,
        last_analysis_at=130.0,
        last_verdict=VerdictRecord(at=130.0, outcome="pass"),
        **_BAKING,
    ),
    "progressing, bake ended": _st(
        phase=Phase.PROGRESSING,
        last_analysis_at=170.0,
        last_verdict=VerdictRecord(at=170.0, outcome="inconclusive"),
        **_BAKING,
    ),
    "paused from pending": _st(phase=Phase.PAUSED, resume_to=Phase.PENDING),
    "paused from baking": _st(phase=Phase.PAUSED, resume_to=Phase.PROGRESSING, **_BAKING),
    "paused, ACK in flight": _st(
        phase=Phase.PAUSED, resume_to=Phase.PROGRESSING, push_seq=2, **_AWAITING
    ),
    "rolling back (verdict)": _rolling_back("verdict"),
    "rolling back (deadline)": _rolling_back("deadline"),
    "rolling back (abort)": _rolling_back("abort"),
    "rolling back (error)": _rolling_back("error"),
    "succeeded": _ended(Phase.SUCCEEDED, None),
    "rolled back": _ended(Phase.ROLLED_BACK, "verdict"),
    "aborted": _ended(Phase.ABORTED, "abort"),
    "failed": _ended(Phase.FAILED, "error"),
    # An ``invalid`` push result fails the rollout where it stands: nothing was served.
    "failed, push invalid": _st(
        phase=Phase.FAILED, cause="error", push_seq=2, **_AWAITING
    ).model_copy(update={"awaiting_ack": False}),
}

# -- the inputs (columns) -------------------------------------------------------------------

_AT = {"early": EARLY, "late": LATE, "overdue": OVERDUE}
_ACKS = ("acked", "nacked", "timeout", "no_nodes", "invalid", "unsaved")
_COMMANDS = ("pause", "resume", "promote", "promote_full", "abort", "retry")

GROUPS: dict[str, tuple[str, ...]] = {
    "ticks": tuple(f"tick {t}" for t in _AT),
    "verdicts": (
        *(f"{o} {t}" for o in ("pass", "fail", "inconclusive") for t in _AT),
        *("stale pass", "stale fail", "stale inconclusive"),
    ),
    "stale verdicts": ("stale pass", "stale fail", "stale inconclusive"),
    "acks": tuple(_ACKS) + tuple(f"stale {a}" for a in _ACKS),
    "stale acks": tuple(f"stale {a}" for a in _ACKS),
    "commands": _COMMANDS,
}
INPUTS: tuple[str, ...] = GROUPS["ticks"] + GROUPS["verdicts"] + GROUPS["acks"] + _COMMANDS


def make_input(name: str, state: RolloutState) -> Input:
    """The input called ``name``, addressed to ``state`` (its stage, its push seq)."""
    words = name.split()
    stale = words[0] == "stale"
    if stale:
        words = words[1:]
    kind = words[0]
    if kind == "tick":
        return Tick(now=_AT[words[1]])
    if kind in ("pass", "fail", "inconclusive"):
        other = 0 if state.stage != 0 else 1
        stage, now = (other, LATE) if stale else (state.stage, _AT[words[1]])
        return Verdict(now=now, stage=stage, outcome=kind, reason=f"judged {kind}")  # type: ignore[arg-type]
    if kind in _ACKS:
        seq, weight = (state.push_seq - 1, 2.5) if stale else (state.push_seq, state.desired_weight)
        return AckResult(now=LATE, seq=seq, weight=weight, outcome=kind, message="x")  # type: ignore[arg-type]
    return Command(now=LATE, kind=kind, actor=ALICE)  # type: ignore[arg-type]


# -- the cells ------------------------------------------------------------------------------

SAME = "same"
REFUSED = "refused"


@dataclass(frozen=True)
class Go:
    phase: Phase
    stage: int
    desired: float
    acked: float | None
    awaiting: bool
    event: str | None
    push: int | None
    by: str
    fields: dict[str, Any] = field(default_factory=dict)


def go(
    phase: str,
    stage: int,
    desired: float,
    acked: float | None,
    awaiting: bool,
    event: str | None = None,
    *,
    push: int | None = None,
    by: str = CTL,
    **fields: Any,
) -> Go:
    return Go(Phase(phase), stage, desired, acked, awaiting, event, push, by, fields)


ENTER = {"started": None, "analysed": None, "passes": 0, "failures": 0, "verdict": None}
"""A new stage starts from scratch (its bake starts with its ACK)."""

Cell = Go | str


# fmt: off
def _progressing_row(pass_early: Cell) -> dict[str, Cell]:
    """The cells shared by the three baking states (stage 2/3 at 50%, ACKed at 100)."""

    def rb_verdict(at: float) -> Go:
        return go(
            "rolling_back", 1, 0, 50, True, "progressing → rolling_back", push=3,
            cause="verdict", verdict="fail", analysed=at, failures=1,
        )

    rb_deadline = go(
        "rolling_back", 1, 0, 50, True, "progressing → rolling_back", push=3, cause="deadline"
    )
    next_stage = go("progressing", 2, 100, 50, True, "progressing", push=3, **ENTER)
    return {
        "tick early": SAME,
        "tick late": SAME,
        "tick overdue": rb_deadline,
        "pass early": pass_early,
        "pass late": next_stage,
        "pass overdue": next_stage,  # a pass wins over the deadline it arrives with
        "fail early": rb_verdict(EARLY),
        "fail late": rb_verdict(LATE),
        "fail overdue": rb_verdict(OVERDUE),
        "inconclusive early": go(
            "progressing", 1, 50, 50, False, verdict="inconclusive", analysed=EARLY
        ),
        "inconclusive late": go(
            "progressing", 1, 50, 50, False, verdict="inconclusive", analysed=LATE
        ),
        "inconclusive overdue": go(
            "rolling_back", 1, 0, 50, True, "progressing → rolling_back", push=3,
            cause="deadline", verdict="inconclusive", analysed=OVERDUE,
        ),
        "stale verdicts": SAME,
        "acks": SAME,  # nothing awaited
        "pause": go(
            "paused", 1, 50, 50, False, "progressing → paused", by=ALICE, resume_to="progressing"
        ),
        "resume": REFUSED,
        "promote": go("progressing", 2, 100, 50, True, "progressing", push=3, by=ALICE, **ENTER),
        "promote_full": go(
            "progressing", 2, 100, 50, True, "progressing", push=3, by=ALICE, **ENTER
        ),
        "abort": go(
            "rolling_back", 1, 0, 50, True, "progressing → rolling_back", push=3, by=ALICE,
            cause="abort",
        ),
        "retry": REFUSED,
    }


def _rolling_back_row(cause: str, end: str) -> dict[str, Cell]:
    done = go(end, 1, 0, 0, False, f"rolling_back → {end}", hold="")
    return {
        "ticks": SAME,
        "verdicts": SAME,
        "acked": done,
        "no_nodes": done,  # no Envoy connected: every Envoy that connects gets 0%
        "nacked": go("rolling_back", 1, 0, 50, True, "rolling_back", hold="NACK", attempts=1),
        "timeout": go("rolling_back", 1, 0, 50, True, "rolling_back", hold="in time", attempts=1),
        "unsaved": go("rolling_back", 1, 0, 50, True, "rolling_back", hold="saved", attempts=1),
        "invalid": go("failed", 1, 0, 50, False, "rolling_back → failed", cause="error"),
        "stale acks": SAME,
        "pause": REFUSED,
        "resume": REFUSED,
        "promote": REFUSED,
        "promote_full": REFUSED,
        "abort": (
            REFUSED if cause == "abort"
            else go("rolling_back", 1, 0, 50, True, "rolling_back", by=ALICE, cause="abort")
        ),
        "retry": REFUSED,
    }


def _ended_row(retry: Cell) -> dict[str, Cell]:
    return {"ticks": SAME, "verdicts": SAME, "acks": SAME, "commands": REFUSED, "retry": retry}


_RETRIED = {"cause": None, "started": None, "passes": 0, "verdict": None}

TABLE: dict[str, dict[str, Cell]] = {
    "pending": {
        "ticks": go("progressing", 0, 2.5, None, True, "pending → progressing", push=1),
        "verdicts": SAME,
        "acks": SAME,
        "pause": go(
            "paused", -1, 0, None, False, "pending → paused", by=ALICE, resume_to="pending"
        ),
        "resume": REFUSED,
        "promote": go("progressing", 0, 2.5, None, True, "pending → progressing", push=1, by=ALICE),
        "promote_full": go(
            "progressing", 2, 100, None, True, "pending → progressing", push=1, by=ALICE
        ),
        "abort": go(
            "rolling_back", -1, 0, None, True, "pending → rolling_back", push=1, by=ALICE,
            cause="abort",
        ),
        "retry": REFUSED,
    },
    "progressing, awaiting ACK": {
        "ticks": SAME,  # no bake, no deadline before the ACK
        "verdicts": SAME,  # the weights are not in place yet
        "acked": go("progressing", 1, 50, 50, False, "progressing", started=LATE),
        "nacked": go(
            "rolling_back", 1, 0, 2.5, True, "progressing → rolling_back", push=3, cause="error"
        ),
        "timeout": go("progressing", 1, 50, 2.5, True, "progressing", hold="in time", attempts=1),
        "no_nodes": go(
            "progressing", 1, 50, 2.5, True, "progressing", hold="no Envoy", attempts=1
        ),
        "unsaved": go("progressing", 1, 50, 2.5, True, "progressing", hold="saved", attempts=1),
        "invalid": go("failed", 1, 50, 2.5, False, "progressing → failed", cause="error"),
        "stale acks": SAME,
        "pause": go(
            "paused", 1, 50, 2.5, True, "progressing → paused", by=ALICE, resume_to="progressing"
        ),
        "resume": REFUSED,
        "promote": go("progressing", 2, 100, 2.5, True, "progressing", push=3, by=ALICE),
        "promote_full": go("progressing", 2, 100, 2.5, True, "progressing", push=3, by=ALICE),
        "abort": go(
            "rolling_back", 1, 0, 2.5, True, "progressing → rolling_back", push=3, by=ALICE,
            cause="abort",
        ),
        "retry": REFUSED,
    },
    "progressing, baking": _progressing_row(
        go("progressing", 1, 50, 50, False, passes=1, verdict="pass", analysed=EARLY)
    ),
    # A pass given before the bake's end does not let the stage go (ticks late stay SAME).
    "progressing, pass before bake end": _progressing_row(
        go("progressing", 1, 50, 50, False, passes=2, verdict="pass", analysed=EARLY)
    ),
    # The bake ended, the last verdict was inconclusive: only a pass moves it on.
    "progressing, bake ended": _progressing_row(
        go("progressing", 1, 50, 50, False, passes=1, verdict="pass", analysed=EARLY)
    ),
    "paused from pending": {
        "ticks": SAME,
        "verdicts": SAME,
        "acks": SAME,
        "pause": REFUSED,
        "resume": go("pending", -1, 0, None, False, "paused → pending", by=ALICE, resume_to=None),
        "promote": go(
            "progressing", 0, 2.5, None, True, "paused → progressing", push=1, by=ALICE,
            resume_to=None,
        ),
        "promote_full": go(
            "progressing", 2, 100, None, True, "paused → progressing", push=1, by=ALICE,
            resume_to=None,
        ),
        "abort": go(
            "rolling_back", -1, 0, None, True, "paused → rolling_back", push=1, by=ALICE,
            cause="abort", resume_to=None,
        ),
        "retry": REFUSED,
    },
    "paused from baking": {
        "ticks": SAME,  # not even past the deadline
        "verdicts": SAME,
        "acks": SAME,
        "pause": REFUSED,
        # The bake starts again: the time paused is not bake time.
        "resume": go(
            "progressing", 1, 50, 50, False, "paused → progressing", by=ALICE, resume_to=None,
            started=LATE, analysed=None, passes=0, failures=0, verdict=None,
        ),
        "promote": go(
            "progressing", 2, 100, 50, True, "paused → progressing", push=3, by=ALICE,
            resume_to=None, **ENTER,
        ),
        "promote_full": go(
            "progressing", 2, 100, 50, True, "paused → progressing", push=3, by=ALICE,
            resume_to=None, **ENTER,
        ),
        "abort": go(
            "rolling_back", 1, 0, 50, True, "paused → rolling_back", push=3, by=ALICE,
            cause="abort", resume_to=None,
        ),
        "retry": REFUSED,
    },
    "paused, ACK in flight": {
        "ticks": SAME,
        "verdicts": SAME,
        # ACKed while paused: confirmed, but no bake until resumed.
        "acked": go("paused", 1, 50, 50, False, "paused", started=None),
        "nacked": go(
            "rolling_back", 1, 0, 2.5, True, "paused → rolling_back", push=3, cause="error",
            resume_to=None,
        ),
        "timeout": go("paused", 1, 50, 2.5, True, "paused", hold="in time", attempts=1),
        "no_nodes": go("paused", 1, 50, 2.5, True, "paused", hold="no Envoy", attempts=1),
        "unsaved": go("paused", 1, 50, 2.5, True, "paused", hold="saved", attempts=1),
        "invalid": go(
            "failed", 1, 50, 2.5, False, "paused → failed", cause="error", resume_to=None
        ),
        "stale acks": SAME,
        "pause": REFUSED,
        "resume": go(
            "progressing", 1, 50, 2.5, True, "paused → progressing", by=ALICE, resume_to=None
        ),
        "promote": go(
            "progressing", 2, 100, 2.5, True, "paused → progressing", push=3, by=ALICE,
            resume_to=None,
        ),
        "promote_full": go(
            "progressing", 2, 100, 2.5, True, "paused → progressing", push=3, by=ALICE,
            resume_to=None,
        ),
        "abort": go(
            "rolling_back", 1, 0, 2.5, True, "paused → rolling_back", push=3, by=ALICE,
            cause="abort", resume_to=None,
        ),
        "retry": REFUSED,
    },
    "rolling back (verdict)": _rolling_back_row("verdict", "rolled_back"),
    "rolling back (deadline)": _rolling_back_row("deadline", "rolled_back"),
    "rolling back (abort)": _rolling_back_row("abort", "aborted"),
    "rolling back (error)": _rolling_back_row("error", "failed"),
    "succeeded": _ended_row(REFUSED),
    "rolled back": _ended_row(
        go("pending", -1, 0, 0, False, "rolled_back → pending", by=ALICE, **_RETRIED),
    ),
    "aborted": _ended_row(
        go("pending", -1, 0, 0, False, "aborted → pending", by=ALICE, **_RETRIED)
    ),
    "failed": _ended_row(
        go("pending", -1, 0, 0, False, "failed → pending", by=ALICE, **_RETRIED)
    ),
    # Retry starts again from 0%, even when the failed push never moved the weight.
    "failed, push invalid": _ended_row(
        go("pending", -1, 0, 2.5, False, "failed → pending", by=ALICE, **_RETRIED)
    ),
}
# fmt: on


def _cell(row: dict[str, Cell], name: str) -> Cell:
    if name in row:
        return row[name]
    for group in ("stale verdicts", "stale acks", "ticks", "verdicts", "acks", "commands"):
        if group in row and name in GROUPS[group]:
            return row[group]
    raise KeyError(name)


CELLS = [(s, i) for s in STATES for i in INPUTS]


def test_table_is_exhaustive() -> None:
    assert set(TABLE) == set(STATES)
    for state, row in TABLE.items():
        for key in row:
            assert key in INPUTS or key in GROUPS, f"{state}: unknown column {key!r}"
        for name in INPUTS:
            _cell(row, name)  # raises when the row says nothing of this input


# -- checking one cell ----------------------------------------------------------------------

_FIELDS = {
    "started": "stage_started_at",
    "analysed": "last_analysis_at",
    "passes": "passes",
    "failures": "failures",
    "cause": "cause",
    "resume_to": "resume_to",
    "hold": "hold",
    "attempts": "push_attempts",
    "seq": "push_seq",
    "verdict": "last_verdict",
}


def _field(state: RolloutState, name: str) -> object:
    value = getattr(state, _FIELDS[name])
    if name == "verdict":
        return None if value is None else value.outcome
    return value


def check_push_actions(decision: Decision, seq: int, weight: float) -> None:
    pushes = [a for a in decision.actions if not isinstance(a, RecordEvent)]
    assert pushes == [
        SetWeights(seq=seq, weight=weight, envoy_weights=ENVOY[weight]),
        AwaitAck(seq=seq, weight=weight, timeout_s=10.0),
    ]
    envoy = pushes[0].envoy_weights  # type: ignore[union-attr]
    assert sum(envoy.values()) == 10000
    assert min(envoy.values()) >= 0


def check(before: RolloutState, inp: Input, decision: Decision, cell: Cell) -> None:
    now = inp.now
    if cell == SAME:
        assert not decision.refused
        assert decision.state is before
        assert decision.actions == ()
        assert not decision.changed
        return
    if cell == REFUSED:
        assert decision.refused
        assert decision.state is before
        assert decision.actions == ()
        assert not decision.changed
        return
    assert isinstance(cell, Go)
    after = decision.state
    assert not decision.refused, decision.refused
    assert decision.changed
    assert (after.phase, after.stage, after.desired_weight, after.acked_weight) == (
        cell.phase,
        cell.stage,
        cell.desired,
        cell.acked,
    )
    assert after.awaiting_ack is cell.awaiting
    assert after.updated_at == now
    # Fields the cell names have its values; the others keep theirs (a push resets its seq,
    # attempts and hold).
    expected: dict[str, Any] = {name: _field(before, name) for name in _FIELDS}
    if cell.push is not None:
        expected |= {"seq": cell.push, "attempts": 0, "hold": ""}
    expected |= cell.fields
    for name, value in expected.items():
        got = _field(after, name)
        if name == "hold" and value:
            assert value in str(got), (name, got)
        else:
            assert got == value, (name, got, value)
    # Actions: the event first, then the push.
    events = [a for a in decision.actions if isinstance(a, RecordEvent)]
    if cell.event is None:
        assert events == []
    else:
        assert decision.actions[0] == events[0]
        assert len(events) == 1
        assert (events[0].transition, events[0].actor, events[0].at) == (cell.event, cell.by, now)
        assert events[0].reason == after.reason
    if cell.push is None:
        assert [a for a in decision.actions if not isinstance(a, RecordEvent)] == []
    else:
        check_push_actions(decision, cell.push, cell.desired)
    # What a store would keep reads back the same.
    assert RolloutState.model_validate_json(after.model_dump_json()) == after


@pytest.mark.parametrize(("state_name", "input_name"), CELLS, ids=[f"{s}-{i}" for s, i in CELLS])
def test_cell(state_name: str, input_name: str) -> None:
    before = STATES[state_name]
    inp = make_input(input_name, before)
    decision = advance(before, POLICY, inp)
    check(before, inp, decision, _cell(TABLE[state_name], input_name))


# -- the rules around the table -------------------------------------------------------------


class Run:
    """Feeds inputs to one rollout and keeps its state (a test helper)."""

    def __init__(self, policy: RolloutPolicy = POLICY, state: RolloutState | None = None) -> None:
        self.policy = policy
        self.state = state or start(policy, 0.0, ALICE)[0]
        self.decisions: list[Decision] = []

    def feed(self, inp: Input) -> Decision:
        decision = advance(self.state, self.policy, inp)
        self.state = decision.state
        self.decisions.append(decision)
        return decision

    def tick(self, now: float) -> Decision:
        return self.feed(Tick(now=now))

    def ack(self, now: float, outcome: str = "acked") -> Decision:
        s = self.state
        return self.feed(AckResult(now, s.push_seq, s.desired_weight, outcome))  # type: ignore[arg-type]

    def verdict(self, now: float, outcome: str, stage: int | None = None) -> Decision:
        stage = self.state.stage if stage is None else stage
        return self.feed(Verdict(now=now, stage=stage, outcome=outcome, reason=outcome))  # type: ignore[arg-type]

    def command(self, now: float, kind: str) -> Decision:
        return self.feed(Command(now=now, kind=kind, actor=ALICE))  # type: ignore[arg-type]

    def transitions(self) -> list[str]:
        return [e.transition for d in self.decisions for e in d.events]


def baking_at(policy: RolloutPolicy, stage: int, acked_at: float) -> Run:
    """A run whose stage ``stage`` was ACKed at ``acked_at`` (reached by operator promotes)."""
    run = Run(policy)
    run.tick(acked_at)
    for _ in range(stage):
        run.command(acked_at, "promote")
    run.ack(acked_at)
    assert (run.state.phase, run.state.stage, run.state.stage_started_at) == (
        Phase.PROGRESSING,
        stage,
        acked_at,
    )
    return run


def test_start_records_the_rollout_pending() -> None:
    state, event = start(POLICY, 5.0, ALICE)
    assert (state.phase, state.stage, state.desired_weight, state.acked_weight) == (
        Phase.PENDING,
        -1,
        0.0,
        None,
    )
    assert not state.awaiting_ack
    assert (event.at, event.actor, event.transition) == (5.0, ALICE, "pending")
    assert "2.5% → 50% → 100%" in event.reason


def test_the_whole_way_through_every_stage() -> None:
    run = Run()
    pushes: list[tuple[int, float]] = []
    t = 10.0
    run.tick(t)
    for stage in range(3):
        push = run.decisions[-1].push
        assert push is not None
        pushes.append((push.seq, push.weight))
        assert run.state.stage == stage
        run.ack(t + 1)
        run.verdict(t + 30, "pass")  # during the bake: kept, does not promote
        assert run.state.stage == stage
        assert run.tick(t + 61).state is run.decisions[-2].state  # bake over, no pass since
        run.verdict(t + 61, "pass")
        t += 61
    assert pushes == [(1, 2.5), (2, 50.0), (3, 100.0)]
    assert run.state.phase == Phase.SUCCEEDED
    assert (run.state.desired_weight, run.state.acked_weight) == (100.0, 100.0)
    assert run.transitions() == [
        "pending → progressing",
        *["progressing"] * 5,  # ACK, pass; ACK, pass; ACK
        "progressing → succeeded",
    ]


@pytest.mark.parametrize(
    ("counting", "outcomes", "rolls_back_at"),
    [
        # failureLimit 3, consecutive: a pass resets the count.
        ("consecutive", ["fail", "fail", "pass", "fail", "fail", "inconclusive", "fail"], 6),
        ("consecutive", ["fail", "pass", "fail", "pass", "fail", "pass", "fail"], None),
        # cumulative: every fail of the stage counts, passes do not reset it.
        ("cumulative", ["fail", "pass", "fail", "pass", "fail"], 4),
        ("cumulative", ["fail", "inconclusive", "fail", "inconclusive"], None),
    ],
)
def test_failure_limit(counting: str, outcomes: list[str], rolls_back_at: int | None) -> None:
    policy = make_policy(
        [{"weight": "10%", "bake": "600s"}, {"weight": "100%", "bake": "60s"}],
        failureLimit=3,
        failureCounting=counting,
    )
    run = baking_at(policy, 0, 100.0)
    for i, outcome in enumerate(outcomes):
        decision = run.verdict(110.0 + 10 * i, outcome)
        if i == rolls_back_at:
            assert run.state.phase == Phase.ROLLING_BACK
            assert run.state.cause == "verdict"
            assert run.state.failures == 3
            assert decision.events[0].transition == "progressing → rolling_back"
            check_push_actions(decision, 2, 0.0)
            return
        assert run.state.phase == Phase.PROGRESSING, i
        if outcome == "fail":  # below the limit: recorded, no move
            assert [e.transition for e in decision.events] == ["progressing"]
            assert f"/3 ({counting})" in decision.events[0].reason
            assert decision.push is None
        else:
            assert decision.actions == ()
    assert rolls_back_at is None


def test_failures_are_counted_per_stage() -> None:
    policy = make_policy(
        [{"weight": "10%", "bake": "60s"}, {"weight": "100%", "bake": "60s"}],
        failureLimit=2,
        failureCounting="cumulative",
    )
    run = baking_at(policy, 0, 100.0)
    run.verdict(110.0, "fail")
    assert run.state.failures == 1
    run.verdict(170.0, "pass")
    assert (run.state.stage, run.state.failures) == (1, 0)
    run.ack(171.0)
    run.verdict(180.0, "fail")
    assert run.state.phase == Phase.PROGRESSING


@pytest.mark.parametrize("trigger", ["verdict", "deadline"])
def test_on_failure_pause_holds_then_resume_bakes_again(trigger: str) -> None:
    policy = make_policy(on_failure="pause")
    run = baking_at(policy, 1, 100.0)
    decision = run.verdict(120.0, "fail") if trigger == "verdict" else run.tick(DEADLINE)
    assert run.state.phase == Phase.PAUSED
    assert run.state.resume_to == Phase.PROGRESSING
    assert (run.state.desired_weight, run.state.acked_weight) == (50.0, 50.0)
    assert decision.push is None
    assert [(e.transition, e.actor) for e in decision.events] == [("progressing → paused", CTL)]
    assert "onFailure: pause" in decision.events[0].reason
    assert run.tick(1000.0).actions == ()
    run.command(1000.0, "resume")
    assert run.state.phase == Phase.PROGRESSING
    assert run.state.stage_started_at == 1000.0
    assert (run.state.failures, run.state.last_verdict) == (0, None)
    assert run.tick(1000.0 + 159).actions == ()  # a fresh deadline from the resume
    assert run.tick(1000.0 + 160).state.phase == Phase.PAUSED


@pytest.mark.parametrize("on_failure", ["rollback", "pause"])
def test_nack_of_a_forward_push_rolls_back_and_fails(on_failure: str) -> None:
    run = baking_at(make_policy(on_failure=on_failure), 1, 100.0)
    run.verdict(170.0, "pass")
    assert (run.state.stage, run.state.awaiting_ack) == (2, True)
    decision = run.ack(171.0, "nacked")
    assert (run.state.phase, run.state.cause) == (Phase.ROLLING_BACK, "error")
    check_push_actions(decision, 4, 0.0)
    run.ack(172.0, "nacked")  # the rollback NACKed too: hold, push again
    assert run.state.phase == Phase.ROLLING_BACK
    assert "NACK" in run.state.hold
    run.ack(173.0)
    assert run.state.phase == Phase.FAILED
    assert (run.state.desired_weight, run.state.acked_weight) == (0.0, 0.0)


def test_abort_during_a_verdict_rollback_ends_aborted() -> None:
    run = baking_at(POLICY, 1, 100.0)
    run.verdict(120.0, "fail")
    assert (run.state.phase, run.state.cause) == (Phase.ROLLING_BACK, "verdict")
    seq = run.state.push_seq
    decision = run.command(121.0, "abort")
    assert decision.push is None  # the 0% push under way is the abort's too
    assert [(e.transition, e.actor) for e in decision.events] == [("rolling_back", ALICE)]
    assert run.command(122.0, "abort").refused
    run.feed(AckResult(now=123.0, seq=seq, weight=0.0, outcome="acked"))
    assert run.state.phase == Phase.ABORTED
    assert run.transitions()[-2:] == ["rolling_back", "rolling_back → aborted"]


def test_retry_starts_again_at_stage_one() -> None:
    run = baking_at(POLICY, 2, 100.0)
    run.command(110.0, "abort")
    run.ack(111.0)
    assert run.state.phase == Phase.ABORTED
    decision = run.command(120.0, "retry")
    assert [(e.transition, e.actor) for e in decision.events] == [("aborted → pending", ALICE)]
    assert (run.state.phase, run.state.stage, run.state.cause) == (Phase.PENDING, -1, None)
    decision = run.tick(121.0)
    assert (run.state.phase, run.state.stage) == (Phase.PROGRESSING, 0)
    check_push_actions(decision, 5, 2.5)  # seqs go on: a late result of push 2 stays stale
    assert run.state.stage_started_at is None
    run.ack(122.0)
    assert run.state.stage_started_at == 122.0


def test_promote_at_the_last_stage_waits_for_its_ack() -> None:
    run = baking_at(POLICY, 1, 100.0)
    run.command(110.0, "promote")
    assert (run.state.stage, run.state.awaiting_ack) == (2, True)
    for kind in ("promote", "promote_full"):
        decision = run.command(111.0, kind)
        assert "not ACKed" in decision.refused
        assert decision.state is run.state
    run.ack(112.0)
    decision = run.command(113.0, "promote_full")
    assert run.state.phase == Phase.SUCCEEDED
    assert [(e.transition, e.actor) for e in decision.events] == [
        ("progressing → succeeded", ALICE)
    ]
    assert decision.push is None  # 100% is already served


@pytest.mark.parametrize(
    ("deadline", "interval", "last_ok", "first_due"),
    [
        (None, "10s", 100 + 60 + 200 - 1, 100 + 60 + 200),  # default: bake + 20 intervals
        (None, "3s", 100 + 60 + 60 - 1, 100 + 60 + 60),
        ("90s", "10s", 189, 190),  # Stage.deadline, from the ACK
        ("60s", "10s", 159, 160),  # deadline = bake: only a pass at the bake's end saves it
    ],
)
def test_stage_deadline(
    deadline: str | None, interval: str, last_ok: float, first_due: float
) -> None:
    stage: dict[str, str] = {"weight": "10%", "bake": "60s"}
    if deadline is not None:
        stage["deadline"] = deadline
    policy = make_policy([stage, {"weight": "100%", "bake": "60s"}], interval=interval)
    run = baking_at(policy, 0, 100.0)
    run.verdict(last_ok, "inconclusive")
    assert run.tick(last_ok).actions == ()
    decision = run.tick(first_due)
    assert (run.state.phase, run.state.cause) == (Phase.ROLLING_BACK, "deadline")
    assert "deadline" in decision.events[0].reason
    assert "last verdict: inconclusive" in decision.events[0].reason


def test_a_pass_at_the_deadline_wins() -> None:
    policy = make_policy(
        [{"weight": "10%", "bake": "60s", "deadline": "60s"}, {"weight": "100%", "bake": "1s"}]
    )
    run = baking_at(policy, 0, 100.0)
    run.verdict(160.0, "pass")
    assert (run.state.stage, run.state.awaiting_ack) == (1, True)


_B = {"phase": Phase.PROGRESSING, **_BAKING}


@pytest.mark.parametrize(
    ("state", "now", "due"),
    [
        (_st(**_B), 109.0, False),
        (_st(**_B), 110.0, True),  # an interval after the ACK
        (_st(**_B, last_analysis_at=150.0), 159.0, False),
        (_st(**_B, last_analysis_at=155.0), 160.0, True),  # the bake ends: judge it whole
        (_st(**_B, last_analysis_at=160.0), 169.0, False),  # covered the bake already
        (_st(**_B, last_analysis_at=160.0), 170.0, True),
        (_st(**{**_B, "phase": Phase.PAUSED}), 500.0, False),
        (_st(phase=Phase.PROGRESSING, push_seq=2, **_AWAITING), 500.0, False),
        (_st(), 500.0, False),
        (STATES["rolling back (verdict)"], 500.0, False),
    ],
)
def test_analysis_due(state: RolloutState, now: float, due: bool) -> None:
    assert analysis_due(state, POLICY, now) is due


def test_analysis_due_at_bake_end_between_intervals() -> None:
    policy = make_policy(interval="100s")
    state = _st(**_B)  # bake ends at 160, next interval at 200
    assert analysis_due(state, policy, 159.0) is False
    assert analysis_due(state, policy, 160.0) is True
    assert next_due(state, policy) == 160.0


@pytest.mark.parametrize(
    ("state", "due"),
    [
        (_st(**_B), 110.0),  # next interval
        (_st(**_B, last_analysis_at=155.0), 160.0),  # bake end
        (_st(**_B, last_analysis_at=165.0), 175.0),
        (_st(**_B, last_analysis_at=255.0), 260.0),  # deadline
        (_st(**{**_B, "phase": Phase.PAUSED}), None),
        (_st(phase=Phase.PROGRESSING, push_seq=2, **_AWAITING), None),
        (_st(), None),
        (STATES["succeeded"], None),
    ],
)
def test_next_due(state: RolloutState, due: float | None) -> None:
    assert next_due(state, POLICY) == due


def test_a_verdict_judged_before_a_resume_does_not_count() -> None:
    """A slow analysis started before a pause and resume must not fail the fresh bake."""
    run = baking_at(make_policy(), 1, 100.0)
    run.command(110.0, "pause")
    run.command(111.0, "resume")
    assert run.state.stage_started_at == 111.0
    stale = run.verdict(110.5, "fail")
    assert not stale.changed
    assert run.state.phase == Phase.PROGRESSING
    assert run.state.last_verdict is None


def test_the_pass_that_ends_a_stage_travels_on_its_event() -> None:
    """The next stage starts without a verdict, so the one that ended the stage is kept on the
    move's event (the analysis log and the report read it there); a verdict that moves nothing
    is only in the state."""
    policy = make_policy(
        [{"weight": "10%", "bake": "60s"}, {"weight": "100%", "bake": "60s"}], interval="10s"
    )
    run = baking_at(policy, 0, 100.0)
    early = run.verdict(130.0, "pass")  # baking still: nothing moves
    assert all(VERDICT_DETAIL not in e.details for e in early.events)
    moved = run.verdict(160.0, "pass")
    assert run.state.stage == 1
    assert run.state.last_verdict is None
    carried = moved.events[0].details[VERDICT_DETAIL]
    assert carried == {"at": 160.0, "outcome": "pass", "reason": "pass", "details": {}}
    assert all(VERDICT_DETAIL not in e.details for e in moved.events[1:])
