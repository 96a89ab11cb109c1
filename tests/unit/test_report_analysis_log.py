"""The analysis log's pure parts and the SQLite store's migration of a version 1 file."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from controller.rollout.actions import RecordEvent
from controller.rollout.state import Phase, RolloutState, VerdictRecord
from controller.store import sqlite_log
from controller.store.analysis_log import decode_entry, encode_entry, log_entries, numbered
from controller.store.rollouts import AnalysisPoint, WeightStep
from controller.store.sqlite_rollouts import _SCHEMA, SCHEMA_VERSION, SqliteRolloutStore
from tests.store_contract import SOURCE, event, pending, policy


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
