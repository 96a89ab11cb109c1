"""Several real processes sharing one SQLite rollout store (the controller and CLI commands).

Workers are forked processes, each with its own connection, released together by a barrier.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sqlite3
import time
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any

import pytest

from controller.policy.rollout_policy import RolloutPolicy
from controller.rollout.actions import RecordEvent
from controller.rollout.state import Phase, RolloutState
from controller.store.rollouts import PolicySource, RevisionConflictError, RouteBusyError
from controller.store.sqlite_rollouts import SqliteRolloutStore

CTX = multiprocessing.get_context("fork")
SOURCE = PolicySource(path=None, git_commit=None, git_dirty=False, text="")


def policy(route: str) -> RolloutPolicy:
    return RolloutPolicy.model_validate(
        {
            "apiVersion": "sluice.dev/v1alpha1",
            "kind": "RolloutPolicy",
            "metadata": {"name": route},
            "spec": {"route": route, "baseline": {"cluster": "py"}, "candidate": {"cluster": "go"}},
        }
    )


def created(at: float) -> RecordEvent:
    return RecordEvent(at=at, actor="cli", transition="pending", reason="created")


def _collect(pipes: list[Connection], procs: list[Any], timeout: float = 30) -> list[Any]:
    """Each worker's result (None for one that died or hung), then every worker ended."""
    deadline = time.monotonic() + timeout
    results: list[Any] = [None] * len(pipes)
    try:
        pending = set(range(len(pipes)))
        while pending and time.monotonic() < deadline:
            for i in list(pending):
                if pipes[i].poll(0.05):
                    results[i] = pipes[i].recv()
                    pending.discard(i)
                elif not procs[i].is_alive() and not pipes[i].poll():
                    pending.discard(i)  # died without a result
    finally:
        for p in procs:
            p.join(timeout=5)
            if p.is_alive():
                p.kill()
                p.join(timeout=5)
    return results


def _advance_loop(path: Path, worker: int, count: int, barrier: Barrier, out: Connection) -> None:
    """Read, derive, compare-and-set ``count`` times, retrying on conflicts."""
    store = SqliteRolloutStore(path)
    barrier.wait(timeout=10)
    done = conflicts = 0
    while done < count:
        current = store.get("c")
        state = current.state.model_copy(update={"push_seq": current.state.push_seq + 1})
        ev = RecordEvent(
            at=time.time(),
            actor=f"worker-{worker}",
            transition="progressing",
            reason="advance",
            details={"worker": worker, "n": done, "revision": current.revision + 1},
        )
        try:
            store.update("c", current.revision, state, [ev])
        except RevisionConflictError:
            conflicts += 1
            continue
        done += 1
    store.close()
    out.send((done, conflicts))


def test_concurrent_compare_and_set_loses_no_update(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    store = SqliteRolloutStore(path)
    store.create("c", policy("comments"), SOURCE, RolloutState(), created(1.0))
    workers, per_worker = 4, 25
    barrier = CTX.Barrier(workers)
    pipes = [CTX.Pipe(duplex=False) for _ in range(workers)]
    procs = [
        CTX.Process(target=_advance_loop, args=(path, w, per_worker, barrier, pipes[w][1]))
        for w in range(workers)
    ]
    for p in procs:
        p.start()
    results = _collect([r for r, _ in pipes], procs)
    assert all(p.exitcode == 0 for p in procs), [p.exitcode for p in procs]
    assert [r[0] for r in results if r is not None] == [per_worker] * workers

    total = workers * per_worker
    final = store.get("c")
    assert final.revision == total + 1
    assert final.state.push_seq == total
    history = store.history("c")[1:]
    assert [e.seq for e in history] == list(range(2, total + 2))
    # every event exactly once, in revision order
    assert [e.details["revision"] for e in history] == list(range(2, total + 2))
    assert sorted((e.details["worker"], e.details["n"]) for e in history) == [
        (w, n) for w in range(workers) for n in range(per_worker)
    ]
    store.close()


def _create_on_route(path: Path, name: str, rounds: int, barrier: Barrier, out: Connection) -> None:
    store = SqliteRolloutStore(path)
    results: list[tuple[str, str]] = []
    for k in range(rounds):
        barrier.wait(timeout=10)
        try:
            store.create(f"{name}-{k}", policy(f"route-{k}"), SOURCE, RolloutState(), created(1.0))
            results.append(("won", ""))
        except RouteBusyError as exc:
            results.append(("busy", str(exc)))
    store.close()
    out.send(results)


def test_racing_creates_on_one_route_have_one_winner(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    SqliteRolloutStore(path).close()
    rounds = 8
    barrier = CTX.Barrier(2)
    pipes = [CTX.Pipe(duplex=False) for _ in range(2)]
    procs = [
        CTX.Process(target=_create_on_route, args=(path, name, rounds, barrier, pipes[i][1]))
        for i, name in enumerate(("alpha", "beta"))
    ]
    for p in procs:
        p.start()
    alpha, beta = _collect([r for r, _ in pipes], procs)
    assert alpha is not None
    assert beta is not None
    store = SqliteRolloutStore(path)
    for k in range(rounds):
        outcomes = sorted([alpha[k][0], beta[k][0]])
        assert outcomes == ["busy", "won"], (k, alpha[k], beta[k])
        winner = "alpha" if alpha[k][0] == "won" else "beta"
        loser_message = beta[k][1] if winner == "alpha" else alpha[k][1]
        assert loser_message == (
            f"route 'route-{k}' is already being moved by rollout '{winner}-{k}' (pending); "
            "abort it or wait until it ends"
        )
        assert [r.name for r in store.list() if r.route == f"route-{k}"] == [f"{winner}-{k}"]
    store.close()


def _write_then_hang(path: Path, ready: Connection) -> None:
    """Start an update with a large history, hold it right before COMMIT, tell the parent."""
    store = SqliteRolloutStore(path)
    db: sqlite3.Connection = store._db
    db.execute("PRAGMA cache_size = 5")  # spill uncommitted pages into the WAL file

    def trace(statement: str) -> None:
        if statement.strip().upper() == "COMMIT":
            ready.send(os.path.getsize(f"{path}-wal"))
            time.sleep(60)

    db.set_trace_callback(trace)
    current = store.get("c")
    state = current.state.model_copy(update={"phase": Phase.ABORTED, "reason": "never"})
    events = [
        RecordEvent(at=2.0, actor="x", transition="t", reason="r" * 2000, details={"i": i})
        for i in range(300)
    ]
    store.update("c", current.revision, state, events)


def test_a_process_killed_mid_write_leaves_the_previous_state(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    store = SqliteRolloutStore(path)
    before = RolloutState(phase=Phase.PROGRESSING, stage=1, desired_weight=5.0, acked_weight=5.0)
    store.create("c", policy("comments"), SOURCE, before, created(1.0))
    wal_before = os.path.getsize(f"{path}-wal")
    store.close()

    receive, send = CTX.Pipe(duplex=False)
    proc = CTX.Process(target=_write_then_hang, args=(path, send))
    proc.start()
    try:
        assert receive.poll(30), "the writer never reached COMMIT"
        wal_at_commit = receive.recv()
    finally:
        if proc.pid is not None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.join(timeout=10)
    assert proc.exitcode == -signal.SIGKILL
    assert wal_at_commit > wal_before  # uncommitted pages had reached the WAL file

    again = SqliteRolloutStore(path)
    got = again.get("c")
    assert got.state == before
    assert got.revision == 1
    assert [e.transition for e in again.history("c")] == ["pending"]
    # the dead writer's lock is gone: the next write goes through at once
    after = before.model_copy(update={"phase": Phase.PAUSED})
    assert again.update("c", 1, after, []).revision == 2
    assert again.get("c").state == after
    again.close()


@pytest.fixture(autouse=True)
def _no_leftover_children() -> Any:
    yield
    for child in CTX.active_children():
        child.kill()
        child.join(timeout=5)
