"""The SQLite rollout store: the store contract (``tests/store_contract.py``: records,
compare-and-set updates, history, route ownership), and what is SQLite's own."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
from store_contract import SOURCE, RolloutStoreContract, event, pending, policy

from controller.rollout.state import Phase
from controller.store.rollouts import (
    CorruptRecordError,
    StoreError,
)
from controller.store.sqlite_rollouts import SqliteRolloutStore
from controller.store.weights import SqliteWeightStore


@pytest.fixture
def store(tmp_path: Path) -> Any:
    s = SqliteRolloutStore(tmp_path / ".sluice" / "state.db")
    yield s
    s.close()


class TestSqliteRolloutStore(RolloutStoreContract):
    """The store contract (tests/store_contract.py) on SQLite."""


@pytest.mark.parametrize(
    ("column", "value", "what"),
    [
        ("policy", "{not json", "policy"),
        ("policy", '{"apiVersion": "sluice.dev/v1alpha1"}', "policy"),
        ("source", '{"path": 3}', "source"),
        ("state", '{"phase": "sideways"}', "state"),
    ],
)
def test_a_corrupt_row_names_the_rollout(
    tmp_path: Path, column: str, value: str, what: str
) -> None:
    path = tmp_path / "state.db"
    store = SqliteRolloutStore(path)
    store.create("ok", policy("orders"), SOURCE, pending(), event(100.0))
    store.create("broken", policy(), SOURCE, pending(), event(100.0))
    db = sqlite3.connect(path)
    with db:
        db.execute(f"UPDATE rollouts SET {column} = ? WHERE name = 'broken'", (value,))
    db.close()
    with pytest.raises(
        CorruptRecordError, match=f"rollout 'broken': its stored {what} cannot be read"
    ) as info:
        store.get("broken")
    assert isinstance(info.value, StoreError)
    assert "\n" not in str(info.value)  # one line, not a pydantic report
    with pytest.raises(CorruptRecordError, match="'broken'"):
        store.list()
    with pytest.raises(CorruptRecordError, match="'broken'"):
        store.update("broken", 1, pending(), [event(200.0)])
    assert store.get("ok").revision == 1
    db = sqlite3.connect(path)
    assert db.execute("SELECT revision FROM rollouts WHERE name = 'broken'").fetchone() == (1,)
    assert db.execute(
        "SELECT COUNT(*) FROM rollout_events WHERE rollout = 'broken'"
    ).fetchone() == (1,)
    db.close()
    store.close()


def test_reopen_finds_everything(tmp_path: Path) -> None:
    path = tmp_path / ".sluice" / "state.db"
    weights = SqliteWeightStore(path)  # the same file holds the served weights
    weights.save("comments", {"comments-python": 99, "comments-go": 1})
    store = SqliteRolloutStore(path)
    store.create("c", policy(), SOURCE, pending(), event(100.0, "pending", note="first"))
    state = pending().model_copy(
        update={"phase": Phase.PROGRESSING, "stage": 0, "acked_weight": 1.0}
    )
    store.update("c", 1, state, [event(110.0, "pending → progressing")])
    store.create("d", policy("orders"), SOURCE, pending(), event(120.0))
    before = (store.list(), store.history("c"), store.history("d"))
    store.close()
    weights.close()

    again = SqliteRolloutStore(path)
    assert (again.list(), again.history("c"), again.history("d")) == before
    assert again.get("c").state == state
    assert again.get("c").revision == 2
    assert again.history("c")[0].details == {"note": "first"}
    assert again.update("c", 2, state, [event(130.0, "progressing")]).revision == 3
    again.close()
    assert SqliteWeightStore(path).load() == {"comments": {"comments-go": 1, "comments-python": 99}}


def test_the_database_itself_refuses_two_active_rollouts_on_a_route(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    store = SqliteRolloutStore(path)
    store.create("a", policy(), SOURCE, pending(), event(100.0))
    db = sqlite3.connect(path)
    row = db.execute(
        "SELECT route, phase, active, revision, policy, source, state FROM rollouts"
    ).fetchone()
    with pytest.raises(sqlite3.IntegrityError), db:
        db.execute(
            "INSERT INTO rollouts (name, route, phase, active, revision, policy, source, state, "
            "created_at, updated_at) VALUES ('b', ?, ?, ?, ?, ?, ?, ?, 0, 0)",
            row,
        )
    with pytest.raises(sqlite3.IntegrityError, match="append-only"), db:
        db.execute("DELETE FROM rollout_events")
    db.close()
    assert len(store.history("a")) == 1
    store.close()


def test_refuses_a_newer_schema_and_a_foreign_file(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    SqliteRolloutStore(path).close()
    db = sqlite3.connect(path)
    with db:
        db.execute("UPDATE sluice_schema SET version = 99 WHERE component = 'rollouts'")
    db.close()
    with pytest.raises(StoreError, match="schema version 99"):
        SqliteRolloutStore(path)
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError, match="not a database"):
        SqliteRolloutStore(junk)
