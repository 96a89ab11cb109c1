"""Whether a watch may be trusted to be current: pure decisions over its streams' lives.

A watch-backed cache (:mod:`controller.k8s.rollout_cache`) may serve what its watch delivered
only while the watch is known to be current, or has not been for long. Three ways a watch
fails, and what this module makes of each:

- **disconnected**: the stream ended (cut, server restart, timeout) and the next one is not
  answered. An *outage* starts at the end of the last healthy stream; the cache tolerates
  ``max_down_s`` seconds of it (a reconnect normally takes milliseconds).
- **answered but failing**: each new stream is answered, then ends at once (an ``ERROR``
  event, an empty stream, a proxy cutting it). An answer alone ends no outage: a stream ends
  it only once it proves healthy, by delivering an event or a ``BOOKMARK`` or by staying open
  ``proven_after_s`` seconds (by then the backlog of what it missed has arrived: the server
  sends it first). So a watch that keeps failing right after connecting stays down from its
  first failure, and so does a reconnected one until its backlog is in.
- **connected but silent**: the stream stays open and delivers nothing (half-open TCP to a
  dead API server replica, a buffering proxy). Indistinguishable from an idle namespace,
  except by time: the server ends every stream at its ``timeoutSeconds`` (and sends a
  ``BOOKMARK`` first when asked), so a healthy watch is heard from at least that often.
  Silence longer than ``max_silent_s`` (set above the watch's ``timeoutSeconds``) counts as
  broken.

No I/O and no clock: times are monotonic seconds passed in. Not thread-safe: the caller
holds its own lock.

Source: Kubernetes API concepts, "Efficient detection of changes" (``timeoutSeconds``,
``allowWatchBookmarks``).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class WatchHealth:
    """The life of one watch's streams, as seen by its client.

    Args:
        max_down_s: seconds an outage may last before the watch is unfit.
        max_silent_s: seconds an open stream may deliver nothing before it is unfit.
        proven_after_s: seconds after which an open stream counts as healthy without having
            delivered anything (keep it below ``max_down_s``, or every routine reconnect of
            an idle watch makes it unfit for a moment).
        down_since: when the current outage started (None: the watch is up); the caller's
            creation time, as nothing is delivered yet.
    """

    max_down_s: float
    max_silent_s: float
    proven_after_s: float
    down_since: float | None
    opened_at: float | None = None
    """When the open stream was answered (None: no stream open)."""
    heard_at: float | None = None
    """When the open stream last delivered something (or was answered)."""

    def opened(self, now: float) -> None:
        """A watch request was answered at ``now`` (its stream starts)."""
        self.opened_at = now
        self.heard_at = now

    def progress(self, now: float) -> None:
        """The open stream delivered an event or a bookmark at ``now``: it is healthy."""
        self.heard_at = now
        self.down_since = None

    def ended(self, now: float) -> None:
        """The open stream ended at ``now`` (however). A healthy stream's end starts an
        outage; an unproven one's leaves the outage running since it began; one silent for
        longer than ``max_silent_s`` was already broken: its outage runs from when it was
        last heard from, so the watch stays unfit until a new stream proves healthy."""
        silent_too_long = self.heard_at is not None and now - self.heard_at > self.max_silent_s
        self._settle(now)
        if silent_too_long:
            assert self.heard_at is not None
            self.down_since = min(self.down_since or self.heard_at, self.heard_at)
        elif self.down_since is None:
            self.down_since = now
        self.opened_at = None

    def fit(self, now: float) -> bool:
        """Whether the watch may be trusted at ``now``: up and heard from within
        ``max_silent_s``, or down no longer than ``max_down_s``."""
        self._settle(now)
        if self.down_since is not None:
            return now - self.down_since <= self.max_down_s
        return self.heard_at is not None and now - self.heard_at <= self.max_silent_s

    def _settle(self, now: float) -> None:
        """An open stream that has lived ``proven_after_s`` has proved healthy."""
        if (
            self.down_since is not None
            and self.opened_at is not None
            and now - self.opened_at >= self.proven_after_s
        ):
            self.down_since = None
