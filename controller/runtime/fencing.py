"""A replica cut off from the Kubernetes API fences itself (issue 6).

:class:`Fence` is fed the outcome of every store read and every report renewal
(:func:`controller.runtime.replicas.follow_store`, :func:`~controller.runtime.replicas.
publish_reports`), judges them with :class:`~controller.runtime.freshness.StoreFreshness` every
``check_s`` seconds (:meth:`Fence.run`), and while the replica is stale:

* readiness fails (admin ``GET /readyz`` → 503 naming :meth:`Fence.reason`), so Kubernetes
  takes the pod out of the ``sluice-xds`` Service; liveness stays (a restart would not help);
* every open xDS stream ends with gRPC ``UNAVAILABLE`` when it becomes stale and again every
  :data:`RECLOSE_S` (:meth:`controller.xds.cache.SnapshotCache.close_streams`): its Envoys
  reconnect through the Service to a current replica (once Kubernetes has taken this pod out
  of it; an Envoy that lands here again meanwhile is sent off at the next close). New
  streams are still accepted and get the last weights this replica knew (when every replica
  is cut off, Envoys keep being served rather than starting with no config);
* ``sluice_store_stale`` is 1, and one WARNING is logged on each change.

Only in Kubernetes mode: the SQLite mode has no other replica to defer to.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from controller.runtime.freshness import Check, StoreFreshness

log = logging.getLogger(__name__)


MAX_ERROR_CHARS = 200
"""An error's description is cut there: it goes into ``/readyz`` and a gRPC status message."""


def describe(error: BaseException) -> str:
    """One line naming ``error``: its type, then its HTTP status and reason when it has them
    (the ``kubernetes`` client's ``ApiException``, whose ``repr`` says neither), else its
    message; at most :data:`MAX_ERROR_CHARS` characters of it."""
    status = getattr(error, "status", None)
    if status is not None:
        reason = getattr(error, "reason", None)
        text = f"{status} {reason}" if reason else str(status)
    else:
        text = str(error)
    text = " ".join(text.split())
    if len(text) > MAX_ERROR_CHARS:
        text = text[: MAX_ERROR_CHARS - 3] + "..."
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


class Fence:
    """This replica's freshness as last judged, and what follows from it.

    Args:
        freshness: the pure tracker (its ``max_age_s`` below the report lease duration).
        close_streams: ends every open xDS stream with the reason given; returns how many
            (:meth:`controller.xds.cache.SnapshotCache.close_streams`).
        monotonic: monotonic seconds.

    Every method runs on the event loop (the outcome hooks are called there by their loops).
    """

    def __init__(
        self,
        freshness: StoreFreshness,
        close_streams: Callable[[str], int],
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._freshness = freshness
        self._close_streams = close_streams
        self._monotonic = monotonic
        self._last = Check(stale=False, reason=None, changed=False, close_streams=False)

    @property
    def max_age_s(self) -> float:
        """Seconds without a success after which the replica is stale."""
        return self._freshness.max_age_s

    def stale(self) -> bool:
        """Stale at the last check (what ``sluice_store_stale`` exports)."""
        return self._last.stale

    def reason(self) -> str | None:
        """Why it was stale at the last check (what ``/readyz`` answers), None when current."""
        return self._last.reason

    def outcome(self, source: str) -> Callable[[BaseException | None, float], None]:
        """A hook recording each attempt at ``source`` (a name of
        :data:`controller.runtime.freshness.SOURCES`): called with None on success, with the
        exception on failure, and the attempt's start (this fence's monotonic seconds). A
        success counts from the start of its attempt: the API answered after it, and the
        report it renewed is dated then (a slow answer must not make the replica look
        fresher than the leader judges it).

        Raises:
            ValueError: ``source`` is not tracked (checked now, not at the first call).
        """
        if source not in self._freshness.sources:
            raise ValueError(f"unknown source {source!r} (known: {self._freshness.sources})")

        def record(error: BaseException | None, started_at: float) -> None:
            if error is None:
                self._freshness.succeeded(source, started_at)
            else:
                self._freshness.failed(source, self._monotonic(), describe(error))

        return record

    def check(self) -> Check:
        """Judge now; log a change, close the streams when due. Returns the judgement."""
        self._last = check = self._freshness.check(self._monotonic())
        if check.changed and check.stale:
            log.warning(
                "this replica is stale, fencing it: readiness fails and its xDS streams are "
                "closed (Envoys reconnect to a current replica): %s",
                check.reason,
            )
        elif check.changed:
            log.warning("this replica is current again: the store and its report are readable")
        if check.close_streams:
            assert check.reason is not None
            closed = self._close_streams(f"this xDS server is stale: {check.reason}")
            log.warning("closed %d xDS streams of a stale replica", closed)
        return check

    async def run(self, stop: asyncio.Event, check_s: float) -> None:
        """Until ``stop``: :meth:`check` every ``check_s`` seconds."""
        while not stop.is_set():
            self.check()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), check_s)


RECLOSE_S = 3.0
"""While stale, the xDS streams are closed again this often, in seconds: about the time
Kubernetes takes to drop a pod failing readiness from the Service (2 probes 2 s apart,
``deploy/controller/deployment.yaml``). An Envoy that reconnected to this replica meanwhile is
sent off again soon, not after a lease duration (Envoy keeps its configuration across a
reconnect: the churn is cheap)."""

SKEW_MARGIN_S = 0.5
"""Seconds kept between the fence and the leader's verdict on this replica's report, for the
wall clocks of two replicas (the report's ``renewTime`` is compared with the leader's clock)."""


def fence_max_age_s(renew_deadline_s: float, lease_duration_s: float, check_s: float) -> float:
    """How long a replica may go without a store read or report renewal before it is stale:
    the renew deadline, or less when needed so that the fence, checked every ``check_s``
    seconds, acts before the leader stops counting the report (its ``lease_duration_s``)
    with :data:`SKEW_MARGIN_S` to spare. Successes count from their attempt's start, which
    is also the report's date, so the request's own duration does not eat the margin.

    Raises:
        ValueError: no positive age fits (``lease_duration_s`` too short for ``check_s``).
    """
    max_age = min(renew_deadline_s, lease_duration_s - check_s - SKEW_MARGIN_S)
    if max_age <= 0:
        raise ValueError(
            f"a lease of {lease_duration_s:g}s leaves no time to fence a replica checked every"
            f" {check_s:g}s"
        )
    return max_age


def lease_fence(
    close_streams: Callable[[str], int],
    renew_deadline_s: float,
    lease_duration_s: float,
    check_s: float,
    monotonic: Callable[[], float] = time.monotonic,
) -> Fence:
    """The fence of a replica whose Lease timing is ``renew_deadline_s`` / ``lease_duration_s``
    (seconds, :class:`controller.k8s.lease.LeaseConfig`), checked every ``check_s`` seconds:
    stale after :func:`fence_max_age_s` without a store read or a report renewal, so before
    the leader stops counting its report; streams closed again every :data:`RECLOSE_S` while
    stale. Its grace starts now.

    Raises:
        ValueError: see :func:`fence_max_age_s`.
    """
    max_age = fence_max_age_s(renew_deadline_s, lease_duration_s, check_s)
    freshness = StoreFreshness(max_age, monotonic(), reclose_s=RECLOSE_S)
    return Fence(freshness, close_streams, monotonic)
