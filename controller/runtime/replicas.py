"""Several controller replicas sharing one rollout store: the leader drives, every one serves.

With the Kubernetes store (design section 9) every replica serves xDS and only the holder of
the Lease runs the :class:`~controller.runtime.reconciler.Reconciler`. The others follow the
store: what the leader decided (a rollout's state, written before each push) is what they
serve, so an Envoy connected to any replica gets the same weights, and a replica that becomes
leader resumes every rollout from the weights it already serves: nothing moves at a failover.

:func:`served_overlay` is what a replica serves from the store alone (also at start, when a
fresh pod has no local state: a promoted route must stay promoted), :func:`follow_store` keeps
a follower in step, and :func:`lead_or_follow` switches between the two as leadership comes
and goes.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
import time
from collections.abc import Callable, Collection, Coroutine, Iterable, Mapping
from typing import Any

from controller.k8s.replica_report import ReplicaReport
from controller.runtime.fencing import describe
from controller.runtime.reconciler import Overlay, route_options
from controller.store.rollouts import RolloutStore, StoredRollout
from controller.xds import typeurls
from controller.xds.cache import SnapshotCache
from controller.xds.resources import RouteOptions
from controller.xds.weights import PersistError, WeightChange, WeightController

log = logging.getLogger(__name__)

FOLLOW_ACK_TIMEOUT_S = 2.0
"""How long a follower waits for its own Envoys' ACK of weights it copies from the store.
Only for the log: the leader's decision stands either way, and the next poll copies again."""

Outcome = Callable[[BaseException | None, float], None]
"""Told of each attempt's outcome: None on success, the exception on failure, and when the
attempt began (``time.monotonic()`` seconds: a success proves the API answered after it)."""

PUBLISH_RETRY_S = (0.5, 1.0, 2.0)
"""Pauses, in seconds, before each retry of a failed report publication (the last repeats):
an API server that is down is not asked four times a second by every replica."""


def served_overlay(rollouts: Iterable[StoredRollout]) -> Overlay:
    """What each route serves according to the store: the active rollout of the route (at most
    one) serves its ``state.served_weight`` and, while progressing or paused, its route options
    (the forcing header, sticky hashing and mirror of :func:`route_options`); a route with no
    active rollout serves what the rollout that ended last left there (a promoted route stays
    at 100%, a rolled back one at 0%). Rollouts that pushed nothing (pending, or ended before
    their first push) leave their route to the others, or to the gateway file.

    Unlike :func:`controller.runtime.reconciler.rollout_overlay`, ended rollouts count: a
    replica has no other record of what a finished rollout left on its route.
    """
    chosen: dict[str, StoredRollout] = {}
    for rollout in rollouts:
        if rollout.state.served_weight is None:
            continue
        seen = chosen.get(rollout.route)
        if seen is None or _decides_before(rollout, seen):
            chosen[rollout.route] = rollout
    weights: dict[str, dict[str, int]] = {}
    options: dict[str, RouteOptions] = {}
    for route, rollout in chosen.items():
        served = rollout.state.served_weight
        assert served is not None
        weights[route] = rollout.policy.envoy_weights(served)
        own = route_options(rollout.policy, rollout.state.phase)
        if own is not None:
            options[route] = own
    return Overlay(weights=weights, options=options)


def _decides_before(one: StoredRollout, other: StoredRollout) -> bool:
    """Whether ``one`` decides its route's weights rather than ``other``: an active rollout
    over an ended one, else the one whose state changed last."""
    return (one.active, one.state.updated_at, one.name) > (
        other.active,
        other.state.updated_at,
        other.name,
    )


async def sync_once(
    store: RolloutStore,
    weights: WeightController,
    *,
    idle_only: bool = False,
    on_read: Outcome | None = None,
) -> list[str]:
    """Serve what the store says (:func:`served_overlay`) on every route whose weights or
    options differ from it; returns the routes changed. Routes no rollout ever moved keep the
    gateway's weights. A route the gateway lacks is logged and skipped. ``idle_only``: only
    routes no active rollout moves (the leader's reconciler owns the others). ``on_read`` is
    told the store read's outcome as soon as it has one (not after the routes' ACK waits).

    Raises:
        StoreError: the store could not be read (``on_read`` was told first).
    """
    asked = time.monotonic()
    try:
        rollouts = await asyncio.to_thread(store.list)
    except Exception as exc:
        if on_read is not None:
            on_read(exc, asked)
        raise
    if on_read is not None:
        on_read(None, asked)
    overlay = served_overlay(rollouts)
    current = weights.current()
    routes = set(overlay.weights) | (weights.routes_with_options() - set(overlay.options))
    if idle_only:
        routes -= {r.route for r in rollouts if r.active}
    changed: list[str] = []
    for route in sorted(routes):
        # No weights in the store for the route: it keeps what it serves, options aside.
        served = overlay.weights.get(route, current.get(route))
        want_options = overlay.options.get(route)
        if current.get(route) == served and weights.options(route) == want_options:
            continue
        try:
            change = await weights.set_weights(
                route, served, options=want_options, timeout_s=FOLLOW_ACK_TIMEOUT_S
            )
        except (ValueError, PersistError) as exc:
            log.warning("cannot serve the store's weights on route %s: %s", route, exc)
            continue
        changed.append(route)
        log.info("following the leader: route %s serves %s (%s)", route, served, change.ack.outcome)
    return changed


async def follow_store(
    store: RolloutStore,
    weights: WeightController,
    stop: asyncio.Event,
    poll_s: float,
    *,
    idle_only: bool = False,
    on_read: Outcome | None = None,
) -> None:
    """Until ``stop`` is set: every ``poll_s`` seconds, :func:`sync_once`. Store errors are
    logged and retried at the next poll (the weights served stay as they are). The leader
    runs it with ``idle_only`` next to its reconciler: a route whose active rollout was
    deleted goes back to what the store says, as on the followers. ``on_read`` is told the
    outcome of each store read (:meth:`controller.runtime.fencing.Fence.outcome`). The first
    failure in a row is logged with its traceback, the next ones at debug level."""
    failing = False
    while not stop.is_set():
        try:
            await sync_once(store, weights, idle_only=idle_only, on_read=on_read)
        except Exception:
            if not failing:
                log.exception("cannot follow the rollout store; retrying every %gs", poll_s)
            else:
                log.debug("still cannot follow the rollout store", exc_info=True)
            failing = True
        else:
            if failing:
                log.info("following the rollout store again")
            failing = False
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), poll_s)


ROLE_STOP_S = 5.0
"""How long a role may take to end once told to (the reconciler ends within its poll
interval); after that it is cancelled."""

Role = Callable[[asyncio.Event], Coroutine[Any, Any, None]]
"""A role's loop: runs until the event it is given is set."""


class Leadership:
    """Leadership as the elector reports it (its ``on_started`` / ``on_stopped`` callbacks),
    as something :func:`lead_or_follow` can wait on."""

    def __init__(self) -> None:
        self._leading = False
        self._changed = asyncio.Event()
        self._lead_ended = asyncio.Event()
        self._lead_ended.set()

    @property
    def leading(self) -> bool:
        """This replica holds the lease now."""
        return self._leading

    def started(self) -> None:
        """The elector acquired the lease."""
        self._set(True)

    async def stopped(self) -> None:
        """The elector lost the lease, or is about to release it: returns once the lead role
        (if one runs under :func:`lead_or_follow`) has ended, so that nobody else can lead
        while this replica still drives a rollout."""
        self._set(False)
        await self._lead_ended.wait()

    def _set(self, leading: bool) -> None:
        if leading != self._leading:
            self._leading = leading
            self._changed.set()

    async def wait_change(self) -> None:
        """Return once leadership changed since the last call."""
        await self._changed.wait()
        self._changed.clear()


async def lead_or_follow(
    leadership: Leadership, lead: Role, follow: Role, stop: asyncio.Event
) -> None:
    """Run ``lead`` while ``leadership.leading``, ``follow`` otherwise, until ``stop``.

    A role ends (its event set, then awaited) before the other starts, so a replica that lost
    the lease no longer drives a rollout when it begins following: the reconciler's writes are
    compare-and-set on the rollout's revision, and whatever it had in flight either lands
    before the new leader reads, or conflicts and is dropped.
    """
    while not stop.is_set():
        role_stop = asyncio.Event()
        role = lead if leadership.leading else follow
        name = "lead" if leadership.leading else "follow"
        if role is lead:
            leadership._lead_ended.clear()
        task = asyncio.create_task(role(role_stop), name=name)
        changed = asyncio.create_task(leadership.wait_change())
        stopping = asyncio.create_task(stop.wait())
        try:
            await asyncio.wait({task, changed, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            role_stop.set()
            for waiter in (changed, stopping):
                waiter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(changed, stopping, return_exceptions=True)
            done, _ = await asyncio.wait({task}, timeout=ROLE_STOP_S)
            if not done:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
            leadership._lead_ended.set()
        if not task.cancelled() and (error := task.exception()) is not None:
            log.error("the %s role failed: %r; starting it again", name, error)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)


class ReplicatedWeights:
    """The leader's weight primitive when replicas share the Envoys.

    A push is confirmed once the leader's own Envoys ACKed it
    (:meth:`WeightController.set_weights`) *and* every live replica reports that its Envoys
    hold the same weights on the route (:class:`controller.k8s.replica_reports.ReplicaReport`):
    an Envoy connected to a follower counts as much as one connected to the leader. Outcomes:
    ``acked`` when some Envoy anywhere holds it and all do; ``no_nodes`` when no replica has
    an Envoy; ``timeout`` naming the replicas still behind (or the reports that could not be
    read) after ``timeout_s``; a local NACK or timeout is returned as it is.

    Args:
        local: this replica's weight controller.
        others: returns the other replicas' live reports at an epoch time (blocking: it runs
            in a worker thread); raises when they cannot be read.
        clock: epoch seconds (report liveness is judged by ``renewTime``).
        poll_s: seconds between two readings of the reports while waiting.
    """

    def __init__(
        self,
        local: WeightController,
        others: Callable[[float], list[ReplicaReport]],
        clock: Callable[[], float] = time.time,
        poll_s: float = 0.2,
    ) -> None:
        self._local = local
        self._others = others
        self._clock = clock
        self._poll_s = poll_s

    def options(self, route: str) -> RouteOptions | None:
        """See :meth:`WeightController.options`."""
        return self._local.options(route)

    def current(self) -> dict[str, dict[str, int]]:
        """See :meth:`WeightController.current`."""
        return self._local.current()

    def routes_with_options(self) -> set[str]:
        """See :meth:`WeightController.routes_with_options`."""
        return self._local.routes_with_options()

    async def set_weights(
        self,
        route: str,
        weights: Mapping[str, int] | None,
        *,
        options: RouteOptions | None = None,
        nodes: Collection[str] | None = None,
        timeout_s: float = 10.0,
    ) -> WeightChange:
        """:meth:`WeightController.set_weights`, then wait for the other replicas (above).

        Raises:
            ValueError, PersistError: as :meth:`WeightController.set_weights`.
        """
        started = time.monotonic()
        change = await self._local.set_weights(
            route, weights, options=options, nodes=nodes, timeout_s=timeout_s
        )
        if change.ack.outcome not in ("acked", "no_nodes") or nodes is not None:
            return change
        want = self._local.current().get(route, {})
        behind: list[str] = []
        while True:
            try:
                others = await asyncio.to_thread(self._others, self._clock())
            except Exception as exc:
                behind = [f"the replicas' reports ({exc!r})"]
            else:
                behind = [r.identity for r in others if not r.holds(route, want)]
                if not behind:
                    remote = tuple(f"{r.identity} ({r.nodes} Envoys)" for r in others if r.nodes)
                    outcome = "acked" if remote else change.ack.outcome
                    ack = dataclasses.replace(
                        change.ack, outcome=outcome, acked=change.ack.acked + remote
                    )
                    return dataclasses.replace(change, ack=ack)
            if time.monotonic() - started >= timeout_s:
                pending = tuple(f"replica {b}" for b in behind)
                ack = dataclasses.replace(change.ack, outcome="timeout", pending=pending)
                return dataclasses.replace(change, ack=ack)
            await asyncio.sleep(self._poll_s)


async def publish_reports(
    publish: Callable[[ReplicaReport], None],
    identity: str,
    cache: SnapshotCache,
    weights: WeightController,
    stop: asyncio.Event,
    ttl_s: float,
    check_s: float = 0.25,
    clock: Callable[[], float] = time.time,
    on_publish: Outcome | None = None,
    renew_s: float | None = None,
) -> None:
    """Until ``stop``: publish this replica's report (its Envoys, whether they hold its route
    configuration, its routes' weights) whenever it changes, checked every ``check_s``
    seconds, and at least every ``renew_s`` seconds (default: a third of ``ttl_s``) so that
    it stays live. ``publish`` blocks (it runs in a worker thread); a failure is retried
    after :data:`PUBLISH_RETRY_S` (the first one logged as a warning, the next ones at debug
    level). ``on_publish`` is told the outcome of each publication (a fence needs ``renew_s``
    well below its own limit). The cadence runs on the monotonic clock; ``clock`` (wall
    time) only dates the report (``renewTime``, which other replicas compare)."""
    last: tuple[int, bool, dict[str, dict[str, int]]] | None = None
    published_at = -math.inf
    retry_at = -math.inf
    failures = 0
    every_s = ttl_s / 3 if renew_s is None else renew_s
    while not stop.is_set():
        nodes, held = cache.holding(typeurls.ROUTE)
        content = (nodes, held, weights.current())
        asked = time.monotonic()
        due = content != last or asked - published_at >= every_s
        if due and asked >= retry_at:
            report = ReplicaReport(identity, clock(), ttl_s, nodes, held, content[2])
            try:
                await asyncio.to_thread(publish, report)
            except Exception as exc:
                log.log(
                    logging.WARNING if failures == 0 else logging.DEBUG,
                    "cannot publish this replica's report (retrying): %s",
                    describe(exc),
                )
                retry_at = asked + PUBLISH_RETRY_S[min(failures, len(PUBLISH_RETRY_S) - 1)]
                failures += 1
                if on_publish is not None:
                    on_publish(exc, asked)
            else:
                if failures:
                    log.info("this replica's report is published again")
                last, published_at, retry_at, failures = content, asked, -math.inf, 0
                if on_publish is not None:
                    on_publish(None, asked)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), check_s)
