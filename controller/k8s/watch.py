"""A resuming list-then-watch of one Kubernetes resource kind (what client-go's reflector does).

The Kubernetes API concepts this implements (https://kubernetes.io/docs/reference/using-api/
api-concepts/, "Efficient detection of changes" and "Resource versions"):

- **list, then watch from the list's resourceVersion**: a LIST returns the collection and its
  ``metadata.resourceVersion``; a watch from that version (``watch=true&resourceVersion=N``)
  delivers every change after it, as ``ADDED`` / ``MODIFIED`` / ``DELETED`` events, in order.
- **resume**: a watch stream ends (``timeoutSeconds``, an API server restart, a network cut);
  a new watch from the last resourceVersion seen (an event's object, or a ``BOOKMARK``) loses
  and repeats nothing.
- **410 Gone**: the server keeps a limited history; a watch from a version older than it is
  answered with an ``ERROR`` event whose ``Status`` has ``code: 410`` (``reason: Expired``), or
  an HTTP 410. The client must re-list: the difference between the new list and the local
  cache is delivered as ``ADDED`` / ``MODIFIED`` / ``DELETED`` (an object deleted while the
  watch was down arrives as ``DELETED`` with its last known state), then the watch restarts
  from the new list's resourceVersion.

The ``kubernetes`` client is synchronous, so the loop runs in its own daemon thread. API
errors (connection refused, 5xx, 403) are logged and retried every ``retry_s``; they never
reach the caller.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

from kubernetes.client import ApiException

log = logging.getLogger(__name__)

EventType = Literal["ADDED", "MODIFIED", "DELETED"]
ObjectKey = tuple[str, str]
"""(namespace, name); namespace is "" for cluster-scoped kinds."""

_CONNECT_TIMEOUT_S = 10.0
_LIST_TIMEOUT_S = 60.0
_READ_MARGIN_S = 30.0
"""A watch read waits up to ``timeout_s`` + this before the connection counts as hung: the
server ends the stream at ``timeoutSeconds`` itself."""


@dataclass(frozen=True)
class WatchEvent:
    """One change to one object: ``object`` is the object as the API returns it (a JSON dict,
    camelCase fields); for ``DELETED`` its last state (the server's, or the cache's after a
    re-list)."""

    type: EventType
    object: dict[str, Any]


class _Expired(Exception):
    """The watch's resourceVersion is older than the server's history (410 Gone)."""


def object_key(obj: dict[str, Any]) -> ObjectKey:
    """The cache key of an API object: (``metadata.namespace`` or "", ``metadata.name``)."""
    meta = obj.get("metadata") or {}
    return str(meta.get("namespace") or ""), str(meta.get("name") or "")


def _resource_version(obj: dict[str, Any]) -> str | None:
    rv = (obj.get("metadata") or {}).get("resourceVersion")
    return str(rv) if rv else None


def _lines(resp: Any) -> Iterator[bytes]:
    """Newline-delimited JSON lines of a streamed (chunked) urllib3 response."""
    buffer = b""
    for chunk in resp.stream(amt=None, decode_content=False):
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        yield from (line for line in lines if line.strip())
    if buffer.strip():
        yield buffer


class ObjectWatch:
    """List then watch one resource kind; resume after a dropped stream from the last
    resourceVersion seen; on 410 Gone re-list and emit the difference with the cache as
    ADDED/MODIFIED/DELETED. Runs in its own daemon thread (the client is synchronous).

    ``list_fn`` is a ``kubernetes`` client list function (e.g.
    ``functools.partial(CustomObjectsApi(c).list_namespaced_custom_object, "sluice.dev",
    "v1alpha1", ns, "rollouts")`` or ``DiscoveryV1Api(c).list_namespaced_endpoint_slice``);
    it is called with ``_preload_content=False``, so the cache holds plain JSON dicts whatever
    the API. ``namespace``, when given, is passed as its ``namespace`` keyword (for list
    functions that take one; leave it None when ``list_fn`` binds it). ``label_selector`` and
    ``field_selector`` use the API's syntax. ``timeout_s`` is each watch request's
    ``timeoutSeconds`` (seconds); ``retry_s`` the pause after an error (seconds);
    ``read_margin_s`` how much longer than ``timeout_s`` a watch read may wait for data before
    the connection counts as hung (seconds; the server itself ends the stream at
    ``timeoutSeconds``); ``join_timeout_s`` how long :meth:`stop` waits for the thread.

    ``on_event`` is called from the watch thread, in order, after the cache is updated; it
    must not block long. Its exceptions are logged and do not stop the watch.
    ``on_progress`` is called from the watch thread after each event or ``BOOKMARK`` a watch
    stream delivered (not for an ``ERROR`` event, nor for a list's differences): proof that
    the stream is alive and current; the same rules as ``on_event``.
    """

    def __init__(
        self,
        list_fn: Callable[..., Any],
        *,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        on_event: Callable[[WatchEvent], None] | None = None,
        on_progress: Callable[[], None] | None = None,
        timeout_s: int = 300,
        retry_s: float = 1.0,
        read_margin_s: float = _READ_MARGIN_S,
        join_timeout_s: float = 5.0,
        name: str = "watch",
    ) -> None:
        if timeout_s <= 0 or retry_s < 0 or read_margin_s < 0 or join_timeout_s < 0:
            raise ValueError(
                "timeout_s must be > 0; retry_s, read_margin_s and join_timeout_s >= 0"
            )
        self._list_fn = list_fn
        self._kwargs: dict[str, Any] = {}
        if namespace is not None:
            self._kwargs["namespace"] = namespace
        if label_selector:
            self._kwargs["label_selector"] = label_selector
        if field_selector:
            self._kwargs["field_selector"] = field_selector
        self._on_event = on_event
        self._on_progress = on_progress
        self._timeout_s = timeout_s
        self._retry_s = retry_s
        self._read_margin_s = read_margin_s
        self._join_timeout_s = join_timeout_s
        self.name = name
        self._lock = threading.Lock()
        self._cache: dict[ObjectKey, dict[str, Any]] = {}
        self._rv: str | None = None
        self._synced = threading.Event()
        self._stopping = threading.Event()
        self._resp: Any = None
        self._thread: threading.Thread | None = None
        self.relists = 0
        """Re-lists after a 410 Gone (the first list is not counted)."""
        self.resumes = 0
        """Watches restarted from a kept resourceVersion after a stream ended (a timeout, a
        cut, an error)."""

    # -- public --------------------------------------------------------------------------
    def start(self) -> ObjectWatch:
        """Start the watch thread; returns self. A second call is an error."""
        if self._thread is not None:
            raise RuntimeError(f"{self.name}: already started")
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop the watch: end the open stream and join the thread, waiting at most
        ``join_timeout_s`` seconds. A thread still waiting for a list or for a watch's
        headers cannot be woken (the client gives no handle on a request in flight): it is
        left to end by itself (a daemon thread; it emits nothing more and makes no further
        request once that one returns), so that a shutdown never waits for the API server."""
        self._stopping.set()
        with self._lock:
            resp = self._resp
        if resp is not None:
            # Unblocks a read waiting on the socket (urllib3 >= 2.3).
            with contextlib.suppress(Exception):
                resp.shutdown()
        if self._thread is not None:
            self._thread.join(self._join_timeout_s)
            if self._thread.is_alive():
                log.warning(
                    "%s: stopped; its thread is still waiting for the API server and ends "
                    "when it answers",
                    self.name,
                )

    def wait_synced(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the first list; True once it is done."""
        return self._synced.wait(timeout)

    def items(self) -> dict[ObjectKey, dict[str, Any]]:
        """A copy of the cache: (namespace, name) -> object (shared dicts: do not mutate)."""
        with self._lock:
            return dict(self._cache)

    @property
    def resource_version(self) -> str | None:
        """The last resourceVersion seen (list, event or bookmark); None before the list."""
        with self._lock:
            return self._rv

    # -- the loop ------------------------------------------------------------------------
    def _run(self) -> None:
        need_list = True
        while not self._stopping.is_set():
            try:
                if need_list:
                    self._list()
                    need_list = False
                    if self._stopping.is_set():
                        break  # stopped while listing: no watch request after stop()
                else:
                    self.resumes += 1
                if not self._watch() and not self._stopping.is_set():
                    # A stream that ended having delivered nothing (a proxy or a server
                    # ending each one at once): no tight loop of watch requests.
                    self._stopping.wait(self._retry_s)
            except _Expired:
                # counted in _handle already, before the stream's closing
                log.info(
                    "%s: resourceVersion %s expired (410 Gone): re-listing", self.name, self._rv
                )
                need_list = True
            except Exception as exc:
                if self._stopping.is_set():
                    break
                if isinstance(exc, ApiException) and exc.status == 410 and not need_list:
                    # Some servers answer a too old watch with HTTP 410 instead of an ERROR
                    # event; a 410 on the list itself is an error like any other.
                    self.relists += 1
                    need_list = True
                    continue
                log.warning("%s: %s; retrying in %.1f s", self.name, _describe(exc), self._retry_s)
                self._stopping.wait(self._retry_s)

    def _list(self) -> None:
        resp = self._list_fn(
            **self._kwargs,
            _preload_content=False,
            _request_timeout=(_CONNECT_TIMEOUT_S, _LIST_TIMEOUT_S),
        )
        try:
            body = json.loads(resp.data)
        finally:
            with contextlib.suppress(Exception):
                resp.release_conn()
        items = body.get("items") or []
        # A built-in kind's list items carry no apiVersion/kind (its watch events do): fill
        # them in from the list so every cached object has the same shape.
        kind = str(body.get("kind") or "").removesuffix("List")
        for item in items:
            item.setdefault("apiVersion", body.get("apiVersion"))
            item.setdefault("kind", kind)
        fresh: dict[ObjectKey, dict[str, Any]] = {object_key(item): item for item in items}
        with self._lock:
            old = self._cache
            self._cache = fresh
            self._rv = str((body.get("metadata") or {}).get("resourceVersion") or "") or None
        events = [
            WatchEvent("ADDED" if key not in old else "MODIFIED", obj)
            for key, obj in fresh.items()
            if key not in old or _resource_version(old[key]) != _resource_version(obj)
        ]
        events += [WatchEvent("DELETED", obj) for key, obj in old.items() if key not in fresh]
        if self._stopping.is_set():
            return  # a list answered after stop(): nobody listens any more
        self._synced.set()
        for event in events:
            self._emit(event)

    def _watch(self) -> bool:
        """One watch stream, read to its end; whether it delivered anything."""
        delivered = False
        resp = self._list_fn(
            **self._kwargs,
            watch=True,
            resource_version=self._rv,
            timeout_seconds=self._timeout_s,
            allow_watch_bookmarks=True,
            _preload_content=False,
            _request_timeout=(_CONNECT_TIMEOUT_S, self._timeout_s + self._read_margin_s),
        )
        with self._lock:
            self._resp = resp
        try:
            if self._stopping.is_set():
                return delivered
            for line in _lines(resp):
                delivered = True
                self._handle(json.loads(line))
                if self._stopping.is_set():
                    return delivered
        finally:
            with self._lock:
                self._resp = None
            # Closed, not only released: a stream left unread (stopped, or failed mid-way)
            # would go back to the client's pool while the server still streams on it, and
            # the next request on that connection would never get an answer.
            with contextlib.suppress(Exception):
                resp.close()
            with contextlib.suppress(Exception):
                resp.release_conn()
        return delivered

    def _handle(self, event: dict[str, Any]) -> None:
        type_, obj = event.get("type"), event.get("object") or {}
        if type_ == "ERROR":
            if obj.get("code") == 410:
                # Counted now, not once the stream is closed: from this moment the cache
                # misses changes, and whoever reads ``relists`` must know it at once.
                self.relists += 1
                raise _Expired(obj.get("message"))
            raise ApiException(
                status=obj.get("code"), reason=f"{obj.get('reason')}: {obj.get('message')}"
            )
        rv = _resource_version(obj)
        if type_ == "BOOKMARK":
            with self._lock:
                self._rv = rv or self._rv
            self._progress()
            return
        if type_ not in ("ADDED", "MODIFIED", "DELETED"):
            log.warning("%s: ignoring a watch event of type %r", self.name, type_)
            return
        key = object_key(obj)
        with self._lock:
            if type_ == "DELETED":
                self._cache.pop(key, None)
            else:
                self._cache[key] = obj
            self._rv = rv or self._rv
        self._emit(WatchEvent(type_, obj))
        self._progress()

    def _progress(self) -> None:
        if self._on_progress is None:
            return
        try:
            self._on_progress()
        except Exception:
            log.exception("%s: on_progress failed", self.name)

    def _emit(self, event: WatchEvent) -> None:
        if self._on_event is None:
            return
        try:
            self._on_event(event)
        except Exception:
            log.exception(
                "%s: on_event failed for %s %s", self.name, event.type, object_key(event.object)
            )


def _describe(exc: Exception) -> str:
    if isinstance(exc, ApiException):
        return f"API error {exc.status} {exc.reason}"
    return f"{type(exc).__name__}: {exc}"
