"""A read cache of the ``Rollout`` objects of one namespace, fed by a watch.

:class:`RolloutCache` lists and watches ``rollouts.sluice.dev`` with
:class:`~controller.k8s.watch.ObjectWatch` (resume from the last resourceVersion; 410 Gone →
re-list) and answers reads from what the watch delivered, merged with the copies the store
got from the API itself (its writes' answers, its direct reads and lists): see
:mod:`controller.k8s.cache_freshness` for which copy is served and why. The rule it keeps: a
read never returns a state older than one this store has already returned or written.

It answers only while it can be trusted, else raises :class:`CacheUnfit` and the caller reads
from the API:

- before the first list, and while the watch is not known to be current for more than
  ``max_down_s`` seconds: disconnected, answered but failing at once, or reconnected but not
  yet proven healthy (see :mod:`controller.k8s.watch_health`); an API server that stays
  unreachable must surface as read errors, not as an old state;
- while an open watch has delivered nothing (no event, no bookmark, no new stream) for
  ``max_silent_s`` seconds: a stream that stays connected but stalls (half-open TCP, a
  buffering proxy). Each watch request asks the server to end it after ``timeout_s``, so a
  healthy idle watch is heard from at least that often;
- from a 410 Gone (the cache misses changes the server no longer has) until its re-list is
  in the cache;
- when a copy the store wrote or read directly (a GET, a LIST) has not come through the
  watch within ``max_lag_s`` seconds (or at once when which of the two is newer cannot be
  told): the direct read then replaces the known copy.

A copy of an object the watch has seen deleted (by ``metadata.uid``) is never remembered as
known: the store's answer to a write may come after the watch's ``DELETED`` of that object.

Source: Kubernetes API concepts, "Efficient detection of changes" (list then watch,
``timeoutSeconds``, bookmarks) and "Resource versions" (opaque: only Sluice's
``status.revision`` orders copies).
"""

from __future__ import annotations

import functools
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from kubernetes import client as k8s_client

from controller.k8s import cache_freshness as fresh
from controller.k8s.crd import GROUP, PLURAL, VERSION
from controller.k8s.watch import ObjectWatch, WatchEvent
from controller.k8s.watch_health import WatchHealth

log = logging.getLogger(__name__)

MAX_DOWN_S = 3.0
"""Default ``max_down_s``: seconds the watch may be down before reads go direct."""
MAX_LAG_S = 3.0
"""Default ``max_lag_s``: seconds a copy this store wrote may be missing from the watch
before reads go direct."""
WATCH_TIMEOUT_S = 30
"""Default ``timeout_s``: each watch request's ``timeoutSeconds`` (one watch request per
replica every 30 s, against one read per second without the watch)."""
MAX_SILENT_S = 45.0
"""Default ``max_silent_s``: seconds an open watch may deliver nothing before reads go
direct (above ``WATCH_TIMEOUT_S``, after which the server ends an idle stream itself)."""
PROVEN_AFTER_S = 1.0
"""Seconds a newly answered watch stream must stay open, if it delivers nothing, before the
cache counts it as healthy (below ``MAX_DOWN_S``: an idle watch's routine reconnect must not
make the cache unfit)."""
TOMBSTONES = 10_000
"""How many uids of deleted objects are remembered (the oldest are forgotten first)."""


class CacheUnfit(Exception):
    """The cache cannot answer now (not synced, watch down or silent, or lagging): read the
    API."""


class RolloutCache:
    """The ``Rollout`` objects of ``namespace`` as a watch delivers them.

    Args:
        api_client: the API client (the caller owns it).
        namespace: the namespace watched.
        max_down_s: see :data:`MAX_DOWN_S` (seconds, >= 0).
        max_lag_s: see :data:`MAX_LAG_S` (seconds, >= 0).
        max_silent_s: see :data:`MAX_SILENT_S` (seconds, > ``timeout_s``).
        timeout_s: each watch request's ``timeoutSeconds`` (see :data:`WATCH_TIMEOUT_S`);
            retry_s: the pause after an API error (seconds; see
            :class:`~controller.k8s.watch.ObjectWatch`).
        clock: monotonic seconds (tests may pass their own).

    Thread-safe: reads come from any thread, the watch runs in its own.
    """

    def __init__(
        self,
        api_client: k8s_client.ApiClient,
        namespace: str,
        *,
        max_down_s: float = MAX_DOWN_S,
        max_lag_s: float = MAX_LAG_S,
        max_silent_s: float = MAX_SILENT_S,
        timeout_s: int = WATCH_TIMEOUT_S,
        retry_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_down_s < 0 or max_lag_s < 0:
            raise ValueError("max_down_s and max_lag_s must not be negative")
        if max_silent_s <= timeout_s:
            raise ValueError("max_silent_s must exceed timeout_s (an idle watch is silent)")
        self._list_fn = functools.partial(
            k8s_client.CustomObjectsApi(api_client).list_namespaced_custom_object,
            GROUP,
            VERSION,
            namespace,
            PLURAL,
        )
        self._namespace = namespace
        self._max_lag_s = max_lag_s
        self._clock = clock
        self._lock = threading.Lock()
        self._known: dict[str, fresh.Known] = {}
        self._delivered = fresh.Delivered(TOMBSTONES)
        self._health = WatchHealth(
            max_down_s=max_down_s,
            max_silent_s=max_silent_s,
            proven_after_s=min(PROVEN_AFTER_S, max_down_s),
            down_since=clock(),
        )
        self._stopped = False
        self._relists_served = 0
        self._watch = ObjectWatch(
            self._request,
            on_event=self._on_event,
            on_progress=self._on_progress,
            timeout_s=timeout_s,
            retry_s=retry_s,
            # a stream that stays silent past max_silent_s is dropped and re-opened soon
            read_margin_s=max(0.0, max_silent_s - timeout_s),
            name=f"rollouts/{namespace}",
        )

    # -- lifecycle -----------------------------------------------------------------------
    def start(self) -> RolloutCache:
        """Start the watch thread; returns self."""
        self._watch.start()
        return self

    def stop(self) -> None:
        """Stop the watch (its thread joined, at most a few seconds: see
        :meth:`ObjectWatch.stop`); every read raises CacheUnfit afterwards."""
        with self._lock:
            self._stopped = True
        self._watch.stop()

    def wait_synced(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the first list; True once it is done."""
        return self._watch.wait_synced(timeout)

    def fit(self) -> bool:
        """Whether reads are answered from the watch now (see the module's conditions; a
        lagging copy is only found by a read)."""
        with self._lock:
            if self._stopped:
                return False
            # A 410 Gone is counted before its re-list: unfit until that list is served.
            relisting = self._watch.relists != self._relists_served
            healthy = self._health.fit(self._clock())
        return not relisting and healthy and self._watch.wait_synced(0)

    # -- reads ---------------------------------------------------------------------------
    def object(self, name: str) -> fresh.Obj | None:
        """The object named ``name`` (None: there is none). Raises CacheUnfit. Shared with
        the cache: do not mutate it."""
        self._check_fit()
        now = self._clock()
        # The watch's copy is read under this lock: a known copy is only dropped (in
        # _on_event, which waits for the lock) once the watch holds what it said.
        with self._lock:
            watched = self._watch.items().get((self._namespace, name))
            entry = self._known.get(name)
            choice = fresh.choose(watched, entry, now, self._max_lag_s)
            if choice == "watched" and entry is not None:
                del self._known[name]
        if choice == "direct":
            raise CacheUnfit(f"rollout {name!r}: the watch has not delivered its last write")
        if choice == "known":
            assert entry is not None
            return entry.obj
        return watched

    def objects(self) -> list[fresh.Obj]:
        """Every object, sorted by name. Raises CacheUnfit. Shared with the cache: do not
        mutate them."""
        self._check_fit()
        now = self._clock()
        with self._lock:
            watched = {name: obj for (_, name), obj in self._watch.items().items()}
            objects = fresh.merged(watched, self._known, now, self._max_lag_s)
            for name, entry in list(self._known.items()):
                if fresh.caught_up(entry, watched.get(name)):
                    del self._known[name]
        if objects is None:
            raise CacheUnfit("the watch has not delivered a write of this store yet")
        return objects

    # -- what the store got from the API itself ------------------------------------------
    def note(self, obj: dict[str, Any], started_at: float) -> None:
        """Remember ``obj``, returned by a request (a write or a direct read) started at
        ``started_at`` (this cache's clock), unless a newer copy is known or the watch has
        seen that object deleted."""
        self._remember(str(obj["metadata"]["name"]), dict(obj), started_at)

    def forget(self, name: str, started_at: float, uid: str = "") -> None:
        """Remember that ``name`` did not exist for a request started at ``started_at`` (a
        404, or the store's own delete of the object whose uid is ``uid``)."""
        self._remember(name, None, started_at, uid)

    def settle(self, objects: list[dict[str, Any]], started_at: float) -> None:
        """Take a direct list (started at ``started_at``) as the newest word on every name it
        holds or this cache holds: each listed object becomes a known copy and each other
        name a known absence, so a watch behind that list (reconnecting, or still doing its
        first list) serves none of its older copies; a name whose watched copy arrived after
        the list started, of another object than the listed one, is read directly until the
        watch settles it (which of the two is newer cannot be told)."""
        listed = {str(o["metadata"]["name"]): o for o in objects}
        with self._lock:
            watched_uid = dict(self._delivered.uids)
            arrived = dict(self._delivered.arrived)
            known_uid = {name: entry.uid for name, entry in self._known.items()}
        for name in sorted({*listed, *watched_uid, *known_uid}):
            obj = listed.get(name)
            other = watched_uid.get(name)
            unclear = (
                other is not None
                and arrived.get(name, -math.inf) > started_at
                and (obj is None or fresh.uid(obj) != other)
            )
            gone_uid = "" if obj is not None else other or known_uid.get(name, "")
            self._remember(
                name, None if obj is None else dict(obj), started_at, gone_uid, unclear=unclear
            )

    def clock(self) -> float:
        """This cache's clock (monotonic seconds): the ``started_at`` to pass above."""
        return self._clock()

    def _remember(
        self,
        name: str,
        obj: dict[str, Any] | None,
        started_at: float,
        uid: str = "",
        unclear: bool = False,
    ) -> None:
        entry = fresh.known(obj, self._clock(), uid)
        if unclear:  # lagging from the start: read directly until the watch delivers it
            entry = fresh.Known(entry.obj, entry.uid, -math.inf)
        with self._lock:
            if self._delivered.dead(entry):
                return  # the watch saw this object deleted: whatever it holds is newer
            if fresh.replaces(self._known.get(name), entry, started_at):
                self._known[name] = entry

    # -- the watch -----------------------------------------------------------------------
    def _check_fit(self) -> None:
        if not self.fit():
            raise CacheUnfit("the rollouts' watch is not synced, down, silent or re-listing")

    def _on_event(self, event: WatchEvent) -> None:
        """Drop the known copies the watch has now delivered, deleted, or replaced."""
        name = str((event.object.get("metadata") or {}).get("name") or "")
        gone = event.type == "DELETED"
        with self._lock:
            self._delivered.event(event.type, event.object, self._clock())
            entry = self._known.get(name)
            if entry is None:
                return
            if (
                (gone and fresh.deleted(entry, event.object))
                or self._delivered.dead(entry)
                or fresh.caught_up(entry, None if gone else event.object)
            ):
                del self._known[name]

    def _on_progress(self) -> None:
        with self._lock:
            self._health.progress(self._clock())

    def _request(self, **kwargs: Any) -> Any:
        """The watch's list function, observed. A watch answered opens a stream (not yet
        proven healthy), and any (re-)list before it is done, so the re-lists counted by
        then are served; its stream's end is reported to the health."""
        response = self._list_fn(**kwargs)
        if not kwargs.get("watch"):
            return response
        with self._lock:
            self._health.opened(self._clock())
            self._relists_served = self._watch.relists
        return _Stream(response, self._stream_ended)

    def _stream_ended(self) -> None:
        with self._lock:
            self._health.ended(self._clock())


class _Stream:
    """A watch response that reports the end of its stream (read to the end, failed, or
    closed) once; everything else is the response's own."""

    def __init__(self, response: Any, on_end: Callable[[], None]) -> None:
        self._response = response
        self._on_end: Callable[[], None] | None = on_end

    def stream(self, *args: Any, **kwargs: Any) -> Iterator[bytes]:
        try:
            yield from self._response.stream(*args, **kwargs)
        finally:
            self._ended()

    def close(self) -> None:
        self._ended()
        self._response.close()

    def _ended(self) -> None:
        on_end, self._on_end = self._on_end, None
        if on_end is not None:
            on_end()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._response, name)
