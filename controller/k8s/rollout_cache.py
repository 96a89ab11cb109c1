"""A read cache of the ``Rollout`` objects of one namespace, fed by a watch.

:class:`RolloutCache` lists and watches ``rollouts.sluice.dev`` with
:class:`~controller.k8s.watch.ObjectWatch` (resume from the last resourceVersion; 410 Gone →
re-list) and answers reads from what the watch delivered, merged with the copies the store
got from the API itself (its writes' answers, its direct reads): see
:mod:`controller.k8s.cache_freshness` for which copy is served and why.

It answers only while it can be trusted, else raises :class:`CacheUnfit` and the caller reads
from the API:

- before the first list, and once the watch has been disconnected for more than
  ``max_down_s`` seconds (a reconnect normally takes milliseconds; an API server that stays
  unreachable must surface as read errors, not as an old state);
- from a 410 Gone (the cache misses changes the server no longer has) until its re-list is
  in the cache;
- when a copy the store wrote (or read directly) has not come through the watch within
  ``max_lag_s`` seconds: the watch is lagging (or a deleted and re-created object made the
  two copies incomparable), and the direct read then replaces the known copy.

A watch counts as up from the API server's answer to it: the changes it missed while down
arrive right after (or its 410), so reads in those milliseconds may still see the state of
before the cut. A watch that stays connected but stalls without closing is not detected
before its read timeout (``timeout_s`` + 30 s, :mod:`controller.k8s.watch`).

Source: Kubernetes API concepts, "Efficient detection of changes" (list then watch) and
"Resource versions" (opaque: only Sluice's ``status.revision`` orders copies).
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from kubernetes import client as k8s_client

from controller.k8s import cache_freshness as fresh
from controller.k8s.crd import GROUP, PLURAL, VERSION
from controller.k8s.watch import ObjectWatch, WatchEvent

log = logging.getLogger(__name__)

MAX_DOWN_S = 3.0
"""Default ``max_down_s``: seconds the watch may be disconnected before reads go direct."""
MAX_LAG_S = 3.0
"""Default ``max_lag_s``: seconds a copy this store wrote may be missing from the watch
before reads go direct."""


class CacheUnfit(Exception):
    """The cache cannot answer now (not synced, watch down, or lagging): read the API."""


class RolloutCache:
    """The ``Rollout`` objects of ``namespace`` as a watch delivers them.

    Args:
        api_client: the API client (the caller owns it).
        namespace: the namespace watched.
        max_down_s: see :data:`MAX_DOWN_S` (seconds, >= 0).
        max_lag_s: see :data:`MAX_LAG_S` (seconds, >= 0).
        timeout_s: each watch request's ``timeoutSeconds``; retry_s: the pause after an API
            error (seconds; see :class:`~controller.k8s.watch.ObjectWatch`).
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
        timeout_s: int = 300,
        retry_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_down_s < 0 or max_lag_s < 0:
            raise ValueError("max_down_s and max_lag_s must not be negative")
        self._list_fn = functools.partial(
            k8s_client.CustomObjectsApi(api_client).list_namespaced_custom_object,
            GROUP,
            VERSION,
            namespace,
            PLURAL,
        )
        self._namespace = namespace
        self._max_down_s = max_down_s
        self._max_lag_s = max_lag_s
        self._clock = clock
        self._lock = threading.Lock()
        self._known: dict[str, fresh.Known] = {}
        self._down_since: float | None = clock()
        self._relists_served = 0
        self._watch = ObjectWatch(
            self._request,
            on_event=self._on_event,
            timeout_s=timeout_s,
            retry_s=retry_s,
            name=f"rollouts/{namespace}",
        )

    # -- lifecycle -----------------------------------------------------------------------
    def start(self) -> RolloutCache:
        """Start the watch thread; returns self."""
        self._watch.start()
        return self

    def stop(self) -> None:
        """Stop the watch (its thread joined); every read raises CacheUnfit afterwards."""
        self._watch.stop()
        with self._lock:
            self._down_since = -float("inf")

    def wait_synced(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the first list; True once it is done."""
        return self._watch.wait_synced(timeout)

    def fit(self) -> bool:
        """Whether reads are answered from the watch now (see the module's conditions; a
        lagging copy is only found by a read)."""
        with self._lock:
            down_since = self._down_since
            # A 410 Gone is counted before its re-list: unfit until that list is served.
            relisting = self._watch.relists != self._relists_served
        return not relisting and fresh.watch_fit(
            self._watch.wait_synced(0), down_since, self._clock(), self._max_down_s
        )

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
        ``started_at`` (this cache's clock), unless a newer copy is known."""
        self._remember(str(obj["metadata"]["name"]), dict(obj), started_at, "")

    def forget(self, name: str, started_at: float, uid: str = "") -> None:
        """Remember that ``name`` did not exist for a request started at ``started_at`` (a
        404, or the store's own delete of the object whose uid is ``uid``)."""
        self._remember(name, None, started_at, uid)

    def settle(self, objects: list[dict[str, Any]], started_at: float) -> None:
        """Take a direct list (started at ``started_at``) as the newest word on every name
        this cache keeps a copy of."""
        by_name = {str(o["metadata"]["name"]): o for o in objects}
        with self._lock:
            names = list(self._known)
        for name in names:
            obj = by_name.get(name)
            self._remember(name, None if obj is None else dict(obj), started_at, "")

    def clock(self) -> float:
        """This cache's clock (monotonic seconds): the ``started_at`` to pass above."""
        return self._clock()

    def _remember(self, name: str, obj: dict[str, Any] | None, started_at: float, uid: str) -> None:
        entry = fresh.known(obj, self._clock(), uid)
        with self._lock:
            if fresh.replaces(self._known.get(name), entry, started_at):
                self._known[name] = entry

    # -- the watch -----------------------------------------------------------------------
    def _check_fit(self) -> None:
        if not self.fit():
            raise CacheUnfit("the rollouts' watch is not synced or has been down too long")

    def _on_event(self, event: WatchEvent) -> None:
        """Drop the known copies the watch has now delivered (or deleted)."""
        name = str((event.object.get("metadata") or {}).get("name") or "")
        gone = event.type == "DELETED"
        with self._lock:
            entry = self._known.get(name)
            if entry is None:
                return
            if (gone and fresh.deleted(entry, event.object)) or fresh.caught_up(
                entry, None if gone else event.object
            ):
                del self._known[name]

    def _request(self, **kwargs: Any) -> Any:
        """The watch's list function, observed. A watch answered means up: the events it
        missed follow at once, and any (re-)list before it is done, so the re-lists counted
        by then are served. A watch stream's end means down."""
        response = self._list_fn(**kwargs)
        if not kwargs.get("watch"):
            return response
        with self._lock:
            self._down_since = None
            self._relists_served = self._watch.relists
        return _Stream(response, self._stream_ended)

    def _stream_ended(self) -> None:
        with self._lock:
            if self._down_since is None:
                self._down_since = self._clock()


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
