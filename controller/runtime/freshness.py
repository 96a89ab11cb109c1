"""Whether this replica still knows what is current: pure decisions, time passed in.

In Kubernetes mode every replica serves xDS from the rollout store and renews its report
Lease (:mod:`controller.k8s.replica_reports`); the leader counts a replica's Envoys only while
that report is live (``lease_duration_s``, 15 s by default). A replica cut off from the API
server can do neither, and the leader moves on without it (e.g. rolls a bad candidate back to
0%) while its Envoys keep the old share. :class:`StoreFreshness` tracks when this replica last
*succeeded* at each of the two (a store read, a report renewal) and says when it is stale, so
that the runtime fences it (readiness 503, xDS streams closed: :mod:`controller.runtime.fencing`).

``max_age_s`` must be strictly below the report's lease duration, so that a replica fences
itself *before* the leader stops counting it: the runtime passes the elector's renew deadline
(``--renew-deadline``, 10 s by default), already validated to be below ``--lease-duration``
(:class:`controller.k8s.lease.LeaseConfig`). That is client-go's fencing argument for the
leader (``tools/leaderelection``: a leader stops acting at its renew deadline, before another
may acquire at the lease duration) applied to every replica's report. It tolerates the same
clock *rate* skew, no more.

Times are monotonic seconds (``time.monotonic``), handed in by the caller.
"""

from __future__ import annotations

from dataclasses import dataclass

STORE_READ = "store read"
"""A read of the rollout store (the followers' and the leader's :func:`sync_once`)."""
REPORT_RENEWAL = "report renewal"
"""A write of this replica's report Lease (``sluice-replica-<identity>``)."""
SOURCES = (STORE_READ, REPORT_RENEWAL)
"""What must keep succeeding for a replica to stay current."""


@dataclass(frozen=True)
class Check:
    """One judgement of :meth:`StoreFreshness.check`.

    Attributes:
        stale: this replica is stale now.
        reason: why (what failed and for how long), None when current.
        changed: it became stale, or current again, at this check (log once).
        close_streams: end every xDS stream now (it became stale, or stayed stale for
            ``reclose_s`` since the streams were last closed).
    """

    stale: bool
    reason: str | None
    changed: bool
    close_streams: bool


@dataclass
class _Source:
    succeeded_at: float
    failed_at: float | None = None  # the first failure since the last success
    last_error: str | None = None


class StoreFreshness:
    """When this replica last succeeded at each source (:data:`SOURCES`), and what follows.

    Args:
        max_age_s: seconds without a success of any one source after which the replica is
            stale; strictly below the report lease duration (module doc).
        started_at: the process's start (monotonic s): a fresh process counts as having
            succeeded then, so it is not stale until ``max_age_s`` later.
        reclose_s: while stale, the xDS streams are closed again every ``reclose_s`` seconds
            (the lease duration: kube-proxy may route a first reconnect back here).
        sources: the names tracked (default :data:`SOURCES`).

    Raises:
        ValueError: ``max_age_s`` or ``reclose_s`` is not positive, or no source is named.
    """

    def __init__(
        self,
        max_age_s: float,
        started_at: float,
        reclose_s: float,
        sources: tuple[str, ...] = SOURCES,
    ) -> None:
        if max_age_s <= 0 or reclose_s <= 0:
            raise ValueError(
                f"max_age_s and reclose_s must be positive (got {max_age_s}, {reclose_s})"
            )
        if not sources:
            raise ValueError("StoreFreshness needs at least one source")
        self.max_age_s = max_age_s
        self.reclose_s = reclose_s
        self._sources = {name: _Source(started_at) for name in sources}
        self._stale = False
        self._closed_at: float | None = None

    @property
    def sources(self) -> tuple[str, ...]:
        """The names tracked."""
        return tuple(self._sources)

    def _source(self, name: str) -> _Source:
        try:
            return self._sources[name]
        except KeyError:
            raise ValueError(f"unknown source {name!r} (known: {sorted(self._sources)})") from None

    def succeeded(self, source: str, now: float) -> None:
        """``source`` succeeded at ``now`` (monotonic s). Raises ValueError on an unknown one."""
        state = self._source(source)
        # A success seen late (a worker thread's) never moves the record backwards.
        state.succeeded_at = max(state.succeeded_at, now)
        state.failed_at = None
        state.last_error = None

    def failed(self, source: str, now: float, why: str) -> None:
        """``source`` failed at ``now`` (monotonic s) with ``why`` (kept for :meth:`reason`).
        Raises ValueError on an unknown source."""
        state = self._source(source)
        if state.failed_at is None:
            state.failed_at = now
        state.last_error = why

    def _overdue(self, now: float) -> list[tuple[str, _Source]]:
        return [
            (name, state)
            for name, state in self._sources.items()
            if now - state.succeeded_at > self.max_age_s
        ]

    def stale(self, now: float) -> bool:
        """Some source has not succeeded for more than ``max_age_s`` seconds at ``now``."""
        return bool(self._overdue(now))

    def reason(self, now: float) -> str | None:
        """Why this replica is stale at ``now`` (each overdue source, how long without a
        success, how long it has been failing and its last error), or None when current."""
        parts = []
        for name, state in self._overdue(now):
            text = f"no successful {name} for {now - state.succeeded_at:.1f} s"
            if state.failed_at is not None:
                text += (
                    f" (failing for {now - state.failed_at:.1f} s; last error: {state.last_error})"
                )
            else:
                text += " (no error returned: the call may hang)"
            parts.append(text)
        if not parts:
            return None
        return "; ".join(parts) + f" (limit {self.max_age_s:g} s)"

    def check(self, now: float) -> Check:
        """Judge at ``now`` and remember it: whether the replica became stale or current, and
        whether to close the xDS streams (on becoming stale, then every ``reclose_s``)."""
        reason = self.reason(now)
        stale = reason is not None
        changed = stale != self._stale
        self._stale = stale
        close = False
        if not stale:
            self._closed_at = None
        elif self._closed_at is None or now - self._closed_at >= self.reclose_s:
            self._closed_at = now
            close = True
        return Check(stale=stale, reason=reason, changed=changed, close_streams=close)
