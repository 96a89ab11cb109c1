"""The analysis log's pure parts and the SQLite store's migration of a version 1 file."""

from __future__ import annotations

import sqlite3
from dataclasses import replace
from pathlib import Path

import pytest

from controller.k8s.status_codec import RolloutRecord
from controller.rollout.actions import RecordEvent
from controller.rollout.state import Phase, RolloutState, VerdictRecord
from controller.store import sqlite_log
from controller.store.analysis_log import (
    LogEntry,
    decode_entry,
    encode_entry,
    log_entries,
    numbered,
)
from controller.store.rollouts import AnalysisPoint, StoredRollout, WeightStep
from controller.store.sqlite_rollouts import _SCHEMA, SCHEMA_VERSION, SqliteRolloutStore
from tests.store_contract import SOURCE, event, pending, policy


def _record(
    stored: StoredRollout,
    entries: tuple[LogEntry, ...] = (),
    seq: int = 0,
    state: RolloutState | None = None,
) -> RolloutRecord:
    rollout = replace(stored, state=state or stored.state)
    return RolloutRecord(rollout, (), 1, "uid", "1", 1, True, entries, seq)


def test_entries_for_a_verdict_and_a_weight_change() -> None:
    old = RolloutState(phase=Phase.PROGRESSING, stage=0, desired_weight=1.0, acked_weight=1.0)
    verdict = VerdictRecord(at=5.0, outcome="fail", reason="p99", details={"x": 1})
    new = old.model_copy(
        update={"last_verdict": verdict, "desired_weight": 0.0, "phase": Phase.ROLLING_BACK,
                "updated_at": 5.0}
    )  # fmt: skip
    point, step = log_entries(old, new)
    assert point == AnalysisPoint(0, 5.0, 0, 0.0, "fail", "p99", {"x": 1})
    assert step == WeightStep(0, 5.0, 0, 0.0, 1.0, "rolling_back")
    assert log_entries(new, new) == []
    assert log_entries(new, new.model_copy(update={"passes": 3})) == []
    assert [e.seq for e in numbered([point, step], 7)] == [8, 9]


def test_a_verdict_carried_by_an_event_is_logged_once() -> None:
    old = RolloutState(phase=Phase.PROGRESSING, stage=0, desired_weight=5.0, acked_weight=5.0)
    passed = VerdictRecord(at=9.0, outcome="pass", reason="baked", details={"slos": {}})
    carried = RecordEvent(
        9.0, "controller", "progressing", "next", {"verdict": passed.model_dump()}
    )
    new = old.model_copy(update={"stage": 1, "desired_weight": 50.0, "updated_at": 9.0})
    point, step = log_entries(old, new, [carried])
    assert point == AnalysisPoint(0, 9.0, 0, 5.0, "pass", "baked", {"slos": {}})
    assert isinstance(step, WeightStep)
    # already stored (or held by the new state): not again
    assert log_entries(old.model_copy(update={"last_verdict": passed}), old, [carried]) == []
    kept = old.model_copy(update={"last_verdict": passed})
    assert len(log_entries(old, kept, [carried])) == 1
    # something else under the key is not a verdict
    odd = RecordEvent(9.0, "x", "progressing", "", {"verdict": {"what": 1}})
    assert log_entries(old, old, [odd]) == []


@pytest.mark.parametrize(
    "entry",
    [
        AnalysisPoint(3, 1.5, 2, 25.0, "pass", "ok <script>", {"slo": {"b": 1.0}}),
        AnalysisPoint(4, 2.0, 0, 1.0, "inconclusive"),
        WeightStep(5, 3.0, -1, 0.0, None, "pending"),
        WeightStep(6, 3.0, 1, 5.0, 1.0, "progressing"),
    ],
)
def test_compact_form_round_trips(entry: AnalysisPoint | WeightStep) -> None:
    encoded = encode_entry(entry)
    assert None not in encoded.values()
    assert decode_entry(encoded) == entry


def test_compact_form_refuses_an_unknown_outcome() -> None:
    with pytest.raises(ValueError, match="outcome"):
        decode_entry({"s": 1, "t": 1.0, "g": 0, "w": 1.0, "o": "maybe"})


def test_a_version_1_file_is_migrated_and_keeps_its_rollouts(tmp_path: Path) -> None:
    path = tmp_path / "sluice.db"
    db = sqlite3.connect(path)
    for statement in _SCHEMA[: len(_SCHEMA) - len(sqlite_log.TABLES)]:
        db.execute(statement)
    db.execute("INSERT INTO sluice_schema (component, version) VALUES ('rollouts', 1)")
    db.commit()
    db.close()
    store = SqliteRolloutStore(path)
    try:
        store.create("c", policy(), SOURCE, pending(), event(100.0))
        verdict = VerdictRecord(at=120.0, outcome="pass")
        store.update("c", 1, pending().model_copy(update={"last_verdict": verdict}), [])
        assert [p.at for p in store.analyses("c")] == [120.0]
    finally:
        store.close()
    db = sqlite3.connect(path)
    try:
        (version,) = db.execute(
            "SELECT version FROM sluice_schema WHERE component = 'rollouts'"
        ).fetchone()
        assert version == SCHEMA_VERSION == 2
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            db.execute("DELETE FROM rollout_log")
    finally:
        db.close()


def test_kubernetes_status_keeps_the_last_entries_compact() -> None:
    from controller.k8s.status_codec import ANALYSIS_LIMIT, append_analyses, decode, encode_status

    assert ANALYSIS_LIMIT == 500
    rollout = SqliteRolloutStore(":memory:")
    try:
        stored = rollout.create("c", policy(), SOURCE, pending(), event(100.0))
    finally:
        rollout.close()
    record = _record(stored)
    entries, seq = append_analyses(None, stored.state, [], limit=3)
    assert seq == 1
    state = stored.state
    for i in range(5):
        new = state.model_copy(
            update={"last_verdict": VerdictRecord(at=200.0 + i, outcome="pass"), "updated_at": 1}
        )
        record = _record(stored, entries, seq, state)
        entries, seq = append_analyses(record, new, [], limit=3)
        state = new
    assert seq == 6
    assert [e.seq for e in entries] == [4, 5, 6]
    status = encode_status(state, revision=2, created_at=100.0, generation=1, history=(),
                           history_seq=0, analyses=entries, analysis_seq=seq)  # fmt: skip
    assert status["analysisSeq"] == 6
    assert status["analyses"][-1] == {"s": 6, "t": 204.0, "g": -1, "w": 0.0, "o": "pass"}
    obj = {"metadata": {"name": "c", "namespace": "n", "creationTimestamp": "2026-01-01T00:00:00Z"},
           "spec": policy().model_dump(mode="json", by_alias=True, exclude_none=True)["spec"],
           "status": status}  # fmt: skip
    assert decode(obj).analyses == entries
    # without a log yet, status has neither key (as nulls are left out)
    bare = encode_status(state, revision=1, created_at=1.0, generation=1, history=(), history_seq=0)
    assert "analyses" not in bare
    assert "analysisSeq" not in bare
