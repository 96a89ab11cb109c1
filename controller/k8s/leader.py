"""Leader election over a ``coordination.k8s.io/v1`` Lease: the I/O loop around
:func:`controller.k8s.lease.decide`.

Every ``retry_period_s`` (jittered while not leading) a round reads the Lease, folds it into
the local observation, decides, and writes with a compare-and-swap on ``resourceVersion``
(create when absent; a 409 means another replica wrote first: not leader this round). The
synchronous ``kubernetes`` client runs in worker threads (``asyncio.to_thread``), each call
bounded by what is left of the renew deadline.

Safety: leadership is counted from the local time at which the last successful write
*started*; the write landed later and other replicas saw it later still, so their
``lease_duration_s`` runs out after ours. The leader stops leading ``renew_deadline_s`` after
that start (``is_leader`` turns false by the clock even if the loop is starved), which is
before any other replica may take the lease. A leader that stepped down because it could not
renew waits ``2 * lease_duration_s`` before competing again, so a healthy replica takes over
(an addition to client-go, whose callers usually exit when they lose the lease). On a
graceful stop it first stops leading (``on_stopped`` returns), then releases the Lease (no
holder, ``leaseDurationSeconds`` 1) so another replica takes over within a retry period.

Source: semantics of client-go ``tools/leaderelection`` (``leaderelection.go``,
``resourcelock/leaselock.go``); Kubernetes API concepts, optimistic concurrency.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import urllib3
from kubernetes import client

from controller.k8s.lease import (
    JITTER_FACTOR,
    LeaseConfig,
    LeaseRecord,
    Observation,
    decide,
    observe,
    release_record,
)

log = logging.getLogger(__name__)

Callback = Callable[[], Awaitable[None]] | Callable[[], None]

_MANAGED = (
    "holderIdentity",
    "leaseDurationSeconds",
    "acquireTime",
    "renewTime",
    "leaseTransitions",
)


@dataclass(frozen=True)
class _Round:
    """What one round's thread found: the new observation, and whether our write landed."""

    observation: Observation
    won: bool


class LeaderElector:
    """Compete for the Lease ``cfg.namespace/cfg.name`` as ``cfg.identity``.

    ``api_client``: a ``kubernetes.client.ApiClient``. ``on_started`` / ``on_stopped``: called
    (sync, or awaited when they return an awaitable) when this replica starts / stops leading;
    ``on_started`` runs as a task so a slow start does not delay renewals, and is cancelled
    if still running when leadership ends; ``on_stopped`` always follows it, and is awaited
    before the Lease is released or anyone else can lead. Callback errors are logged, not
    raised. ``clock``: epoch seconds, written as ``acquireTime``/``renewTime``.
    ``monotonic``: seconds on a clock that never jumps, which times everything local (when a
    record was first seen, the renew deadline), as Go's monotonic clock reading does in
    client-go: a wall clock stepped back must not extend a leader's term.

    API errors (5xx, timeouts, connection refused) are logged and retried; they never escape
    :meth:`run`.
    """

    def __init__(
        self,
        api_client: client.ApiClient,
        cfg: LeaseConfig,
        *,
        on_started: Callback,
        on_stopped: Callback,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        # Any: the client's stubs type bodies and results as models, but this module sends
        # and receives raw JSON dicts (_preload_content=False) to keep unknown spec fields.
        self._api: Any = client.CoordinationV1Api(api_client)
        self._cfg = cfg
        self._on_started = on_started
        self._on_stopped = on_stopped
        self._clock = clock
        self._mono = monotonic
        self._leading = False
        self._renewed_at = -math.inf
        self._cooldown_until = -math.inf
        self._observation: Observation | None = None
        self._started_task: asyncio.Task[None] | None = None

    @property
    def is_leader(self) -> bool:
        """True while this replica leads: it won the last write and the renew deadline since
        that write started has not passed (by ``monotonic``)."""
        return self._leading and self._mono() < self._renewed_at + self._cfg.renew_deadline_s

    @property
    def holder(self) -> str | None:
        """The Lease's holder as last observed (``None``: no holder, or not read yet)."""
        obs = self._observation
        return obs.record.holder if obs is not None and obs.record is not None else None

    async def run(self, stop: asyncio.Event) -> None:
        """Run rounds until ``stop`` is set (or the task is cancelled); then stop leading and
        release the Lease if it is still ours. Returns once released (or the release failed,
        bounded by ``renew_deadline_s``)."""
        cfg = self._cfg
        try:
            while not stop.is_set():
                await self._round()
                if self._leading:
                    left = self._renewed_at + cfg.renew_deadline_s - self._mono()
                    wait = max(0.0, min(cfg.retry_period_s, left))
                else:
                    wait = cfg.retry_period_s * (1 + random.uniform(0, JITTER_FACTOR))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), wait)
        finally:
            await self._step_down("stopping", graceful=True)
            await self._release()

    async def _round(self) -> None:
        cfg = self._cfg
        started = self._mono()
        if self._leading:
            budget = self._renewed_at + cfg.renew_deadline_s - started
            if budget <= 0:
                await self._step_down("renew deadline passed")
                return
        else:
            budget = cfg.renew_deadline_s
        may_write = self._leading or started >= self._cooldown_until
        result: _Round | None = None
        try:
            result = await asyncio.wait_for(
                asyncio.to_thread(self._attempt, budget, may_write), budget
            )
        except TimeoutError:
            log.warning("lease %s/%s: round timed out after %.2fs", cfg.namespace, cfg.name, budget)
        except (client.ApiException, urllib3.exceptions.HTTPError, ValueError) as exc:
            log.warning("lease %s/%s: round failed: %s", cfg.namespace, cfg.name, _brief(exc))
        except Exception:
            # Anything else (a malformed reply, a credential refresh failing) is a failed
            # round too: an elector that died would never compete again, unnoticed.
            log.exception("lease %s/%s: round failed", cfg.namespace, cfg.name)
        if result is not None:
            self._observation = result.observation
        if result is not None and result.won:
            self._renewed_at = started
            if not self._leading:
                self._become_leader()
            return
        if not self._leading:
            return
        holder = self.holder
        if result is not None and holder != cfg.identity:
            await self._step_down(f"the lease is held by {holder!r}")
        elif self._mono() >= self._renewed_at + cfg.renew_deadline_s:
            await self._step_down("renew deadline passed")

    def _attempt(self, budget: float, may_write: bool) -> _Round:
        """One round's I/O (in a worker thread): read, decide, CAS-write."""
        cfg = self._cfg
        deadline = time.monotonic() + budget
        obj = self._read(budget)
        now = self._mono()
        record = LeaseRecord.from_spec(obj.get("spec")) if obj is not None else None
        rv = obj["metadata"].get("resourceVersion") if obj is not None else None
        obs = observe(self._observation, rv, record, now)
        decision = decide(record, obs.observed_at, now, cfg, wall_now=self._clock())
        if decision.write is None or not may_write:
            return _Round(obs, won=False)
        left = deadline - time.monotonic()
        if left <= 0:
            return _Round(obs, won=False)
        written = self._write(obj, decision.write, left)
        if written is None:
            return _Round(obs, won=False)
        # What the server stored (leaseDurationSeconds rounded up), so the next read of an
        # unchanged Lease compares equal.
        stored = LeaseRecord.from_spec(written.get("spec"))
        new_rv = written["metadata"].get("resourceVersion")
        return _Round(Observation(new_rv, stored, self._mono()), won=True)

    def _read(self, timeout: float) -> dict[str, Any] | None:
        cfg = self._cfg
        try:
            resp = self._api.read_namespaced_lease(
                cfg.name, cfg.namespace, _preload_content=False, _request_timeout=timeout
            )
        except client.ApiException as exc:
            if exc.status == 404:
                return None
            raise
        obj: dict[str, Any] = json.loads(resp.data)
        return obj

    def _write(
        self, current: dict[str, Any] | None, record: LeaseRecord, timeout: float
    ) -> dict[str, Any] | None:
        """Create the Lease (``current`` is None) or replace it with ``current``'s
        ``resourceVersion`` as precondition; ``None`` when another writer won (409)."""
        cfg = self._cfg
        try:
            if current is None:
                body = {
                    "apiVersion": "coordination.k8s.io/v1",
                    "kind": "Lease",
                    "metadata": {"name": cfg.name, "namespace": cfg.namespace},
                    "spec": record.to_spec(),
                }
                resp = self._api.create_namespaced_lease(
                    cfg.namespace, body, _preload_content=False, _request_timeout=timeout
                )
            else:
                kept = {k: v for k, v in (current.get("spec") or {}).items() if k not in _MANAGED}
                body = {**current, "spec": {**kept, **record.to_spec()}}
                resp = self._api.replace_namespaced_lease(
                    cfg.name, cfg.namespace, body, _preload_content=False, _request_timeout=timeout
                )
        except client.ApiException as exc:
            if exc.status == 409:
                log.info("lease %s/%s: another replica wrote first", cfg.namespace, cfg.name)
                return None
            raise
        obj: dict[str, Any] = json.loads(resp.data)
        return obj

    def _become_leader(self) -> None:
        cfg = self._cfg
        log.info("lease %s/%s: %s started leading", cfg.namespace, cfg.name, cfg.identity)
        self._leading = True
        self._started_task = asyncio.create_task(
            self._call(self._on_started, "on_started"), name=f"leader-started-{cfg.identity}"
        )

    async def _step_down(self, why: str, *, graceful: bool = False) -> None:
        if not self._leading:
            return
        cfg = self._cfg
        self._leading = False
        log.warning(
            "lease %s/%s: %s stopped leading: %s", cfg.namespace, cfg.name, cfg.identity, why
        )
        if not graceful:
            # Probably cut off from the API: a healthy replica may take the lease one lease
            # duration (plus one retry to notice) after our last renewal; stay out of its way
            # for twice that, else our own still-held record would let us renew at once.
            self._cooldown_until = self._mono() + 2 * cfg.lease_duration_s
        task, self._started_task = self._started_task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._call(self._on_stopped, "on_stopped")

    async def _release(self) -> None:
        obs = self._observation
        if obs is None or obs.record is None or obs.record.holder != self._cfg.identity:
            return
        budget = self._cfg.renew_deadline_s
        try:
            await asyncio.wait_for(asyncio.to_thread(self._release_sync, budget), budget)
        except (TimeoutError, client.ApiException, urllib3.exceptions.HTTPError, ValueError) as exc:
            log.warning(
                "lease %s/%s: release failed: %s", self._cfg.namespace, self._cfg.name, _brief(exc)
            )

    def _release_sync(self, budget: float) -> None:
        obj = self._read(budget)
        if obj is None:
            return
        record = release_record(LeaseRecord.from_spec(obj.get("spec")), self._clock(), self._cfg)
        if record is None:
            return
        written = self._write(obj, record, budget)
        if written is not None:
            stored = LeaseRecord.from_spec(written.get("spec"))
            rv = written["metadata"].get("resourceVersion")
            self._observation = Observation(rv, stored, self._mono())
            log.info(
                "lease %s/%s: released by %s",
                self._cfg.namespace,
                self._cfg.name,
                self._cfg.identity,
            )

    async def _call(self, callback: Callback, what: str) -> None:
        try:
            result = callback()
            if inspect.isawaitable(result):
                await result
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("leader election %s callback failed", what)


def _brief(exc: BaseException) -> str:
    if isinstance(exc, client.ApiException):
        return f"HTTP {exc.status} {exc.reason}"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
