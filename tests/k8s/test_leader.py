"""Leader election (controller.k8s.leader) with two or three electors against the fake API
server, through the real ``kubernetes`` client, with short durations (lease 1.5 s, renew
deadline 1 s, retry 0.2 s).

A sampler checks every few milliseconds that never two electors lead at once and that the
Lease names the one that leads; the callbacks check that one replica's ``on_started`` never
runs while another has not finished ``on_stopped``. Assertions are on order and safety; the
only time bounds are generous waits for liveness.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from fakekube import FakeKube
from kubernetes import client

from controller.k8s.leader import LeaderElector
from controller.k8s.lease import LeaseConfig, parse_micro_time

NS = "sluice"
NAME = "sluice-controller"
LEASE_PATH = rf"/apis/coordination\.k8s\.io/v1/namespaces/{NS}/leases/{NAME}$"
FAST = {"lease_duration_s": 1.5, "renew_deadline_s": 1.0, "retry_period_s": 0.2}


def lease_spec(kube: FakeKube) -> dict[str, Any] | None:
    leases = [o for o in kube.objects("leases", NS) if o["metadata"]["name"] == NAME]
    return dict(leases[0].get("spec") or {}) if leases else None


@dataclass
class Replica:
    ident: str
    elector: LeaderElector
    stop: asyncio.Event
    task: asyncio.Task[None]


@dataclass
class Tracker:
    """Callbacks and samples shared by every replica of one test."""

    kube: FakeKube
    events: list[tuple[str, str, float, dict[str, Any] | None]] = field(default_factory=list)
    active: set[str] = field(default_factory=set)
    overlaps: list[str] = field(default_factory=list)
    check_holder: bool = True
    samples: int = 0
    led_samples: int = 0

    def callbacks(self, ident: str, use_async: bool) -> tuple[Callable[[], Any], Callable[[], Any]]:
        def started() -> None:
            if self.active:
                self.overlaps.append(f"{ident} started while {sorted(self.active)} led")
            self.active.add(ident)
            self.events.append(("started", ident, time.time(), lease_spec(self.kube)))

        def stopped() -> None:
            self.active.discard(ident)
            self.events.append(("stopped", ident, time.time(), lease_spec(self.kube)))

        if not use_async:
            return started, stopped

        async def started_async() -> None:
            await asyncio.sleep(0)
            started()

        async def stopped_async() -> None:
            await asyncio.sleep(0)
            stopped()

        return started_async, stopped_async

    def of(self, kind: str, ident: str | None = None) -> list[tuple[str, float, Any]]:
        return [(i, t, s) for k, i, t, s in self.events if k == kind and ident in (None, i)]

    async def sample(self, replicas: list[Replica]) -> None:
        while True:
            leaders = [r.ident for r in replicas if r.elector.is_leader]
            self.samples += 1
            if len(leaders) > 1:
                self.overlaps.append(f"sampled leaders {leaders}")
            elif leaders and self.check_holder:
                self.led_samples += 1
                holder = (lease_spec(self.kube) or {}).get("holderIdentity")
                if holder != leaders[0]:
                    self.overlaps.append(f"{leaders[0]} leads but the Lease names {holder!r}")
            await asyncio.sleep(0.005)


def skewed_time(skew_s: float) -> float:
    return time.time() + skew_s


@contextlib.asynccontextmanager
async def running(
    kube: FakeKube,
    idents: list[str],
    wall_skew_s: dict[str, float] | None = None,
    **timing: float,
) -> AsyncIterator[tuple[list[Replica], Tracker]]:
    """Run one elector per identity (odd ones with sync callbacks); ``wall_skew_s`` offsets
    an elector's wall clock (what it writes as renewTime), never its monotonic clock."""
    tracker = Tracker(kube)
    replicas = []
    for n, ident in enumerate(idents):
        cfg = LeaseConfig(identity=ident, name=NAME, namespace=NS, **(FAST | timing))
        on_started, on_stopped = tracker.callbacks(ident, use_async=n % 2 == 0)
        skew = (wall_skew_s or {}).get(ident, 0.0)
        elector = LeaderElector(
            kube.api_client(),
            cfg,
            on_started=on_started,
            on_stopped=on_stopped,
            clock=functools.partial(skewed_time, skew),
        )
        stop = asyncio.Event()
        replicas.append(Replica(ident, elector, stop, asyncio.create_task(elector.run(stop))))
    sampler = asyncio.create_task(tracker.sample(replicas))
    try:
        yield replicas, tracker
    finally:
        for r in replicas:
            r.stop.set()
        await asyncio.wait_for(asyncio.gather(*(r.task for r in replicas)), 20)
        sampler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sampler
    assert tracker.overlaps == []
    assert tracker.samples > 0


async def wait_until(pred: Callable[[], bool], within_s: float) -> bool:
    """Poll ``pred`` until true (True) or ``within_s`` seconds pass (False): liveness only."""
    deadline = time.monotonic() + within_s
    while not pred():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True


def leaders(replicas: list[Replica]) -> list[Replica]:
    return [r for r in replicas if r.elector.is_leader]


async def test_one_of_three_leads_and_holds_the_lease(kube: FakeKube) -> None:
    # Wall clocks an hour apart change nothing: expiry is timed on what each one observed.
    skews = {"a": 3600.0, "b": -3600.0}
    async with running(kube, ["a", "b", "c"], skews) as (replicas, tracker):
        assert await wait_until(lambda: len(leaders(replicas)) == 1, 10)
        await asyncio.sleep(2)  # several lease durations of renewals and follower rounds
        assert await wait_until(lambda: len(leaders(replicas)) == 1, 10)
        (leader,) = leaders(replicas)
        spec = lease_spec(kube)
        assert spec is not None
        assert spec["holderIdentity"] == leader.ident
        assert spec["leaseDurationSeconds"] == 2  # 1.5 s rounded up: never shortened
        for r in replicas:
            assert r.elector.holder == leader.ident
        assert tracker.led_samples > 0
        starts = tracker.of("started")
        assert starts
        assert starts[-1][0] == leader.ident
    # Graceful stop of everyone: the last leader stepped down and released the Lease.
    spec = lease_spec(kube)
    assert spec is not None
    assert "holderIdentity" not in spec
    assert spec["leaseDurationSeconds"] == 1
    assert len(tracker.of("stopped")) == len(tracker.of("started"))


async def test_graceful_stop_hands_over_without_waiting_for_expiry(kube: FakeKube) -> None:
    # A 30 s lease: the follower can only lead within the wait below if the Lease is released.
    async with running(kube, ["a", "b"], lease_duration_s=30.0) as (replicas, tracker):
        assert await wait_until(lambda: len(leaders(replicas)) == 1, 10)
        (old,) = leaders(replicas)
        (new,) = [r for r in replicas if r is not old]
        old.stop.set()
        await asyncio.wait_for(old.task, 10)
        assert not old.elector.is_leader
        assert await wait_until(lambda: new.elector.is_leader, 10)
        spec = lease_spec(kube)
        assert spec is not None
        assert spec["holderIdentity"] == new.ident
        assert spec["leaseTransitions"] == 1
        order = [(k, i) for k, i, _, _ in tracker.events]
        assert order == [("started", old.ident), ("stopped", old.ident), ("started", new.ident)]
        # The old leader had finished stopping before it released (the Lease still named it).
        ((_, _, at_stop),) = tracker.of("stopped", old.ident)
        assert at_stop["holderIdentity"] == old.ident


async def test_leader_that_cannot_renew_steps_down_before_expiry(kube: FakeKube) -> None:
    async with running(kube, ["a", "b", "c"]) as (replicas, tracker):
        assert await wait_until(lambda: len(leaders(replicas)) == 1, 10)
        (old,) = leaders(replicas)
        kube.fail_next("PUT", LEASE_PATH, 500, times=1000)
        assert await wait_until(lambda: bool(tracker.of("stopped", old.ident)), 10)
        kube.fail_next("PUT", LEASE_PATH, 500, times=0)  # the API is back
        ((_, stopped_at, spec_at_stop),) = tracker.of("stopped", old.ident)
        # It stopped while the Lease still named it and before that lease could expire.
        assert spec_at_stop["holderIdentity"] == old.ident
        expiry = parse_micro_time(spec_at_stop["renewTime"]) + spec_at_stop["leaseDurationSeconds"]
        assert stopped_at < expiry
        assert not old.elector.is_leader
        # Another replica takes over, only once the old lease expired.
        assert await wait_until(lambda: any(r is not old for r in leaders(replicas)), 15)
        (new,) = leaders(replicas)
        (_, started_at, spec_at_start) = tracker.of("started", new.ident)[-1]
        assert started_at >= expiry
        assert spec_at_start["holderIdentity"] == new.ident
        assert spec_at_start["leaseTransitions"] == spec_at_stop["leaseTransitions"] + 1


async def test_conflicts_leave_exactly_one_leader(kube: FakeKube) -> None:
    # The first two creations lose to "another writer" (409 AlreadyExists), on top of the
    # real races of three candidates starting together.
    kube.fail_next("POST", rf"/namespaces/{NS}/leases$", 409, times=2)
    async with running(kube, ["a", "b", "c"]) as (replicas, tracker):
        assert await wait_until(lambda: len(leaders(replicas)) == 1, 10)
        (leader,) = leaders(replicas)
        posts = [p for m, p, _ in kube.requests if m == "POST" and p.endswith("/leases")]
        assert len(posts) >= 3
        # A lost renewal CAS (409) is not a step-down: the leader re-reads and renews.
        before = lease_spec(kube)
        assert before is not None
        kube.fail_next("PUT", LEASE_PATH, 409, times=2)
        # Followers do not write an unexpired lease: the next two PUTs are the leader's.
        assert await wait_until(
            lambda: (lease_spec(kube) or {}).get("renewTime") != before["renewTime"], 10
        )
        await asyncio.sleep(0.5)
        assert leaders(replicas) == [leader]
        assert tracker.of("stopped") == []
        assert [i for i, _, _ in tracker.of("started")] == [leader.ident]
        spec = lease_spec(kube)
        assert spec is not None
        assert spec["leaseTransitions"] == 0


async def test_leader_finding_the_lease_taken_stops_at_once(kube: FakeKube) -> None:
    async with running(kube, ["a", "b"]) as (replicas, tracker):
        assert await wait_until(lambda: len(leaders(replicas)) == 1, 10)
        (old,) = leaders(replicas)
        # Someone (kubectl, a misconfigured replica) overwrites the Lease: until the leader's
        # next round reads it, the Lease names someone else.
        tracker.check_holder = False
        coord = client.CoordinationV1Api(kube.api_client())
        lease = coord.read_namespaced_lease(NAME, NS)
        spec = lease.spec
        assert spec is not None
        assert spec.lease_transitions == 0
        spec.holder_identity = "intruder"
        spec.lease_transitions = 1
        coord.replace_namespaced_lease(NAME, NS, lease)
        assert await wait_until(lambda: bool(tracker.of("stopped", old.ident)), 10)
        assert old.elector.holder == "intruder"
        # The intruder never renews: once its lease expires, a replica takes over.
        assert await wait_until(lambda: len(leaders(replicas)) == 1, 15)
        after = lease_spec(kube)
        assert after is not None
        assert after["leaseTransitions"] == 2


async def test_slow_or_failing_callbacks_do_not_stop_renewals(kube: FakeKube) -> None:
    cancelled = asyncio.Event()

    async def start_forever() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    def stop_badly() -> None:
        raise RuntimeError("on_stopped failed")

    cfg = LeaseConfig(identity="a", name=NAME, namespace=NS, **FAST)
    elector = LeaderElector(kube.api_client(), cfg, on_started=start_forever, on_stopped=stop_badly)
    stop = asyncio.Event()
    task = asyncio.create_task(elector.run(stop))
    try:
        assert await wait_until(lambda: elector.is_leader, 10)
        first = lease_spec(kube)
        assert first is not None
        await asyncio.sleep(2)  # longer than the lease: renewals went on meanwhile
        assert elector.is_leader
        later = lease_spec(kube)
        assert later is not None
        assert parse_micro_time(later["renewTime"]) > parse_micro_time(first["renewTime"])
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)  # the on_stopped error is logged, not raised
    assert cancelled.is_set()
    assert not elector.is_leader
    released = lease_spec(kube)
    assert released is not None
    assert "holderIdentity" not in released
    assert elector.holder is None
