"""The SQLite rollout store: records, compare-and-set updates, history, route ownership."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest

from controller.policy.rollout_policy import RolloutPolicy
from controller.rollout.actions import RecordEvent
from controller.rollout.state import Phase, RolloutState
from controller.store.rollouts import (
    CorruptRecordError,
    PolicySource,
    RevisionConflictError,
    RolloutExistsError,
    RolloutNotFoundError,
    RouteBusyError,
    StoreError,
)
from controller.store.sqlite_rollouts import SqliteRolloutStore
from controller.store.weights import SqliteWeightStore


def policy(route: str = "comments", candidate: str = "comments-go") -> RolloutPolicy:
    return RolloutPolicy.model_validate(
        {
            "apiVersion": "sluice.dev/v1alpha1",
            "kind": "RolloutPolicy",
            "metadata": {"name": route},
            "spec": {
                "route": route,
                "baseline": {"cluster": "comments-python"},
                "candidate": {"cluster": candidate},
                "stages": [{"weight": "1%", "bake": "2m"}, {"weight": "100%", "bake": "90s"}],
                "analysis": {"slos": [{"metric": "parity", "minValue": "99.9%"}]},
                "override": {"header": "x-sluice-target"},
                "sticky": {"cookie": "session"},
            },
        }
    )


SOURCE = PolicySource(
    path="policies/comments.yaml", git_commit="3f2a9c1" * 5 + "abcde", git_dirty=True, text="x: 1"
)


def event(
    at: float, transition: str = "pending", actor: str = "alice", **details: Any
) -> RecordEvent:
    return RecordEvent(at=at, actor=actor, transition=transition, reason="why", details=details)


def pending(at: float = 100.0) -> RolloutState:
    return RolloutState(updated_at=at, reason="created")


@pytest.fixture
def store(tmp_path: Path) -> Any:
    s = SqliteRolloutStore(tmp_path / ".sluice" / "state.db")
    yield s
    s.close()


def test_create_get_list(store: SqliteRolloutStore) -> None:
    created = store.create("comments-v2", policy(), SOURCE, pending(), event(100.0))
    store.create(
        "orders-v2", policy("orders"), PolicySource(None, None, False, "y"), pending(), event(101.0)
    )
    assert created.revision == 1
    assert created.route == "comments"
    got = store.get("comments-v2")
    assert got == created
    assert got.policy == policy()
    assert got.source == SOURCE
    assert got.state == pending()
    assert got.created_at == 100.0
    assert got.active
    assert [r.name for r in store.list()] == ["comments-v2", "orders-v2"]
    assert store.list()[1].source == PolicySource(None, None, False, "y")


def test_update_is_compare_and_set(store: SqliteRolloutStore) -> None:
    store.create("c", policy(), SOURCE, pending(), event(100.0))
    progressing = pending().model_copy(
        update={"phase": Phase.PROGRESSING, "stage": 0, "desired_weight": 1.0}
    )
    updated = store.update(
        "c", 1, progressing, [event(110.0, "pending → progressing", "controller", seq=1)]
    )
    assert updated.revision == 2
    assert updated.state == progressing
    assert store.get("c").state == progressing

    paused = progressing.model_copy(update={"phase": Phase.PAUSED})
    with pytest.raises(RevisionConflictError) as info:
        store.update("c", 1, paused, [event(120.0, "progressing → paused")])
    assert info.value.current == 2
    assert isinstance(info.value, StoreError)
    # the losing write left nothing behind
    assert store.get("c").state == progressing
    assert store.get("c").revision == 2
    assert [e.transition for e in store.history("c")] == ["pending", "pending → progressing"]

    assert store.update("c", 2, paused, []).revision == 3
    assert len(store.history("c")) == 2


def test_history_oldest_first_and_limit(store: SqliteRolloutStore) -> None:
    store.create("c", policy(), SOURCE, pending(), event(100.0))
    state = pending()
    for rev in range(1, 5):
        state = state.model_copy(update={"push_seq": rev})
        store.update(
            "c", rev, state, [event(100.0 + rev, f"t{rev}a"), event(100.5 + rev, f"t{rev}b", n=rev)]
        )
    history = store.history("c")
    assert [e.seq for e in history] == list(range(1, 10))
    assert history[0].transition == "pending"
    assert history[-1].transition == "t4b"
    assert history[-1].details == {"n": 4}
    assert history[-1].rollout == "c"
    assert history[-1].actor == "alice"
    assert history[-1].at == 104.5
    assert [e.transition for e in store.history("c", limit=3)] == ["t3b", "t4a", "t4b"]
    assert store.history("c", limit=0) == []
    assert len(store.history("c", limit=100)) == 9


def test_unknown_rollout(store: SqliteRolloutStore) -> None:
    with pytest.raises(RolloutNotFoundError, match="no rollout named 'nope'"):
        store.get("nope")
    with pytest.raises(RolloutNotFoundError):
        store.update("nope", 1, pending(), [])
    with pytest.raises(RolloutNotFoundError):
        store.history("nope")


def test_an_active_name_cannot_be_created_again(store: SqliteRolloutStore) -> None:
    store.create("c", policy(), SOURCE, pending(), event(100.0))
    with pytest.raises(RolloutExistsError, match="'c' already exists and is pending"):
        store.create("c", policy(), SOURCE, pending(), event(200.0))
    assert store.get("c").revision == 1
    assert len(store.history("c")) == 1


def test_route_busy(store: SqliteRolloutStore) -> None:
    store.create("comments-v2", policy(), SOURCE, pending(), event(100.0))
    store.update("comments-v2", 1, pending().model_copy(update={"phase": Phase.PROGRESSING}), [])
    with pytest.raises(RouteBusyError) as info:
        store.create("comments-v3", policy(), SOURCE, pending(), event(200.0))
    assert str(info.value) == (
        "route 'comments' is already being moved by rollout 'comments-v2' (progressing); "
        "abort it or wait until it ends"
    )
    assert info.value.holder == "comments-v2"
    with pytest.raises(RolloutNotFoundError):
        store.get("comments-v3")
    # another route is free
    store.create("orders-v2", policy("orders"), SOURCE, pending(), event(200.0))


def test_a_terminal_rollout_frees_its_route(store: SqliteRolloutStore) -> None:
    store.create("comments-v2", policy(), SOURCE, pending(), event(100.0))
    store.update(
        "comments-v2", 1, pending().model_copy(update={"phase": Phase.ABORTED}), [event(150.0)]
    )
    assert store.list(active_only=True) == []
    store.create("comments-v3", policy(), SOURCE, pending(), event(200.0))
    assert [r.name for r in store.list(active_only=True)] == ["comments-v3"]
    assert [r.name for r in store.list()] == ["comments-v2", "comments-v3"]
    # a retry making the old one active again collides with the new one, in the database
    with pytest.raises(RouteBusyError, match="rollout 'comments-v3' \\(pending\\)"):
        store.update("comments-v2", 2, pending(), [event(300.0)])
    assert store.get("comments-v2").state.phase is Phase.ABORTED
    assert store.get("comments-v2").revision == 2


def test_replacing_a_terminal_rollout_keeps_its_history(store: SqliteRolloutStore) -> None:
    store.create("c", policy(), SOURCE, pending(), event(100.0, "pending"))
    done = pending().model_copy(update={"phase": Phase.SUCCEEDED})
    store.update("c", 1, done, [event(150.0, "progressing → succeeded")])
    other = PolicySource("policies/c2.yaml", None, False, "z")
    replaced = store.create(
        "c", policy(candidate="comments-rust"), other, pending(300.0), event(300.0, "again")
    )
    assert replaced.revision == 3
    got = store.get("c")
    assert got == replaced
    assert got.policy.spec.candidate.cluster == "comments-rust"
    assert got.source == other
    assert got.created_at == 300.0
    assert got.state.phase is Phase.PENDING
    assert [(e.seq, e.transition) for e in store.history("c")] == [
        (1, "pending"),
        (2, "progressing → succeeded"),
        (3, "again"),
    ]
    assert store.update("c", 3, done, []).revision == 4


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


def test_threads_sharing_one_store_lose_no_update(store: SqliteRolloutStore) -> None:
    store.create("c", policy(), SOURCE, pending(), event(100.0))
    per_thread = 20

    def work(worker: int) -> None:
        done = 0
        while done < per_thread:
            current = store.get("c")
            state = current.state.model_copy(update={"push_seq": current.state.push_seq + 1})
            try:
                store.update("c", current.revision, state, [event(1.0, "t", worker=worker, n=done)])
            except RevisionConflictError:
                continue
            done += 1

    threads = [threading.Thread(target=work, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    final = store.get("c")
    assert final.revision == 1 + 4 * per_thread
    assert final.state.push_seq == 4 * per_thread
    seen = [(e.details["worker"], e.details["n"]) for e in store.history("c")[1:]]
    assert sorted(seen) == [(w, n) for w in range(4) for n in range(per_thread)]
