"""Replicas over one rollout store: the leader drives, a follower serves the same weights.

A real SQLite store stands for the shared store (the Kubernetes one is tested against the fake
API server in tests/k8s); each replica has its own snapshot cache and ADS server, and a real
gRPC client stream on the follower's server reads what an Envoy connected to it is sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from controller.k8s.replica_report import ReplicaReport
from controller.policy.gateway import Gateway
from controller.policy.loading import load_policy
from controller.policy.rollout_policy import RolloutPolicy
from controller.rollout.inputs import AckResult, Command, Tick, Verdict
from controller.rollout.machine import start
from controller.rollout.state import Phase
from controller.runtime.reconciler import Reconciler
from controller.runtime.replicas import (
    Leadership,
    ReplicatedWeights,
    follow_store,
    lead_or_follow,
    publish_reports,
    served_overlay,
    sync_once,
)
from controller.store.rollouts import PolicySource, StoredRollout
from controller.store.sqlite_rollouts import SqliteRolloutStore
from controller.store.transitions import apply_input
from controller.xds.cache import SnapshotCache
from controller.xds.resources import build_snapshot
from controller.xds.server import start_server
from controller.xds.weights import WeightController

PY, GO = "comments-python", "comments-go"
SOURCE = PolicySource(path=None, git_commit=None, git_dirty=False, text="")


def policy(stages: str, route: str = "comments", extra: str = "") -> RolloutPolicy:
    return load_policy(
        f"""apiVersion: sluice.dev/v1alpha1
kind: RolloutPolicy
metadata: {{name: {route}}}
spec:
  route: {route}
  baseline: {{cluster: {PY}}}
  candidate: {{cluster: {GO}}}
  stages: {stages}
  analysis: {{interval: 100ms, slos: []}}
  ackTimeout: 2s
{extra}""",
        "policy.yaml",
    )


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteRolloutStore]:
    rollouts = SqliteRolloutStore(tmp_path / "state.db")
    yield rollouts
    rollouts.close()


def create(store: SqliteRolloutStore, pol: RolloutPolicy, name: str, at: float) -> None:
    state, event = start(pol, at, "test")
    store.create(name, pol, SOURCE, state, event)


def walk(store: SqliteRolloutStore, name: str, *inputs: Any) -> StoredRollout:
    for event in inputs:
        apply_input(store, name, event)
    return store.get(name)


def abort(store: SqliteRolloutStore, name: str, at: float) -> StoredRollout:
    """Abort, and every Envoy ACKs the 0% push: the rollout ends (aborted)."""
    walk(store, name, Command(kind="abort", actor="ops", reason="test", now=at))
    state = store.get(name).state
    return walk(
        store, name, AckResult(now=at + 0.5, seq=state.push_seq, weight=0.0, outcome="acked")
    )


def test_served_overlay_keeps_what_ended_rollouts_left_and_options_only_while_active(
    store: SqliteRolloutStore,
) -> None:
    sticky = "  sticky: {header: x-user}"
    create(store, policy("[{weight: 100%, bake: 1s}]", extra=sticky), "old", 100.0)
    walk(store, "old", Tick(101.0))  # pushing 100%: served while awaiting the ACK
    assert served_overlay(store.list()).weights == {"comments": {PY: 0, GO: 10_000}}
    assert "comments" in served_overlay(store.list()).options
    walk(store, "old", Command(kind="abort", actor="ops", reason="test", now=102.0))
    assert store.get("old").state.phase == Phase.ROLLING_BACK  # active: pushing 0%
    overlay = served_overlay(store.list())
    assert overlay.weights == {"comments": {PY: 10_000, GO: 0}}
    assert overlay.options == {}
    state = store.get("old").state
    walk(store, "old", AckResult(now=103.0, seq=state.push_seq, weight=0.0, outcome="acked"))
    assert store.get("old").state.phase == Phase.ABORTED
    overlay = served_overlay(store.list())
    assert overlay.weights == {"comments": {PY: 10_000, GO: 0}}
    assert overlay.options == {}


def test_the_newest_rollout_of_a_route_decides(store: SqliteRolloutStore) -> None:
    create(store, policy("[{weight: 100%, bake: 1s}]"), "first", 100.0)
    walk(store, "first", Tick(101.0))
    abort(store, "first", 102.0)
    create(store, policy("[{weight: 30%, bake: 1s}, {weight: 100%, bake: 1s}]"), "second", 200.0)
    walk(store, "second", Tick(201.0))
    assert served_overlay(store.list()).weights == {"comments": {PY: 7_000, GO: 3_000}}


def test_a_pending_rollout_leaves_its_route_alone(store: SqliteRolloutStore) -> None:
    create(store, policy("[{weight: 100%, bake: 1s}]"), "new", 100.0)
    assert served_overlay(store.list()).weights == {}


def test_a_route_keeps_what_the_last_ended_rollout_left_until_a_new_one_pushes(
    store: SqliteRolloutStore,
) -> None:
    """A fresh replica must serve a promoted route promoted even when a newer rollout of the
    route is still pending (or ended before pushing), and an active rollout always decides
    (a retried older rollout included)."""
    create(store, policy("[{weight: 100%, bake: 1s}]"), "promoted", 100.0)
    state = walk(store, "promoted", Tick(101.0)).state
    ack = AckResult(now=102.0, seq=state.push_seq, weight=100.0, outcome="acked")
    walk(store, "promoted", ack, Verdict(now=103.5, stage=0, outcome="pass"), Tick(104.0))
    assert store.get("promoted").state.phase == Phase.SUCCEEDED
    create(store, policy("[{weight: 30%, bake: 1s}, {weight: 100%, bake: 1s}]"), "next", 200.0)
    assert served_overlay(store.list()).weights == {"comments": {PY: 0, GO: 10_000}}
    walk(store, "next", Tick(201.0))  # pushing 30%: the active rollout decides
    assert served_overlay(store.list()).weights == {"comments": {PY: 7_000, GO: 3_000}}


@contextlib.asynccontextmanager
async def replica(gateway: Gateway) -> AsyncIterator[tuple[WeightController, int]]:
    """A replica's serving half: its own cache, weight controller and ADS server."""
    cache = SnapshotCache(build_snapshot(gateway, {}, label="replica"))
    server, port = await start_server(cache, "127.0.0.1:0")
    try:
        yield WeightController(gateway, cache), port
    finally:
        await server.stop(None)


async def test_a_follower_serves_what_the_leader_decided_and_nothing_more(
    ads: Any, store: SqliteRolloutStore, weights: WeightController, gateway: Gateway
) -> None:
    """The leader's reconciler drives; the follower copies each decision from the store; an
    Envoy on the follower sees the leader's stages, and an unchanged store changes nothing."""
    async with replica(gateway) as (follower, _):
        create(
            store,
            policy("[{weight: 10%, bake: 300ms}, {weight: 100%, bake: 300ms}]"),
            "comments",
            time.time(),
        )
        leader_stop, follower_stop = asyncio.Event(), asyncio.Event()
        client = await ads.synced_sotw("edge-1")  # on the leader: its ACKs move the stages
        leading = asyncio.create_task(Reconciler(store, weights, poll_s=0.05).run(leader_stop))
        following = asyncio.create_task(follow_store(store, follower, follower_stop, 0.05))

        async def envoy_acks_everything() -> None:
            while True:
                await client.ack(await client.recv(30))

        acking = asyncio.create_task(envoy_acks_everything())
        try:
            seen: list[dict[str, int]] = []
            deadline = time.monotonic() + 10
            while store.get("comments").state.phase != Phase.SUCCEEDED:
                assert time.monotonic() < deadline, store.get("comments").state
                served = follower.current()["comments"]
                if not seen or seen[-1] != served:
                    seen.append(served)
                await asyncio.sleep(0.01)
            await ads.eventually(lambda: follower.current()["comments"] == {PY: 0, GO: 10_000})
        finally:
            acking.cancel()
            leader_stop.set()
            follower_stop.set()
            await asyncio.gather(leading, following)
    # The follower went through the stages in order (a poll may skip one, never reorder).
    candidate = [s.get(GO, 0) for s in seen]
    assert candidate == sorted(candidate), seen
    assert candidate[-1] == 10_000, seen
    assert await sync_once(store, follower) == []


async def test_roles_never_overlap_and_follow_leadership(gateway: Gateway) -> None:
    leadership = Leadership()
    log: list[str] = []
    running: set[str] = set()

    def role(name: str) -> Any:
        async def run(stop: asyncio.Event) -> None:
            assert not running, f"{name} started while {running} ran"
            running.add(name)
            log.append(name)
            try:
                await stop.wait()
                await asyncio.sleep(0.05)  # a role takes a moment to end
            finally:
                running.discard(name)

        return run

    async def until_running(name: str) -> None:
        for _ in range(500):
            if running == {name}:
                return
            await asyncio.sleep(0.01)
        raise AssertionError(f"{name} not running: {running}")

    stop = asyncio.Event()
    task = asyncio.create_task(lead_or_follow(leadership, role("lead"), role("follow"), stop))
    await until_running("follow")
    for _ in range(3):
        leadership.started()
        await until_running("lead")
        await leadership.stopped()
        assert "lead" not in running  # stopped() returns once the lead role ended
        await until_running("follow")
    stop.set()
    await asyncio.wait_for(task, 5)
    assert log == ["follow", "lead", "follow", "lead", "follow", "lead", "follow"]
    assert not running


def report(identity: str, nodes: int, routes: dict[str, dict[str, int]]) -> ReplicaReport:
    return ReplicaReport(identity, time.time(), 30.0, nodes, True, routes)


async def test_a_leader_push_waits_for_the_envoys_of_every_live_replica(
    weights: WeightController,
) -> None:
    board: list[ReplicaReport] = []
    replicated = ReplicatedWeights(weights, lambda _now: list(board), poll_s=0.02)
    want = {PY: 7_000, GO: 3_000}

    alone = await replicated.set_weights("comments", want, timeout_s=0.5)
    assert alone.ack.outcome == "no_nodes"  # nobody anywhere: not a confirmation

    board.append(report("b", 2, {"comments": {PY: 10_000, GO: 0}}))
    behind = await replicated.set_weights("comments", want, timeout_s=0.3)
    assert behind.ack.outcome == "timeout"
    assert behind.ack.pending == ("replica b",)

    async def b_catches_up() -> None:
        await asyncio.sleep(0.1)
        board[0] = report("b", 2, {"comments": want})

    catching_up = asyncio.create_task(b_catches_up())
    held = await replicated.set_weights("comments", want, timeout_s=5)
    await catching_up
    assert held.ack.outcome == "acked"
    assert held.ack.acked == ("b (2 Envoys)",)
    assert replicated.current()["comments"] == want


async def test_unreadable_reports_never_confirm_a_push(weights: WeightController) -> None:
    def broken(_now: float) -> list[ReplicaReport]:
        raise ConnectionRefusedError("API server down")

    replicated = ReplicatedWeights(weights, broken, poll_s=0.02)
    change = await replicated.set_weights("comments", {PY: 5_000, GO: 5_000}, timeout_s=0.2)
    assert change.ack.outcome == "timeout"
    assert "API server down" in change.ack.pending[0]


async def test_a_replica_reports_whether_its_envoys_hold_what_it_serves(
    ads: Any, cache: SnapshotCache, weights: WeightController
) -> None:
    published: list[ReplicaReport] = []
    stop = asyncio.Event()
    client = await ads.synced_sotw("edge-1")
    task = asyncio.create_task(
        publish_reports(published.append, "a", cache, weights, stop, ttl_s=30.0, check_s=0.02)
    )
    try:
        await ads.eventually(lambda: bool(published))
        assert (published[-1].nodes, published[-1].held) == (1, True)
        change = asyncio.create_task(
            weights.set_weights("comments", {PY: 5_000, GO: 5_000}, timeout_s=5)
        )
        resp = await client.recv()  # sent, not ACKed yet: the Envoy does not hold it
        await ads.eventually(lambda: not published[-1].held)
        assert published[-1].routes["comments"] == {PY: 5_000, GO: 5_000}
        await client.ack(resp)
        await ads.eventually(lambda: published[-1].held)
        assert (await change).ack.outcome == "acked"
        count = len(published)
        await asyncio.sleep(0.2)  # nothing changed: nothing more is written
        assert len(published) == count
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)


async def test_a_fenced_reconciler_neither_pushes_nor_writes(
    store: SqliteRolloutStore, weights: WeightController
) -> None:
    """A leader past its renew deadline (``may_act`` false) must not act, whatever its role
    loop still does; once it may act again it carries on."""
    create(store, policy("[{weight: 40%, bake: 1s}, {weight: 100%, bake: 1s}]"), "r", 100.0)
    leading = False
    stop = asyncio.Event()
    reconciler = Reconciler(store, weights, poll_s=0.02, may_act=lambda: leading)
    task = asyncio.create_task(reconciler.run(stop))
    try:
        await asyncio.sleep(0.3)
        assert store.get("r").revision == 1  # still the created rollout: nothing written
        assert weights.current()["comments"] == {PY: 100, GO: 0}  # the gateway's own
        leading = True
        await wait_phase(store, "r", lambda s: s.desired_weight == 40.0)
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)


async def wait_phase(store: SqliteRolloutStore, name: str, check: Any) -> None:
    for _ in range(500):
        if check(store.get(name).state):
            return
        await asyncio.sleep(0.01)
    raise AssertionError(store.get(name).state)


async def test_the_leader_serves_the_store_on_routes_it_does_not_drive(
    store: SqliteRolloutStore, weights: WeightController
) -> None:
    create(store, policy("[{weight: 100%, bake: 1s}]"), "done", 100.0)
    state = walk(store, "done", Tick(101.0)).state
    walk(store, "done", AckResult(now=102.0, seq=state.push_seq, weight=100.0, outcome="acked"))
    walk(store, "done", Verdict(now=103.5, stage=0, outcome="pass"), Tick(104.0))
    # The route ended promoted; the leader's weights say otherwise (e.g. a deleted rollout).
    assert await sync_once(store, weights, idle_only=True) == ["comments"]
    assert weights.current()["comments"] == {PY: 0, GO: 10_000}
    # A route an active rollout moves is the reconciler's, not this loop's.
    create(store, policy("[{weight: 30%, bake: 1s}, {weight: 100%, bake: 1s}]"), "next", 200.0)
    walk(store, "next", Tick(201.0))
    assert await sync_once(store, weights, idle_only=True) == []
    assert weights.current()["comments"] == {PY: 0, GO: 10_000}


async def test_a_failing_report_is_retried_with_a_pause_not_at_every_check(
    cache: SnapshotCache, weights: WeightController
) -> None:
    """An API server that is down is not asked at every check (4 times a second) by every
    replica: the retries back off (PUBLISH_RETRY_S), and each outcome is told with the time
    its attempt began."""
    attempts: list[float] = []
    outcomes: list[tuple[bool, float]] = []

    def down(_report: ReplicaReport) -> None:
        attempts.append(time.monotonic())
        raise ConnectionRefusedError("API server down")

    stop = asyncio.Event()
    began = time.monotonic()
    task = asyncio.create_task(
        publish_reports(
            down,
            "a",
            cache,
            weights,
            stop,
            ttl_s=30.0,
            check_s=0.01,
            on_publish=lambda error, at: outcomes.append((error is None, at)),
        )
    )
    await asyncio.sleep(1.2)
    stop.set()
    await task
    # At 0 s, then after 0.5 s, then after 1 s more: at most 3 in 1.2 s (100+ without a pause).
    assert 1 <= len(attempts) <= 3, attempts
    assert [ok for ok, _ in outcomes] == [False] * len(attempts)
    assert all(began <= at <= tried for (_, at), tried in zip(outcomes, attempts, strict=True))


async def test_sync_once_tells_the_store_read_and_its_start_before_any_ack_wait(
    tmp_path: Path, weights: WeightController
) -> None:
    store = SqliteRolloutStore(tmp_path / "state.db")
    told: list[tuple[BaseException | None, float]] = []
    try:
        before = time.monotonic()
        await sync_once(store, weights, on_read=lambda error, at: told.append((error, at)))
        assert len(told) == 1
        assert told[0][0] is None
        assert before <= told[0][1] <= time.monotonic()
        store.close()
        told.clear()
        with pytest.raises(Exception):  # noqa: B017, PT011 - whatever a closed store raises
            await sync_once(store, weights, on_read=lambda error, at: told.append((error, at)))
        assert len(told) == 1
        assert told[0][0] is not None
    finally:
        store.close()
