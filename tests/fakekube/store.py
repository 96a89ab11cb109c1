"""The fake API server's object store: one global resourceVersion counter, objects per kind,
the change history watches are served from, and the write semantics of the real server
(optimistic concurrency on ``metadata.resourceVersion``, status subresource, generation).

Source: Kubernetes API concepts (resource versions, efficient detection of changes, 410 Gone),
and the CustomResourceDefinition status subresource rules.
"""

from __future__ import annotations

import copy
import random
import threading
import time
import uuid
from collections import deque
from datetime import UTC, datetime
from typing import Any

from . import errors
from .crd import CustomResource
from .errors import ApiError
from .patch import apply_patch
from .resources import ResourceType
from .selectors import Predicate
from .times import normalize_times
from .watchers import Change, Watcher, visible

Obj = dict[str, Any]
_SYSTEM_META = ("uid", "creationTimestamp", "generation", "resourceVersion", "namespace", "name")
_NAME_CHARS = "bcdfghjklmnpqrstvwxz2456789"


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _content(obj: Obj) -> Obj:
    """What ``generation`` tracks: ``spec``, or for kinds without one everything but
    metadata and status."""
    if "spec" in obj:
        return {"spec": obj["spec"]}
    return {k: v for k, v in obj.items() if k not in ("metadata", "status")}


class Store:
    """Thread-safe; every method copies objects in and out."""

    def __init__(self, history_limit: int = 1000) -> None:
        self.cond = threading.Condition()
        # etcd's revision starts at 1: an empty cluster's list already has a version, and
        # "0" stays the watch's "replay the current state" value.
        self._rv = 1
        self._objects: dict[str, dict[tuple[str, str], Obj]] = {}
        self._history: deque[Change] = deque()
        self._history_limit = history_limit
        self._floor = 1
        self.gen = 0
        self.stopping = False
        self.stalled = False
        self.flapping = False
        self.open_watchers = 0
        self.crds: dict[str, CustomResource] = {}

    # -- helpers (lock held) -------------------------------------------------------------
    def _bucket(self, res: ResourceType) -> dict[tuple[str, str], Obj]:
        return self._objects.setdefault(res.key, {})

    def _record(self, res: ResourceType, type_: str, obj: Obj, old: Obj | None) -> None:
        self._history.append(Change(self._rv, res, type_, copy.deepcopy(obj), old))
        while len(self._history) > self._history_limit:
            self._floor = self._history.popleft().rv
        self.cond.notify_all()

    def _stored(self, res: ResourceType, ns: str | None, name: str) -> Obj:
        obj = self._bucket(res).get((ns or "", name))
        if obj is None:
            raise errors.not_found(res, name)
        return obj

    def _check_identity(self, res: ResourceType, ns: str | None, body: Any) -> Obj:
        if not isinstance(body, dict):
            raise ApiError(400, "the request body is not a JSON object")
        for key, want in (("apiVersion", res.api_version), ("kind", res.kind)):
            got = body.setdefault(key, want)
            if got != want:
                raise ApiError(400, f"{key} {got!r} does not match the URL's {want!r}")
        meta = body.setdefault("metadata", {})
        if not isinstance(meta, dict):
            raise ApiError(400, "metadata is not an object")
        if res.namespaced:
            got_ns = meta.setdefault("namespace", ns)
            if got_ns != ns:
                raise ApiError(
                    400,
                    "the namespace of the provided object does not match the namespace "
                    "sent on the request",
                )
        else:
            meta.pop("namespace", None)
        return body

    # -- reads ---------------------------------------------------------------------------
    @property
    def resource_version(self) -> int:
        with self.cond:
            return self._rv

    def get(self, res: ResourceType, ns: str | None, name: str) -> Obj:
        with self.cond:
            return copy.deepcopy(self._stored(res, ns, name))

    def select(self, res: ResourceType, ns: str | None, pred: Predicate) -> tuple[list[Obj], int]:
        with self.cond:
            items = [
                copy.deepcopy(o)
                for (o_ns, _), o in sorted(self._bucket(res).items())
                if (ns is None or o_ns == ns) and pred(o)
            ]
            return items, self._rv

    def objects(self, plural: str, ns: str | None) -> list[Obj]:
        with self.cond:
            return [
                copy.deepcopy(o)
                for key, bucket in sorted(self._objects.items())
                if key.split("/", 1)[1] == plural
                for (o_ns, _), o in sorted(bucket.items())
                if ns is None or o_ns == ns
            ]

    # -- writes --------------------------------------------------------------------------
    def _admit(self, res: ResourceType, obj: Obj, strict: bool) -> Obj:
        """The object as it is stored: the CRD's pruning, defaults and validation, if one is
        installed; time fields re-encoded."""
        crd = self.crds.get(res.key)
        admitted = obj if crd is None else crd.admit(obj, strict)
        normalize_times(res, admitted)
        return admitted

    def create(self, res: ResourceType, ns: str | None, body: Any, strict: bool = False) -> Obj:
        obj = self._check_identity(res, ns, copy.deepcopy(body))
        meta = obj["metadata"]
        if meta.get("resourceVersion"):
            raise ApiError(400, "resourceVersion should not be set on objects to be created")
        with self.cond:
            bucket = self._bucket(res)
            if not meta.get("name"):
                prefix = meta.get("generateName")
                if not prefix:
                    raise ApiError(
                        422, "metadata.name: Required value: name or generateName is required"
                    )
                while True:
                    name = prefix + "".join(random.choices(_NAME_CHARS, k=5))
                    if (ns or "", name) not in bucket:
                        break
                meta["name"] = name
            key = (ns or "", meta["name"])
            if key in bucket:
                raise errors.already_exists(res, meta["name"])
            if res.status_subresource:
                obj.pop("status", None)
            obj = self._admit(res, obj, strict)
            meta = obj["metadata"]
            self._rv += 1
            meta.update(
                uid=str(uuid.uuid4()),
                creationTimestamp=_now(),
                generation=1,
                resourceVersion=str(self._rv),
            )
            bucket[key] = obj
            self._record(res, "ADDED", obj, None)
            return copy.deepcopy(obj)

    def _write(
        self, res: ResourceType, stored: Obj, body: Obj, sub: str | None, strict: bool
    ) -> Obj:
        """Replace ``stored`` by ``body`` under the status-subresource rules (lock held,
        preconditions checked)."""
        if sub == "status":
            new = copy.deepcopy(stored)
            if "status" in body:
                new["status"] = copy.deepcopy(body["status"])
            else:
                new.pop("status", None)
            new = self._admit(res, new, strict)
        else:
            new = copy.deepcopy(body)
            new["metadata"] = dict(new.get("metadata") or {})
            if res.status_subresource:
                new.pop("status", None)
                if "status" in stored:
                    new["status"] = copy.deepcopy(stored["status"])
            for key in _SYSTEM_META:
                if key in stored["metadata"]:
                    new["metadata"][key] = stored["metadata"][key]
                else:
                    new["metadata"].pop(key, None)
            new["apiVersion"], new["kind"] = res.api_version, res.kind
            new = self._admit(res, new, strict)
            if _content(new) != _content(stored):
                new["metadata"]["generation"] = stored["metadata"].get("generation", 0) + 1
        if new == stored:
            return copy.deepcopy(stored)
        self._rv += 1
        new["metadata"]["resourceVersion"] = str(self._rv)
        meta = stored["metadata"]
        self._bucket(res)[(meta.get("namespace", ""), meta["name"])] = new
        self._record(res, "MODIFIED", new, copy.deepcopy(stored))
        return copy.deepcopy(new)

    def replace(
        self,
        res: ResourceType,
        ns: str | None,
        name: str,
        body: Any,
        sub: str | None,
        strict: bool = False,
    ) -> Obj:
        obj = self._check_identity(res, ns, copy.deepcopy(body))
        if obj["metadata"].get("name") != name:
            raise ApiError(400, "the name of the object does not match the name on the URL")
        with self.cond:
            stored = self._stored(res, ns, name)
            rv = obj["metadata"].get("resourceVersion")
            if rv and rv != stored["metadata"]["resourceVersion"]:
                raise errors.conflict(res, name)
            return self._write(res, stored, obj, sub, strict)

    def patch(
        self,
        res: ResourceType,
        ns: str | None,
        name: str,
        content_type: str,
        patch: Any,
        sub: str | None,
        strict: bool = False,
    ) -> Obj:
        with self.cond:
            stored = self._stored(res, ns, name)
            patched = apply_patch(stored, content_type, patch)
            if not isinstance(patched, dict) or not isinstance(patched.get("metadata"), dict):
                raise ApiError(422, "the patched object is not an object with metadata")
            if patched["metadata"].get("resourceVersion") != stored["metadata"]["resourceVersion"]:
                raise errors.conflict(res, name)
            return self._write(res, stored, patched, sub, strict)

    def delete(self, res: ResourceType, ns: str | None, name: str, options: Obj | None) -> Obj:
        with self.cond:
            stored = self._stored(res, ns, name)
            pre = (options or {}).get("preconditions") or {}
            meta = stored["metadata"]
            if pre.get("resourceVersion") not in (None, meta["resourceVersion"]) or pre.get(
                "uid"
            ) not in (None, meta["uid"]):
                raise errors.conflict(res, name)
            del self._bucket(res)[(ns or "", name)]
            self._rv += 1
            gone = copy.deepcopy(stored)
            gone["metadata"]["resourceVersion"] = str(self._rv)
            self._record(res, "DELETED", gone, copy.deepcopy(stored))
            return gone

    # -- watch ---------------------------------------------------------------------------
    def compact(self) -> None:
        with self.cond:
            self._history.clear()
            self._floor = self._rv
            self.cond.notify_all()

    def flap(self, on: bool) -> None:
        with self.cond:
            self.flapping = on
            self.cond.notify_all()

    def stall(self, on: bool) -> None:
        with self.cond:
            self.stalled = on
            self.cond.notify_all()

    def close_watches(self) -> None:
        with self.cond:
            self.gen += 1
            self.cond.notify_all()

    def stop(self) -> None:
        with self.cond:
            self.stopping = True
            self.cond.notify_all()

    def open_watch(
        self, res: ResourceType, ns: str | None, pred: Predicate, rv: str | None
    ) -> Watcher:
        """Start a watch: ``rv`` unset or "0" replays every current object as ADDED; ``rv``
        = N serves the changes after N, :func:`errors.expired` (410) if N is older than
        the retained history."""
        with self.cond:
            w = Watcher(res, ns, pred, self._rv, self.gen)
            self.open_watchers += 1
            if rv in (None, "", "0"):
                items, _ = self.select(res, ns, pred)
                w.initial = [("ADDED", o) for o in items]
                return w
            try:
                n = int(rv)
            except ValueError:
                raise ApiError(400, f"invalid resourceVersion {rv!r}") from None
            if n < self._floor:
                self.open_watchers -= 1
                raise errors.expired(n, self._floor + 1)
            w.last = n
            return w

    def close_watcher(self, w: Watcher) -> None:
        """The stream serving ``w`` ended."""
        with self.cond:
            self.open_watchers -= 1

    def next_events(self, w: Watcher, deadline: float) -> tuple[list[tuple[str, Obj]], str | None]:
        """Block until ``w`` has events or ends; the second item says why it ended:
        "closed" (close_watches / stop), "expired" (410), "timeout" (timeoutSeconds)."""
        with self.cond:
            while True:
                if self.stopping or w.gen != self.gen:
                    return [], "closed"
                if self.flapping:
                    return [], "closed"
                if self.stalled:
                    # A silent connection: nothing delivered, not even the timeout's end.
                    self.cond.wait()
                    continue
                if w.last < self._floor:
                    return [], "expired"
                if self._rv > w.last:
                    out = [
                        e
                        for c in self._history
                        if c.rv > w.last and (e := visible(w, c)) is not None
                    ]
                    w.last = self._rv
                    if out:
                        return out, None
                    continue
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return [], "timeout"
                self.cond.wait(remaining)

    @property
    def floor(self) -> int:
        with self.cond:
            return self._floor
