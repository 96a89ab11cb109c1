"""The reconciler: drives every active rollout through the state machine.

One task per active rollout; a supervisor lists the store every ``poll_s`` seconds and starts
tasks for new rollouts (an operator's ``sluice rollout start`` writes the store directly). Each
task loops:

1. re-read the rollout (operators' commands land in the store at any time);
2. if the state awaits an ACK, read it again from the store's record itself (never a cache:
   ``get(name, fresh=True)``), push ``desired_weight`` through the weight primitive and feed
   the outcome back; an operator's change meanwhile (a new push number, e.g. an abort) cancels
   the wait (or the backoff after an unconfirmed push), so the newest decision is pushed next;
3. if an analysis is due, judge the stage and feed the verdict;
4. feed the time (bake ends, deadlines, pending rollouts start);
5. sleep until the next due time, at most ``poll_s``.

Every transition is written to the store *before* its weights are pushed (compare-and-set on
the revision; a conflict re-reads and decides again), so a crash between a push and the write
of its outcome restarts with the push still owed: the controller pushes the same weights again
(an idempotent change: Envoys that have them ACK at once) and the bake clock starts only at the
ACK. A restarted controller serves each active rollout's weights from the first snapshot on
(:func:`rollout_overlay`), never a default.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

from controller.policy.rollout_policy import RolloutPolicy
from controller.rollout.actions import RecordEvent
from controller.rollout.inputs import AckKind, AckResult, Input, Tick
from controller.rollout.machine import analysis_due, next_due
from controller.rollout.state import Phase, RolloutState
from controller.runtime.analyzer import BakeOnlyAnalyzer, StageAnalyzer
from controller.runtime.metrics import ControllerMetrics
from controller.store.rollouts import RolloutNotFoundError, RolloutStore, StoredRollout
from controller.store.transitions import apply_input
from controller.xds.resources import Mirror, RouteOptions
from controller.xds.weights import PersistError, WeightChange

log = logging.getLogger(__name__)

_OPTION_PHASES = frozenset({Phase.PROGRESSING, Phase.PAUSED})
"""Phases whose route carries the policy's forcing header, sticky hashing and mirror to the
comparator. A rollback removes them: after it, no request should reach the candidate, not even
a mirrored one through the comparator."""

MIRROR_SCALE = 10_000
"""Mirrored requests per million per percent (``FractionalPercent.MILLION``)."""


def route_mirror(policy: RolloutPolicy) -> Mirror | None:
    """The policy's tap-compare as Envoy serves it (None without ``spec.parity``): the route's
    requests mirrored to the comparator's cluster, ``parity.mirror`` percent of them
    (``round(percent * 10_000)`` per million); only ``parity.methods`` unless a sister target
    takes the writes (then every method: the comparator keeps writes away from production)."""
    parity = policy.spec.parity
    if parity is None:
        return None
    return Mirror(
        cluster=parity.comparator.cluster,
        fraction_per_million=round(parity.mirror * MIRROR_SCALE),
        route=policy.spec.route,
        methods=None if parity.sister is not None else parity.methods,
        shadow_suffix=parity.shadow_suffix,
    )


def route_options(policy: RolloutPolicy, phase: Phase) -> RouteOptions | None:
    """The route options a rollout serves in ``phase`` (None: none): the forcing header, the
    sticky hashing and the mirror to the comparator, while progressing or paused."""
    spec = policy.spec
    mirrored = route_mirror(policy)
    if phase not in _OPTION_PHASES or (
        spec.override is None and spec.sticky is None and mirrored is None
    ):
        return None
    force_header = spec.override.header if spec.override else None
    force: tuple[tuple[str, str], ...] = ()
    if spec.override is not None:
        force = (
            (spec.override.candidate, spec.candidate.cluster),
            (spec.override.baseline, spec.baseline.cluster),
        )
    return RouteOptions(
        force_header=force_header,
        force=force,
        hash_header=spec.sticky.header if spec.sticky else None,
        hash_cookie=spec.sticky.cookie if spec.sticky else None,
        mirror=mirrored,
    )


class NotLeadingError(Exception):
    """This replica may no longer act on rollouts (it is not, or may no longer be, the
    leader): nothing was pushed or written."""


class WeightPrimitive(Protocol):
    """What the reconciler needs of the weight primitive: :class:`WeightController`, or
    :class:`controller.runtime.replicas.ReplicatedWeights` when replicas share the Envoys."""

    def options(self, route: str) -> RouteOptions | None: ...

    def current(self) -> dict[str, dict[str, int]]: ...

    def routes_with_options(self) -> set[str]: ...

    async def set_weights(
        self,
        route: str,
        weights: Mapping[str, int] | None,
        *,
        options: RouteOptions | None = None,
        nodes: Collection[str] | None = None,
        timeout_s: float = 10.0,
    ) -> WeightChange: ...


@dataclass(frozen=True)
class Overlay:
    """What active rollouts serve on their routes, for a controller's first snapshot."""

    weights: dict[str, dict[str, int]]
    options: dict[str, RouteOptions]


def rollout_overlay(rollouts: Iterable[StoredRollout]) -> Overlay:
    """The weights and options of every active rollout's route: the weight awaiting its ACK
    (it may be on the wire already) or else the last ACKed one. Rollouts that pushed nothing
    yet leave their route alone."""
    weights: dict[str, dict[str, int]] = {}
    options: dict[str, RouteOptions] = {}
    for rollout in rollouts:
        state, policy = rollout.state, rollout.policy
        if state.terminal or state.served_weight is None:
            continue
        weights[policy.spec.route] = policy.envoy_weights(state.served_weight)
        own = route_options(policy, state.phase)
        if own is not None:
            options[policy.spec.route] = own
    return Overlay(weights=weights, options=options)


class Reconciler:
    """Drives the active rollouts of ``store`` by pushing weights through ``weights``.

    Args:
        store: the rollout store (shared with CLI processes).
        weights: the weight primitive of the running xDS server.
        analyzer: judges stages (default: :class:`BakeOnlyAnalyzer`).
        clock: wall-clock seconds since the epoch (bake clocks survive restarts).
        poll_s: how often the store is re-read for new rollouts and operators' commands.
        may_act: checked before every push and every write (a replica's leadership: a leader
            whose lease may have passed to another stops at once, before its role is told).
        on_events: called on the event loop with the rollout as stored and the events of
            every transition the reconciler stores (e.g. notifications); it must not block.
            Operators' commands are stored by their own processes and do not come here.
        metrics: counts the verdicts and transitions applied and observes push-to-ACK times.
    """

    def __init__(
        self,
        store: RolloutStore,
        weights: WeightPrimitive,
        analyzer: StageAnalyzer | None = None,
        clock: Callable[[], float] = time.time,
        poll_s: float = 0.25,
        on_events: Callable[[StoredRollout, tuple[RecordEvent, ...]], None] | None = None,
        metrics: ControllerMetrics | None = None,
        may_act: Callable[[], bool] = lambda: True,
    ) -> None:
        self._may_act = may_act
        self._metrics = metrics
        self._store = store
        self._on_events = on_events
        self._weights = weights
        self._analyzer = analyzer or BakeOnlyAnalyzer()
        self._clock = clock
        self._poll_s = poll_s
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._route_locks: dict[str, asyncio.Lock] = {}
        self._settling: dict[str, asyncio.Task[None]] = {}

    async def run(self, stop: asyncio.Event) -> None:
        """Supervise until ``stop`` is set; then cancel the rollout tasks (their state is in
        the store: a restarted controller carries on)."""
        try:
            while not stop.is_set():
                try:
                    active = await asyncio.to_thread(self._store.list, True)
                except Exception:
                    log.exception("cannot list rollouts; retrying")
                    active = []
                else:
                    self._settle_routes({r.route for r in active})
                for rollout in active:
                    task = self._tasks.get(rollout.name)
                    if task is None or task.done():
                        self._tasks[rollout.name] = asyncio.create_task(
                            self._drive(rollout.name), name=f"rollout {rollout.name}"
                        )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self._poll_s)
        finally:
            tasks = [*self._tasks.values(), *self._settling.values()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def _settle_routes(self, owned: set[str]) -> None:
        """Start removing the route options (forcing header, sticky hashing) of every route
        that no active rollout moves any more: a rollout that ended (or was aborted) leaves
        none behind, even when its own task died or its name was reused."""
        for route in self._weights.routes_with_options() - owned:
            task = self._settling.get(route)
            if task is None or task.done():
                self._settling[route] = asyncio.create_task(
                    self._drop_options(route), name=f"settle {route}"
                )

    # -- one rollout --------------------------------------------------------------------------

    async def _drive(self, name: str) -> None:
        try:
            while True:
                if not self._may_act():
                    return  # no longer the leader: another replica drives (the supervisor ends)
                rollout = await asyncio.to_thread(self._store.get, name)
                if rollout.state.awaiting_ack and rollout.state.phase != Phase.PENDING:
                    # A push moves weights before any compare-and-set could stop it: decide
                    # it on the record itself, not on a cached copy that may lag behind
                    # another replica's writes (e.g. the previous leader's).
                    rollout = await asyncio.to_thread(self._store.get, name, True)
                state = rollout.state
                if state.terminal:
                    return  # the supervisor removes its route options (_settle_routes)
                now = self._clock()
                if state.awaiting_ack and state.phase != Phase.PENDING:
                    result = await self._push(rollout)
                    if result is None:
                        continue  # superseded by a newer decision: push that one
                    after = await self._apply(name, result)
                    if result.outcome != "acked" and not after.state.terminal:
                        await self._back_off(after, result.seq)
                    continue
                if analysis_due(state, rollout.policy, now):
                    verdict = await self._analyzer.judge(rollout, now)
                    if self._metrics is not None:
                        self._metrics.verdict(name, verdict.outcome)
                    await self._apply(name, verdict)
                    continue
                after = await self._apply(name, Tick(now))
                if after.revision != rollout.revision:
                    continue  # moved (or an operator's command): look again at once
                due = next_due(after.state, after.policy)
                wait = self._poll_s if due is None else min(self._poll_s, max(0.0, due - now))
                await asyncio.sleep(wait)
        except (RolloutNotFoundError, NotLeadingError):
            return
        except asyncio.CancelledError:
            raise
        except Exception:
            # The rollout's state is in the store; the supervisor starts a new task.
            log.exception("rollout %s: reconciling failed; retrying", name)
            await asyncio.sleep(self._poll_s)

    async def _apply(self, name: str, event: Input) -> StoredRollout:
        """Feed ``event`` to the machine and store the result (:func:`apply_input`).

        Raises:
            NotLeadingError: ``may_act`` says no (nothing is written).
        """
        if not self._may_act():
            raise NotLeadingError(name)
        stored, decision = await asyncio.to_thread(apply_input, self._store, name, event)
        for record in decision.events:
            log.info("rollout %s: %s: %s", name, record.transition, record.reason)
        if self._metrics is not None:
            self._metrics.transitions(decision.events)
        if decision.events and self._on_events is not None:
            try:
                self._on_events(stored, decision.events)
            except Exception:  # stored already: a listener's failure must not stop the rollout
                log.exception("rollout %s: an event listener failed", name)
        return stored

    async def _push(self, rollout: StoredRollout) -> AckResult | None:
        """Serve the state's desired weight and wait for the ACKs. Returns None when an
        operator's decision replaced this push meanwhile (the wait is cancelled)."""
        state, policy = rollout.state, rollout.policy
        route = policy.spec.route
        lock = self._route_locks.setdefault(route, asyncio.Lock())
        async with lock:
            if not self._may_act():
                raise NotLeadingError(rollout.name)
            change = asyncio.create_task(
                self._weights.set_weights(
                    route,
                    policy.envoy_weights(state.desired_weight),
                    options=route_options(policy, state.phase),
                    timeout_s=policy.spec.ack_timeout.total_seconds(),
                )
            )
            try:
                while True:
                    done, _ = await asyncio.wait({change}, timeout=self._poll_s)
                    if done:
                        break
                    if await self._replaced(rollout):
                        change.cancel()
                        with contextlib.suppress(asyncio.CancelledError):
                            await change
                        return None
            except asyncio.CancelledError:
                change.cancel()  # shutting down: stop waiting for the ACK too
                raise
        now = self._clock()
        try:
            outcome = change.result()
        except ValueError as exc:
            return _result(state, now, "invalid", str(exc))
        except PersistError as exc:
            return _result(state, now, "unsaved", str(exc))
        if self._metrics is not None:
            self._metrics.push(outcome)
        ack = outcome.ack
        if ack.outcome == "acked":
            return _result(state, now, "acked")
        if ack.outcome == "nacked":
            message = "; ".join(f"{node}: {msg}" for node, msg in sorted(ack.nacked.items()))
            return _result(state, now, "nacked", message)
        if ack.outcome == "no_nodes":
            return _result(state, now, "no_nodes")
        waiting = ", ".join(sorted(ack.pending)) if ack.pending else ""
        return _result(state, now, "timeout", f"waiting for {waiting}" if waiting else ack.outcome)

    async def _replaced(self, rollout: StoredRollout, seq: int | None = None) -> bool:
        """Whether the stored rollout now awaits another push than ``seq`` (default: the
        push ``rollout`` awaits): an operator's command replaced it."""
        try:
            latest = await asyncio.to_thread(self._store.get, rollout.name)
        except Exception:
            return False
        return latest.state.push_seq != (rollout.state.push_seq if seq is None else seq)

    async def _back_off(self, after: StoredRollout, seq: int) -> None:
        """Wait before pushing ``seq`` again (it was not confirmed), unless an operator's
        command replaces it meanwhile (e.g. an abort): that one is pushed at once."""
        if after.state.push_seq != seq:
            return
        deadline = time.monotonic() + _backoff(after.state.push_attempts)
        while (left := deadline - time.monotonic()) > 0:
            await asyncio.sleep(min(self._poll_s, left))
            if await self._replaced(after, seq):
                return

    async def _drop_options(self, route: str) -> None:
        """Serve ``route``'s current weights without options, unless a rollout moves the route
        again by now (checked under the route's lock, which every push of the route takes)."""
        lock = self._route_locks.setdefault(route, asyncio.Lock())
        async with lock:
            if self._weights.options(route) is None or not self._may_act():
                return
            try:
                active = await asyncio.to_thread(self._store.list, True)
            except Exception:
                log.exception("cannot list rollouts; the options of %s stay for now", route)
                return
            if any(r.route == route for r in active):
                return
            weights = self._weights.current().get(route)
            try:
                await self._weights.set_weights(route, weights, options=None)
            except (ValueError, PersistError):
                log.exception("cannot remove the rollout options of route %s", route)


def _result(state: RolloutState, now: float, outcome: AckKind, message: str = "") -> AckResult:
    return AckResult(
        now=now, seq=state.push_seq, weight=state.desired_weight, outcome=outcome, message=message
    )


def _backoff(attempts: int) -> float:
    """Seconds before pushing again after ``attempts`` unconfirmed pushes (0.5 s doubling,
    at most 10 s)."""
    return float(min(10.0, 0.5 * 2 ** max(0, attempts - 1)))
