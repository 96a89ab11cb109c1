"""The Rollout object <-> stored rollout mapping (pure: no server)."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from store_contract import SOURCE, event, pending, policy
from unit.crd_checks import object_validator

from controller.k8s.crd import rollout_schema, status_schema
from controller.k8s.status_codec import (
    CREATED_BY,
    MAX_EVENT_MESSAGE,
    MAX_POLICY_TEXT,
    POLICY_TEXT,
    append_history,
    decode,
    encode_status,
    event_body,
    format_time,
    parse_time,
    rollout_object,
)
from controller.rollout.machine import start
from controller.rollout.state import Phase, RolloutState, VerdictRecord
from controller.store.rollouts import CorruptRecordError, HistoryEvent, PolicySource

CREATED = "2026-11-22T00:03:38Z"


def served(
    obj: dict[str, Any], *, uid: str = "0f1e2d3c-aaaa", generation: int = 1
) -> dict[str, Any]:
    """``obj`` as the API server returns it after a create."""
    out = copy.deepcopy(obj)
    out["metadata"].update(
        uid=uid, resourceVersion="17", generation=generation, creationTimestamp=CREATED
    )
    return out


def test_an_object_without_status_reads_as_a_new_pending_rollout() -> None:
    obj = served(rollout_object("comments-v2", "sluice", policy(), SOURCE, "alice"))
    record = decode(obj)
    at = parse_time(CREATED)
    state, first = start(policy(), at, "alice")
    assert not record.has_status
    assert record.rollout.state == state
    assert record.rollout.revision == 1
    assert record.rollout.created_at == at
    assert record.rollout.policy == policy()
    assert record.rollout.source == SOURCE
    assert record.rollout.route == "comments"
    assert record.history == (
        HistoryEvent(1, "comments-v2", at, "alice", "pending", first.reason, {}),
    )
    assert (record.history_seq, record.uid, record.resource_version) == (1, "0f1e2d3c-aaaa", "17")
    # kubectl apply: no Sluice annotations at all
    del obj["metadata"]["annotations"]
    bare = decode(obj)
    assert bare.history[0].actor == "kubernetes"
    assert bare.rollout.source == PolicySource(None, None, False, "")
    assert bare.rollout.policy.metadata.name == "comments-v2"  # the object's name


def test_status_round_trips_state_and_history() -> None:
    obj = served(rollout_object("c", "ns", policy(), SOURCE, "alice"), generation=3)
    state = RolloutState(
        phase=Phase.PROGRESSING,
        stage=1,
        desired_weight=100.0,
        acked_weight=1.0,
        awaiting_ack=True,
        stage_started_at=110.0,
        last_verdict=VerdictRecord(
            at=120.0, outcome="pass", reason="ok", details={"p99_ms": {"base": 3}}
        ),
        push_seq=4,
        updated_at=130.0,
        reason="next stage",
    )
    history = (HistoryEvent(7, "c", 100.0, "alice", "pending", "created", {"k": [1, None]}),)
    obj["status"] = encode_status(
        state, revision=9, created_at=99.5, generation=3, history=history, history_seq=7
    )
    record = decode(obj)
    assert record.has_status
    assert record.rollout.state == state
    assert (record.rollout.revision, record.rollout.created_at) == (9, 99.5)
    assert record.history == history
    assert record.history_seq == 7
    status = obj["status"]
    assert status["observedGeneration"] == 3
    assert status["desiredWeight"] == 100.0
    assert status["lastVerdict"]["details"] == {"p99_ms": {"base": 3}}  # not renamed
    assert "cause" not in status  # nulls are left out
    # every state key is one the CRD's status schema declares
    declared = set(status_schema()["properties"])
    own = {"revision", "createdAt", "historySeq", "history"}
    assert set(status) - own <= declared


def test_a_state_of_another_generation_reads_as_a_new_pending_rollout() -> None:
    """A status derived from an earlier spec (a replaced rollout before its new status is
    written, or an edited spec) says nothing about this policy: never its weights."""
    obj = served(rollout_object("c", "ns", policy(), SOURCE, "alice"), generation=4)
    promoted = RolloutState(
        phase=Phase.SUCCEEDED, stage=2, desired_weight=100.0, acked_weight=100.0, updated_at=9.0
    )
    history = (HistoryEvent(7, "c", 5.0, "alice", "progressing → succeeded", "done", {}),)
    obj["status"] = encode_status(
        promoted, revision=9, created_at=1.0, generation=3, history=history, history_seq=7
    )
    record = decode(obj)
    assert record.rollout.state.phase == Phase.PENDING
    assert record.rollout.state.served_weight is None  # nothing to serve from it
    assert record.rollout.revision == 9  # the compare-and-set goes on from the stored one
    assert record.history[:-1] == history
    assert record.history[-1].seq == record.history_seq == 8
    assert "the spec changed: generation 4, the state was of generation 3" in (
        record.history[-1].reason
    )
    obj["status"]["observedGeneration"] = 4
    assert decode(obj).rollout.state == promoted


def test_the_crd_refuses_a_spec_change() -> None:
    rules = rollout_schema()["properties"]["spec"]["x-kubernetes-validations"]
    assert rules == [
        {
            "rule": "self == oldSelf",
            "message": "a rollout's spec cannot change: abort it and start a new rollout",
        }
    ]


def test_the_whole_object_fits_the_crd_schema() -> None:
    """What the store writes passes the CRD's schema as the API server checks it (strict
    field validation; status keeps its own bookkeeping through preserve-unknown-fields)."""
    obj = served(rollout_object("c", "ns", policy(), SOURCE, "alice"))
    state = RolloutState(
        phase=Phase.ROLLING_BACK,
        stage=0,
        desired_weight=0.0,
        acked_weight=1.0,
        last_verdict=VerdictRecord(at=5.0, outcome="fail", details={"x": [1, {"y": None}]}),
        cause="verdict",
        resume_to=Phase.PROGRESSING,
    )
    history = (HistoryEvent(1, "c", 1.0, "alice", "pending", "created", {"n": {"m": 1}}),)
    obj["status"] = encode_status(
        state, revision=2, created_at=1.0, generation=1, history=history, history_seq=1
    )
    errors = [e.message for e in object_validator(rollout_schema()).iter_errors(obj)]
    assert errors == []


def test_append_history_numbers_on_and_keeps_the_last() -> None:
    obj = served(rollout_object("c", "ns", policy(), SOURCE, "alice"))
    record = decode(obj)  # one synthesized creation event, seq 1
    events = [event(200.0 + i, f"t{i}") for i in range(5)]
    kept, seq = append_history(record, events, limit=3)
    assert seq == 6
    assert [(e.seq, e.transition) for e in kept] == [(4, "t2"), (5, "t3"), (6, "t4")]
    kept, seq = append_history(record, [], limit=3)
    assert (kept, seq) == (record.history, 1)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda o: o["spec"].pop("route"),
            r"rollout 'c' \(Rollout ns/c\): spec.route: Field required",
        ),
        (
            lambda o: o["spec"]["stages"][0].update(weight="lots"),
            r"rollout 'c' \(Rollout ns/c\): spec.stages.0.weight: ",
        ),
        (lambda o: o.update(status={"phase": "pending"}), r"status.revision cannot be read"),
        (
            lambda o: o.update(status={"revision": True, "createdAt": 1}),
            r"status.revision cannot be read \(expected an integer",
        ),
        (
            lambda o: o.update(status={"revision": 2, "createdAt": 1, "phase": "sideways"}),
            r"status.phase cannot be read",
        ),
        (
            lambda o: o.update(status={"revision": 2, "createdAt": 1, "history": [{"seq": 1}]}),
            r"status.history cannot be read \(missing field 'at'\)",
        ),
        (lambda o: o["metadata"].pop("creationTimestamp"), "metadata.creationTimestamp"),
    ],
)
def test_an_unreadable_object_names_itself_and_the_field(edit: Any, message: str) -> None:
    obj = served(rollout_object("c", "ns", policy(), SOURCE, "alice"))
    edit(obj)
    with pytest.raises(CorruptRecordError, match=message) as info:
        decode(obj)
    assert "\n" not in str(info.value)


def test_annotations_carry_the_source_and_a_long_text_is_left_out() -> None:
    obj = rollout_object("c", "ns", policy(), SOURCE, "bob")
    notes = obj["metadata"]["annotations"]
    assert notes == {
        "sluice.dev/policy-name": "comments",
        "sluice.dev/created-by": "bob",
        "sluice.dev/git-dirty": "true",
        "sluice.dev/policy-path": "policies/comments.yaml",
        "sluice.dev/git-commit": SOURCE.git_commit,
        "sluice.dev/policy-text": "x: 1",
    }
    assert obj["apiVersion"] == "sluice.dev/v1alpha1"
    assert obj["kind"] == "Rollout"
    assert obj["spec"]["stages"][0] == {"weight": "1%", "bake": "120s"}
    big = PolicySource(None, None, False, "é" * (MAX_POLICY_TEXT // 2))
    assert (
        POLICY_TEXT
        not in rollout_object("c", "ns", policy(), big, "bob")["metadata"]["annotations"]
    )
    assert CREATED_BY in rollout_object("c", "ns", policy(), big, "bob")["metadata"]["annotations"]


@pytest.mark.parametrize(
    ("transition", "reason", "kind"),
    [
        ("pending", "Pending", "Normal"),
        ("pending → progressing", "Progressing", "Normal"),
        ("progressing → rolling_back", "RollingBack", "Warning"),
        ("rolling_back → rolled_back", "RolledBack", "Warning"),
        ("progressing → paused", "Paused", "Warning"),
        ("rolling_back → failed", "Failed", "Warning"),
        ("rolling_back → aborted", "Aborted", "Normal"),
        ("progressing → succeeded", "Succeeded", "Normal"),
    ],
)
def test_event_bodies(transition: str, reason: str, kind: str) -> None:
    obj = served(rollout_object("c", "ns", policy(), SOURCE, "alice"), uid="abcdef12-3456")
    long = "ü" * 1000  # 2,000 bytes
    body = event_body(obj, HistoryEvent(4, "c", 1.5e9, "ctl", transition, long, {}), "pod-a")
    assert body["reason"] == reason
    assert body["type"] == kind
    assert body["involvedObject"] == {
        "apiVersion": "sluice.dev/v1alpha1",
        "kind": "Rollout",
        "name": "c",
        "namespace": "ns",
        "uid": "abcdef12-3456",
    }
    assert body["metadata"]["name"] == "c.abcdef12.4"
    assert body["metadata"]["namespace"] == "ns"
    assert len(body["message"].encode()) <= MAX_EVENT_MESSAGE
    assert body["message"].startswith("üü")
    assert body["message"].endswith("...")
    assert body["source"] == {"component": "sluice"}
    assert body["reportingComponent"] == "sluice.dev/controller"
    assert body["reportingInstance"] == "pod-a"
    assert body["firstTimestamp"] == body["lastTimestamp"] == "2017-07-14T02:40:00Z"


def test_times() -> None:
    assert parse_time("1970-01-01T00:01:40Z") == 100.0
    assert parse_time("1970-01-01T01:01:40+01:00") == 100.0
    assert format_time(100.9) == "1970-01-01T00:01:40Z"
    with pytest.raises(ValueError, match="no UTC offset"):
        parse_time("1970-01-01T00:01:40")
    assert pending(5.0).updated_at == 5.0
