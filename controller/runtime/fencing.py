"""A replica cut off from the Kubernetes API fences itself (issue 6).

:class:`Fence` is fed the outcome of every store read and every report renewal
(:func:`controller.runtime.replicas.follow_store`, :func:`~controller.runtime.replicas.
publish_reports`), judges them with :class:`~controller.runtime.freshness.StoreFreshness` every
``check_s`` seconds (:meth:`Fence.run`), and while the replica is stale:

* readiness fails (admin ``GET /readyz`` → 503 naming :meth:`Fence.reason`), so Kubernetes
  takes the pod out of the ``sluice-xds`` Service; liveness stays (a restart would not help);
* every open xDS stream ends with gRPC ``UNAVAILABLE`` when it becomes stale and again every
  ``reclose_s`` (:meth:`controller.xds.cache.SnapshotCache.close_streams`): its Envoys
  reconnect through the Service to a current replica. New streams are still accepted and get
  the last weights this replica knew (when every replica is cut off, Envoys keep being
  served rather than starting with no config);
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

    def stale(self) -> bool:
        """Stale at the last check (what ``sluice_store_stale`` exports)."""
        return self._last.stale

    def reason(self) -> str | None:
        """Why it was stale at the last check (what ``/readyz`` answers), None when current."""
        return self._last.reason

    def outcome(self, source: str) -> Callable[[BaseException | None], None]:
        """A hook recording each attempt at ``source`` (a name of
        :data:`controller.runtime.freshness.SOURCES`): called with None on success, with the
        exception on failure.

        Raises:
            ValueError: ``source`` is not tracked (checked now, not at the first call).
        """
        if source not in self._freshness.sources:
            raise ValueError(f"unknown source {source!r} (known: {self._freshness.sources})")

        def record(error: BaseException | None) -> None:
            now = self._monotonic()
            if error is None:
                self._freshness.succeeded(source, now)
            else:
                self._freshness.failed(source, now, describe(error))

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


def lease_fence(
    close_streams: Callable[[str], int],
    renew_deadline_s: float,
    lease_duration_s: float,
    monotonic: Callable[[], float] = time.monotonic,
) -> Fence:
    """The fence of a replica whose Lease timing is ``renew_deadline_s`` / ``lease_duration_s``
    (seconds, :class:`controller.k8s.lease.LeaseConfig`, which checks that the first is below
    the second): stale after ``renew_deadline_s`` without a store read or a report renewal,
    so before the leader stops counting its report (``lease_duration_s``); streams closed
    again every ``lease_duration_s`` while stale. Its grace starts now."""
    freshness = StoreFreshness(renew_deadline_s, monotonic(), reclose_s=lease_duration_s)
    return Fence(freshness, close_streams, monotonic)
