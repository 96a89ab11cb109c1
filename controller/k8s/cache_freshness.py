"""Which copy of a ``Rollout`` object a watch-backed read cache may serve: pure decisions.

A store reading from a watch (:mod:`controller.k8s.rollout_cache`) holds two kinds of copies:

- the **watched** one, what the watch has delivered so far (eventually current, but behind by
  the watch's delay);
- a **known** one (:class:`Known`), what this store itself got straight from the API: the
  answer to its own write, or a direct read (e.g. while resolving a 409). It is newer than the
  watched copy until the watch delivers the same change, and it is what makes the store read
  its own writes: the leader must never re-read its previous revision and decide on it.

Which one is newer? Kubernetes says ``metadata.resourceVersion`` is opaque (it may only be
compared for equality), so it is not used to order copies. Sluice's own ``status.revision``
(:mod:`controller.k8s.status_codec`) is: it grows by one with every write of the rollout,
across a terminal rollout replaced by a new one of the same name. Within one incarnation of
the object (its ``metadata.uid``) the higher revision is the newer copy. Across incarnations
(the object deleted and created again) revisions say nothing, so the copy obtained by the
later request wins, and a known copy not confirmed by the watch within ``max_lag_s`` sends
the read to the API directly instead of being trusted any longer.

No I/O and no clock: times are monotonic seconds passed in.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

Obj = Mapping[str, Any]
"""A ``Rollout`` object as the API returns it (a JSON dict)."""

Choice = Literal["watched", "known", "direct"]
"""Serve the watched copy, serve the known copy, or read from the API (the cache cannot
tell)."""


@dataclass(frozen=True)
class Known:
    """A copy of one rollout's object this store got from the API itself.

    Attributes:
        obj: the object; None when the API said it does not exist (a 404, or our delete).
        uid: ``metadata.uid`` of ``obj``, or of the object deleted; "" when unknown.
        noted_at: when it was noted (monotonic seconds).
    """

    obj: Obj | None
    uid: str
    noted_at: float


def revision(obj: Obj) -> int:
    """Sluice's ``status.revision`` of a ``Rollout`` object: 1 without a status (as
    :func:`controller.k8s.status_codec.decode` reads it), 0 when unreadable (older than any
    readable copy)."""
    status = obj.get("status") or {}
    if not status:
        return 1
    try:
        return int(status.get("revision", 0))
    except (TypeError, ValueError):
        return 0


def uid(obj: Obj) -> str:
    """``metadata.uid`` of an object ("" when absent)."""
    return str((obj.get("metadata") or {}).get("uid") or "")


def known(obj: Obj | None, now: float, deleted_uid: str = "") -> Known:
    """A :class:`Known` copy noted at ``now``: ``obj``, or its absence (``obj`` None; the
    ``deleted_uid`` of the object known to be gone, when the caller knows it)."""
    return Known(obj, uid(obj) if obj is not None else deleted_uid, now)


def replaces(old: Known | None, new: Known, started_at: float) -> bool:
    """Whether ``new`` (from a request started at ``started_at``, monotonic seconds) takes
    the place of ``old``: within one incarnation the higher (or equal) revision does; else
    the answer to the request started after ``old`` was noted."""
    if old is None:
        return True
    if new.obj is not None and old.obj is not None and new.uid == old.uid:
        return revision(new.obj) >= revision(old.obj)
    return started_at >= old.noted_at


def caught_up(entry: Known, watched: Obj | None) -> bool:
    """Whether the watch has delivered at least what ``entry`` says (``entry`` is redundant):
    the same incarnation at a revision at least as high; for an absence, no object, or one
    of another incarnation than the deleted one."""
    if entry.obj is None:
        return watched is None or (bool(entry.uid) and uid(watched) != entry.uid)
    return (
        watched is not None
        and uid(watched) == entry.uid
        and revision(watched) >= revision(entry.obj)
    )


def deleted(entry: Known, gone: Obj) -> bool:
    """Whether a watch's ``DELETED`` of ``gone`` ends ``entry``'s object: the same
    incarnation (our write of it came before its deletion, else the write had failed)."""
    return entry.obj is not None and uid(gone) == entry.uid


def choose(watched: Obj | None, entry: Known | None, now: float, max_lag_s: float) -> Choice:
    """Which copy to serve of one rollout. ``watched``: the watch's copy (None: the watch has
    none); ``entry``: this store's known copy; ``max_lag_s``: how long (seconds) a known copy
    may wait for the watch to deliver it before the cache counts as lagging (then
    ``"direct"``)."""
    if entry is None or caught_up(entry, watched):
        return "watched"
    if now - entry.noted_at <= max_lag_s:
        return "known"
    return "direct"


def merged(
    watched: Mapping[str, Obj], entries: Mapping[str, Known], now: float, max_lag_s: float
) -> list[Obj] | None:
    """Every rollout's object to serve (by name, sorted), each chosen by :func:`choose`; None
    when any of them must be read directly (then the whole list is)."""
    objects: list[Obj] = []
    for name in sorted({*watched, *entries}):
        obj, entry = watched.get(name), entries.get(name)
        choice = choose(obj, entry, now, max_lag_s)
        if choice == "direct":
            return None
        picked = obj if choice == "watched" else entry.obj if entry is not None else None
        if picked is not None:
            objects.append(picked)
    return objects


class Delivered:
    """What a watch has delivered of each name: the uid of its copy and when it arrived
    (monotonic seconds), and the uids of the objects it saw deleted (the last ``limit``;
    an object replaced by another of the same name in a re-list counts as deleted). Not
    thread-safe: the caller holds its lock.

    A copy of a deleted object must never be remembered as known: the store's answer to its
    own write may come after the watch's ``DELETED`` of that object (and the ``ADDED`` of
    the next one), and would otherwise be served as the newest word."""

    def __init__(self, limit: int = 10_000) -> None:
        self.uids: dict[str, str] = {}
        self.arrived: dict[str, float] = {}
        self._dead: dict[str, None] = {}
        self._limit = limit

    def event(self, type_: str, obj: Obj, now: float) -> None:
        """The watch delivered ``type_`` (ADDED, MODIFIED, DELETED) of ``obj`` at ``now``."""
        name = str((obj.get("metadata") or {}).get("name") or "")
        this = uid(obj)
        if type_ == "DELETED":
            self._bury(this)
            self.uids.pop(name, None)
            self.arrived.pop(name, None)
            return
        before = self.uids.get(name)
        if before and before != this:
            self._bury(before)
        self.uids[name] = this
        self.arrived[name] = now

    def dead(self, entry: Known) -> bool:
        """Whether ``entry`` is a copy of an object the watch saw deleted."""
        return entry.obj is not None and entry.uid in self._dead

    def _bury(self, gone: str) -> None:
        if not gone:
            return
        self._dead.pop(gone, None)
        self._dead[gone] = None
        while len(self._dead) > self._limit:
            del self._dead[next(iter(self._dead))]
