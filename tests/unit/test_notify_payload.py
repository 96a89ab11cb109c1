"""Which transitions notify, and the payloads: the real machine's events, no I/O.

Each test walks a rollout through :func:`controller.rollout.machine.advance` as the reconciler
would (ticks, ACK results, verdicts) and maps every event it records, with the state stored
after it, through :func:`controller.rollout.notifications.notifications`.
"""

from __future__ import annotations

from typing import Any

import pytest

from controller.policy.rollout_policy import RolloutPolicy
from controller.rollout.inputs import AckResult, Command, Input, Tick, Verdict
from controller.rollout.machine import advance, start
from controller.rollout.notifications import (
    Notification,
    notifications,
    render,
    rfc3339,
    slack_text,
    split_transition,
)
from controller.rollout.state import RolloutState

BASE, CAND = "comments-python", "comments-go"


def make_policy(on_failure: str = "rollback", failure_limit: int = 1) -> RolloutPolicy:
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
                    {"weight": "5%", "bake": "60s"},
                    {"weight": "50%", "bake": "60s"},
                    {"weight": "100%", "bake": "60s"},
                ],
                "analysis": {"interval": "10s", "failureLimit": failure_limit},
                "onFailure": on_failure,
                "ackTimeout": "10s",
            },
        }
    )


class Walk:
    """A rollout fed inputs one by one, collecting the notifications of its events."""

    def __init__(self, policy: RolloutPolicy | None = None) -> None:
        self.policy = policy or make_policy()
        self.state, _ = start(self.policy, 0.0, "alice")
        self.sent: list[Notification] = []

    def feed(self, event: Input) -> list[Notification]:
        decision = advance(self.state, self.policy, event)
        assert not decision.refused, decision.refused
        self.state = decision.state
        out = [
            n
            for record in decision.events
            for n in notifications("comments", self.state, self.policy, record)
        ]
        self.sent += out
        return out

    def ack(self, now: float, outcome: Any = "acked", message: str = "") -> list[Notification]:
        s = self.state
        return self.feed(AckResult(now, s.push_seq, s.desired_weight, outcome, message))

    def verdict(self, now: float, outcome: Any, reason: str = "") -> list[Notification]:
        details: dict[str, object] = {"latency_p99": {"candidate": 0.31, "baseline": 0.2}}
        return self.feed(Verdict(now, self.state.stage, outcome, reason, details))

    def pass_stage(self, acked_at: float) -> None:
        """ACK the stage's weights at ``acked_at`` and pass it after its 60 s bake."""
        self.ack(acked_at)
        self.verdict(acked_at + 60, "pass")

    def kinds(self) -> list[tuple[str, int]]:
        return [(n.event, n.stage) for n in self.sent]


def test_a_promotion_notifies_each_stage_start_and_pass_then_the_promotion() -> None:
    walk = Walk()
    assert walk.feed(Tick(1.0)) == []  # pending → progressing: the push, nothing baking yet
    walk.pass_stage(2.0)
    walk.pass_stage(70.0)
    walk.pass_stage(140.0)
    assert walk.kinds() == [
        ("stage_started", 1),
        ("stage_passed", 1),
        ("stage_started", 2),
        ("stage_passed", 2),
        ("stage_started", 3),
        ("stage_passed", 3),
        ("promotion", 3),
    ]
    assert [n.weight for n in walk.sent] == [5, 5, 50, 50, 100, 100, 100]
    started = walk.sent[0]
    assert started.at == 2.0
    assert started.details["bake_s"] == 60.0
    assert started.phase == "progressing"
    assert walk.sent[-1].phase == "succeeded"
    assert walk.sent[1].details["next_stage"] == 2


def test_holds_and_fail_verdicts_below_the_limit_notify_nothing() -> None:
    walk = Walk(make_policy(failure_limit=2))
    walk.feed(Tick(1.0))
    assert walk.ack(11.0, "timeout", "waiting for edge-1") == []  # a hold, with its event
    assert walk.ack(22.0, "no_nodes") == []
    assert walk.state.hold  # the holds were recorded: they are events, not notifications
    assert [n.event for n in walk.ack(30.0)] == ["stage_started"]
    assert walk.verdict(40.0, "fail", "p99 31% worse") == []  # 1 of 2: recorded, not notified
    assert walk.verdict(50.0, "inconclusive") == []
    assert walk.kinds() == [("stage_started", 1)]


def test_a_fail_verdict_notifies_the_rollback_with_its_reason_then_its_end() -> None:
    walk = Walk()
    walk.feed(Tick(1.0))
    walk.pass_stage(2.0)
    walk.ack(70.0)
    rolling = walk.verdict(80.0, "fail", "latency_p99: candidate 310ms vs baseline 200ms")
    assert [(n.event, n.phase, n.stage, n.weight) for n in rolling] == [
        ("rollback", "rolling_back", 2, 0)
    ]
    assert "latency_p99: candidate 310ms" in rolling[0].reason
    assert rolling[0].details["cause"] == "verdict"
    assert rolling[0].details["latency_p99"] == {"candidate": 0.31, "baseline": 0.2}
    ended = walk.ack(81.0)
    assert [(n.event, n.phase) for n in ended] == [("rollback", "rolled_back")]
    assert "latency_p99: candidate 310ms" in str(ended[0].details["verdict"])


def test_a_nack_rolls_back_and_ends_failed() -> None:
    walk = Walk()
    walk.feed(Tick(1.0))
    first = walk.ack(2.0, "nacked", "edge-1: unknown cluster")
    assert [(n.event, n.details["cause"]) for n in first] == [("rollback", "error")]
    assert "unknown cluster" in first[0].reason
    assert [(n.event, n.phase) for n in walk.ack(3.0)] == [("rollback", "failed")]


def test_a_deadline_without_a_pass_rolls_back() -> None:
    walk = Walk()
    walk.feed(Tick(1.0))
    walk.ack(2.0)
    deadline = 2.0 + walk.policy.stage_deadline(0).total_seconds()
    out = walk.feed(Tick(deadline))
    assert [(n.event, n.details["cause"]) for n in out] == [("rollback", "deadline")]


def test_operators_commands_are_not_stage_passes() -> None:
    """An operator's promote or abort (stored by the CLI) never reads as a passed stage; the
    abort's end (an ACK the reconciler applies) notifies the rollback's end."""
    walk = Walk()
    walk.feed(Tick(1.0))
    walk.ack(2.0)
    assert walk.feed(Command(3.0, "promote", "alice")) == []
    walk.ack(4.0)
    assert walk.feed(Command(5.0, "promote_full", "alice")) == []
    walk.ack(6.0)
    promoted = walk.feed(Command(7.0, "promote", "alice"))
    assert [n.event for n in promoted] == ["promotion"]
    walk = Walk()
    walk.feed(Tick(1.0))
    walk.ack(2.0)
    aborting = walk.feed(Command(3.0, "abort", "alice", "wrong build"))
    assert [(n.event, n.details["cause"], n.details["actor"]) for n in aborting] == [
        ("rollback", "abort", "alice")
    ]
    assert [(n.event, n.phase) for n in walk.ack(4.0)] == [("rollback", "aborted")]


def test_pause_resume_and_a_retry_notify_only_the_bakes() -> None:
    walk = Walk(make_policy(on_failure="pause"))
    walk.feed(Tick(1.0))
    walk.ack(2.0)
    assert walk.verdict(12.0, "fail", "errors") == []  # paused (onFailure: pause)
    assert walk.feed(Command(13.0, "resume", "alice")) == []
    assert walk.kinds() == [("stage_started", 1)]


def test_the_json_payload_has_every_field_and_an_rfc3339_time() -> None:
    walk = Walk()
    walk.feed(Tick(1.0))
    (started,) = walk.ack(1_763_771_140.25)
    body = render(started, "json")
    assert body == {
        "event": "stage_started",
        "rollout": "comments",
        "route": "comments",
        "baseline": BASE,
        "candidate": CAND,
        "stage": 1,
        "stages": 3,
        "weight": 5.0,
        "phase": "progressing",
        "reason": started.reason,
        "at": "2025-11-22T00:25:40.250Z",
        "details": started.details,
    }
    assert "ACKed by every Envoy" in started.reason
    assert body["details"] == {
        "actor": "controller",
        "transition": "progressing",
        "bake_s": 60.0,
        "shadow": False,
    }


def test_the_slack_payload_is_one_summary_line_and_the_reason() -> None:
    walk = Walk()
    walk.feed(Tick(1.0))
    walk.ack(2.0)
    (rolling,) = walk.verdict(12.0, "fail", "p99 <310ms> & worse")
    body = render(rolling, "slack")
    assert list(body) == ["text"]
    text = str(body["text"])
    summary, quote = text.split("\n")
    assert summary.startswith(":rotating_light: *comments*: rolling back `comments-go` to 0%")
    assert "(cause: verdict)" in summary
    assert quote.startswith(">")
    assert "p99 &lt;310ms&gt; &amp; worse" in quote
    (ended,) = walk.ack(13.0)
    assert "rolled back" in slack_text(ended).split("\n")[0]
    assert "(fail verdict: p99 &lt;310ms&gt; &amp; worse)" in slack_text(ended)


@pytest.mark.parametrize(
    ("transition", "split"),
    [("progressing → paused", ("progressing", "paused")), ("pending", ("pending", "pending"))],
)
def test_split_transition(transition: str, split: tuple[str, str]) -> None:
    assert split_transition(transition) == split


def test_render_refuses_an_unknown_format() -> None:
    walk = Walk()
    walk.feed(Tick(1.0))
    (started,) = walk.ack(2.0)
    with pytest.raises(ValueError, match="unknown notification format"):
        render(started, "xml")  # type: ignore[arg-type]
    assert rfc3339(0) == "1970-01-01T00:00:00.000Z"


def test_states_are_the_stored_ones() -> None:
    """The state passed in is the one stored with the event: a state from elsewhere (here a
    fresh one) does not make a stage start out of the ACK's event."""
    walk = Walk()
    walk.feed(Tick(1.0))
    decision = advance(walk.state, walk.policy, AckResult(2.0, walk.state.push_seq, 5, "acked"))
    (record,) = decision.events
    assert notifications("comments", decision.state, walk.policy, record)
    assert notifications("comments", RolloutState(), walk.policy, record) == []
