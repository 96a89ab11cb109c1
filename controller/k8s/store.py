"""The rollout store on Kubernetes: one ``Rollout`` object per rollout, its state in status.

Implements :class:`controller.store.rollouts.RolloutStore` with the ``kubernetes`` client
(synchronous; safe to share between threads). The object's layout is
:mod:`controller.k8s.status_codec`'s. Concurrency is the API server's optimistic concurrency:
every write carries the ``metadata.resourceVersion`` it was derived from, and a 409 Conflict
is re-read, never overwritten: when the rollout's own ``status.revision`` moved, the caller
must re-decide (:class:`RevisionConflictError`); when only the resourceVersion moved (a label
or annotation edit), the same write is retried on the new version.

The analysis log (every verdict, every weight change) is ``status.analyses``, its last
:data:`~controller.k8s.status_codec.ANALYSIS_LIMIT` entries, written with the state.

Reads (``watch=True``, what ``sluice serve --kubernetes`` uses): ``get``, ``list``,
``history``, ``analyses`` and ``weight_steps`` are answered from a watch of the namespace's
Rollouts (:mod:`controller.k8s.rollout_cache`) merged with this store's own writes, so a
replica polling its store every second makes no request for it; before the watch's first
list, while it has been down (or not proven healthy since reconnecting) longer than
``watch_max_down_s``, while it has stayed silent longer than
:data:`~controller.k8s.rollout_cache.MAX_SILENT_S`, or while it has not delivered one of this
store's writes or direct reads within ``watch_max_lag_s``, they GET/LIST as without a watch
(a read is never served from a cache known to be broken, nor older than what this store got
from the API), and ``get(name, fresh=True)`` always GETs (the reconciler's read before a
push). Writes are always API calls on the object read directly (never from the cache), and so
is every re-read resolving a 409.
Without ``watch`` (the CLI's one-shot commands) every read is a GET or a LIST.

History: the last ``history_limit`` events stay in ``status.history``; each event also becomes
a ``core/v1`` Event (kept by the cluster for its event TTL, an hour by default), written after
the status and best effort (a failure is logged, the rollout's write stands).

What Kubernetes cannot give: one transaction over several objects. "One active rollout per
route" is checked from a fresh list before a write (as the SQLite store does in its
transaction) and, for a new object, again after it: a creator that then sees another active
rollout on its route withdraws its object (LISTs are linearizable, so of two racing creators
at least the later one sees the other; both may withdraw, never both stay). A retry making a
terminal rollout active again is only checked before its write.

Source: Kubernetes API concepts (resourceVersion, optimistic concurrency, status
subresource), API conventions (Events).
"""

from __future__ import annotations

import builtins
import logging
from collections.abc import Sequence
from dataclasses import replace
from typing import Any, TypeVar

from kubernetes import client as k8s_client

from controller.k8s.rollout_api import ConflictError, ForbiddenError, RolloutApi
from controller.k8s.rollout_cache import MAX_DOWN_S, MAX_LAG_S, RolloutCache
from controller.k8s.rollout_reads import RolloutReads
from controller.k8s.status_codec import (
    RolloutRecord,
    append_analyses,
    append_history,
    decode,
    encode_status,
    event_body,
    rollout_object,
)
from controller.policy.rollout_policy import RolloutPolicy
from controller.rollout.actions import RecordEvent
from controller.rollout.state import ACTIVE, Phase, RolloutState
from controller.store.rollouts import (
    AnalysisPoint,
    CorruptRecordError,
    HistoryEvent,
    PolicySource,
    RevisionConflictError,
    RolloutExistsError,
    RolloutNotFoundError,
    RolloutStore,
    RouteBusyError,
    StoredRollout,
    StoreError,
    WeightStep,
)

log = logging.getLogger(__name__)
_T = TypeVar("_T")

METADATA_RETRIES = 5
"""How often a write is retried when only the object's resourceVersion moved."""


class KubernetesRolloutStore:
    """:class:`~controller.store.rollouts.RolloutStore` on ``Rollout`` objects.

    Args:
        api_client: the API client (:func:`controller.k8s.client.api_client`); the caller
            owns it (:meth:`close` leaves it open).
        namespace: where the rollouts live.
        identity: this writer, as ``reportingInstance`` of the Events it creates (a pod name).
        history_limit: events kept in ``status.history`` (older ones only live as Events).
        request_timeout_s: each API request's connect and read timeout, in seconds.
        watch: serve reads from a watch (started here, stopped by :meth:`close`); see the
            module's "Reads".
        watch_max_down_s: seconds the watch may be down (disconnected, or reconnected but
            not yet proven healthy) before reads go direct.
        watch_max_lag_s: seconds a write of this store may be missing from the watch before
            reads go direct.
        watch_retry_s: the watch's pause after an API error, in seconds.
    """

    def __init__(
        self,
        api_client: k8s_client.ApiClient,
        namespace: str,
        *,
        identity: str = "sluice",
        history_limit: int = 100,
        request_timeout_s: float = 10.0,
        watch: bool = False,
        watch_max_down_s: float = MAX_DOWN_S,
        watch_max_lag_s: float = MAX_LAG_S,
        watch_retry_s: float = 1.0,
    ) -> None:
        if history_limit < 1:
            raise ValueError("history_limit must be at least 1")
        self._api = RolloutApi(api_client, namespace, request_timeout_s)
        self._identity = identity
        self._history_limit = history_limit
        cache = None
        if watch:
            cache = RolloutCache(
                api_client,
                namespace,
                max_down_s=watch_max_down_s,
                max_lag_s=watch_max_lag_s,
                retry_s=watch_retry_s,
            ).start()
        self._reads = RolloutReads(self._api, cache)

    # -- reads ---------------------------------------------------------------------------

    def get(self, name: str, fresh: bool = False) -> StoredRollout:
        """See :meth:`controller.store.rollouts.RolloutStore.get`: with ``fresh``, a GET
        even when the watch could answer (the reconciler's read before it pushes weights: a
        watch may lag behind another replica's writes without anything showing it)."""
        if fresh:
            return decode(self._reads.read(name)).rollout
        return decode(self._reads.object(name)).rollout

    def list(self, active_only: bool = False) -> builtins.list[StoredRollout]:
        """See :meth:`controller.store.rollouts.RolloutStore.list`, except that an object that
        cannot be read is logged and left out instead of failing the whole list: anyone
        allowed to create Rollouts could otherwise stop every controller (its start, the
        reconciler's supervision, the followers); :meth:`get` of that name still raises."""
        rollouts: builtins.list[StoredRollout] = []
        for obj in self._reads.objects():
            try:
                rollouts.append(decode(obj).rollout)
            except CorruptRecordError as exc:
                log.warning("left out of the rollouts: %s", exc)
        if active_only:
            rollouts = [r for r in rollouts if r.active]
        return sorted(rollouts, key=lambda r: r.name)

    def history(self, name: str, limit: int | None = None) -> builtins.list[HistoryEvent]:
        """See :meth:`controller.store.rollouts.RolloutStore.history`; only the events kept
        in status (the last ``history_limit``; the Events hold older ones while they live)."""
        if limit is not None and limit < 0:
            raise ValueError("limit must not be negative")
        events = builtins.list(decode(self._reads.object(name)).history)
        if limit is not None:
            events = events[len(events) - limit :] if limit else []
        return events

    def analyses(self, name: str, limit: int | None = None) -> builtins.list[AnalysisPoint]:
        """See :meth:`controller.store.rollouts.RolloutStore.analyses`; the entries kept in
        status (:data:`~controller.k8s.status_codec.ANALYSIS_LIMIT`)."""
        points = [e for e in self._log(name, limit) if isinstance(e, AnalysisPoint)]
        return _last(points, limit)

    def weight_steps(self, name: str, limit: int | None = None) -> builtins.list[WeightStep]:
        """See :meth:`controller.store.rollouts.RolloutStore.weight_steps`."""
        return _last([e for e in self._log(name, limit) if isinstance(e, WeightStep)], limit)

    def _log(self, name: str, limit: int | None) -> tuple[AnalysisPoint | WeightStep, ...]:
        if limit is not None and limit < 0:
            raise ValueError("limit must not be negative")
        return decode(self._reads.object(name)).analyses

    def wait_synced(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the watch's first list; True once reads come
        from it (False at once without ``watch``)."""
        return self._reads.wait_synced(timeout)

    @property
    def serving_from_watch(self) -> bool:
        """Whether reads are answered from the watch now (synced, not down too long)."""
        return self._reads.from_watch

    # -- writes --------------------------------------------------------------------------

    def create(
        self,
        name: str,
        policy: RolloutPolicy,
        source: PolicySource,
        state: RolloutState,
        event: RecordEvent,
    ) -> StoredRollout:
        """See :meth:`controller.store.rollouts.RolloutStore.create`.

        POSTs the object, then writes its status; when the status write is forbidden (403:
        the creator may create rollouts but not write their status) the object stays and
        reads as pending (:mod:`controller.k8s.status_codec`). Another failure of that write
        deletes the object again (best effort). A terminal rollout of the same name is
        replaced by a PUT on its resourceVersion, then its status reset.
        """
        existing: dict[str, Any] | None = None
        route = policy.spec.route
        started = self._reads.started()
        for obj in self._api.list():
            other, phase, other_route = _summary(obj)
            if other == name:
                existing = obj
                if phase in ACTIVE:
                    raise RolloutExistsError(name, phase)
            elif state.phase in ACTIVE and phase in ACTIVE and other_route == route:
                raise RouteBusyError(route, other, phase)
        body = rollout_object(name, self._api.namespace, policy, source, event.actor)
        history: tuple[HistoryEvent, ...] = ()
        old: RolloutRecord | None = None
        if existing is None:
            try:
                obj = self._api.create(name, body)
            except ConflictError as exc:  # created meanwhile by someone else
                try:
                    phase = _summary(self._reads.read(name))[1]
                except RolloutNotFoundError:
                    raise StoreError(
                        f"rollout {name!r} was created and deleted meanwhile; try again"
                    ) from exc
                raise RolloutExistsError(name, phase) from exc
            revision, seq = 1, 0
        else:
            old = decode(existing)
            body["metadata"] = _replaced_metadata(existing["metadata"], body["metadata"])
            try:
                obj = self._api.replace(name, body)
            except ConflictError as exc:
                raise StoreError(
                    f"rollout {name!r} changed while being replaced; nothing was written, try again"
                ) from exc
            revision, history, seq = old.rollout.revision + 1, old.history, old.history_seq
        analyses, analysis_seq = append_analyses(
            None if old is None else replace(old, has_status=False), state, [event]
        )
        first = HistoryEvent(
            seq + 1, name, event.at, event.actor, event.transition, event.reason, event.details
        )
        status = encode_status(
            state,
            revision=revision,
            created_at=event.at,
            generation=int(obj["metadata"].get("generation", 1)),
            history=(*history, first)[-self._history_limit :],
            history_seq=seq + 1,
            analyses=analyses,
            analysis_seq=analysis_seq,
        )
        try:
            obj = self._write_first_status(name, obj, status)
        except ForbiddenError as exc:
            log.warning(
                "rollout %r created, but its status cannot be written (%s): it reads as "
                "pending until the controller writes it",
                name,
                exc,
            )
            obj = self._reads.read(name)
        except StoreError:
            if existing is None:
                self._undo_create(name, obj)
            raise
        if existing is None and state.phase in ACTIVE:
            self._settle_route_race(name, route, obj)
        record = decode(self._reads.noted(obj, started))
        self._record_events(obj, record.history[-1:])
        return record.rollout

    def update(
        self,
        name: str,
        expected_revision: int,
        state: RolloutState,
        events: Sequence[RecordEvent],
    ) -> StoredRollout:
        """See :meth:`controller.store.rollouts.RolloutStore.update`: a PUT of ``/status`` on
        the resourceVersion read. A 409 is re-read: the revision moved →
        RevisionConflictError; only the resourceVersion moved → the same write again on the
        new one (up to :data:`METADATA_RETRIES` times)."""
        obj = self._reads.read(name)
        for _ in range(METADATA_RETRIES + 1):
            record = decode(obj)
            if record.rollout.revision != expected_revision:
                raise RevisionConflictError(name, expected_revision, record.rollout.revision)
            if record.rollout.state.phase not in ACTIVE and state.phase in ACTIVE:
                self._check_route_free(record.rollout.route, name)
            history, seq = append_history(record, events, self._history_limit)
            analyses, analysis_seq = append_analyses(record, state, events)
            obj["status"] = encode_status(
                state,
                revision=expected_revision + 1,
                created_at=record.rollout.created_at,
                generation=record.generation,
                history=history,
                history_seq=seq,
                analyses=analyses,
                analysis_seq=analysis_seq,
            )
            started = self._reads.started()
            try:
                written = self._reads.noted(self._api.replace_status(name, obj), started)
            except ConflictError:
                obj = self._reads.read(name)  # decided again above if its revision moved
                continue
            after = decode(written)
            # an object that had no status gets the Event of its (synthesized) creation too
            fresh = len(events) + (0 if record.has_status else len(record.history))
            self._record_events(written, after.history[-fresh:] if fresh else ())
            return after.rollout
        raise StoreError(
            f"rollout {name!r}: its object kept changing under {METADATA_RETRIES + 1} status "
            "writes; try again"
        )

    def close(self) -> None:
        """Stop the watch, if any (its thread joined); the API client belongs to the caller
        and stays open. Reads after this are GETs and LISTs."""
        self._reads.close()

    # -- helpers -------------------------------------------------------------------------

    def _write_first_status(
        self, name: str, obj: dict[str, Any], status: dict[str, Any]
    ) -> dict[str, Any]:
        """PUT a created (or replaced) object's first status; on 409, retried while the
        object's spec and status are still the ones just written (a metadata edit)."""
        spec, before = obj.get("spec"), obj.get("status") or None
        for _ in range(METADATA_RETRIES):
            try:
                return self._api.replace_status(name, {**obj, "status": status})
            except ConflictError:
                obj = self._reads.read(name)
                if obj.get("spec") != spec or (obj.get("status") or None) != before:
                    break
        raise StoreError(f"rollout {name!r} changed while being created; try again")

    def _undo_create(self, name: str, obj: dict[str, Any]) -> None:
        """Delete an object whose first status could not be written, so a failed create
        leaves nothing; only if it is still the one created (uid precondition)."""
        uid = str(obj["metadata"].get("uid", ""))
        started = self._reads.started()
        try:
            self._api.delete(name, uid)
            self._reads.deleted(name, uid, started)
        except StoreError as exc:
            log.warning(
                "rollout %r: its status could not be written nor its object deleted (%s); "
                "it reads as pending",
                name,
                exc,
            )

    def _settle_route_race(self, name: str, route: str, obj: dict[str, Any]) -> None:
        """After creating: another active rollout on the route now means a creator raced
        this one past the check before the write. Whoever sees the other after its own write
        withdraws (deletes its object), so two never both win; both may lose, and retry."""
        try:
            self._check_route_free(route, name)
        except RouteBusyError:
            self._undo_create(name, obj)
            raise

    def _check_route_free(self, route: str, name: str) -> None:
        for obj in self._api.list():
            other, phase, other_route = _summary(obj)
            if other != name and other_route == route and phase in ACTIVE:
                raise RouteBusyError(route, other, phase)

    def _record_events(self, obj: dict[str, Any], events: Sequence[HistoryEvent]) -> None:
        """Each event as a ``core/v1`` Event; failures are logged (the status holds them)."""
        for event in events:
            try:
                self._api.create_event(event_body(obj, event, self._identity))
            except StoreError as exc:
                log.warning("rollout %r: Event %d not recorded: %s", event.rollout, event.seq, exc)


def _last(items: builtins.list[_T], limit: int | None) -> builtins.list[_T]:
    if limit is None:
        return items
    return items[len(items) - limit :] if limit else []


def _summary(obj: dict[str, Any]) -> tuple[str, Phase, str]:
    """(name, phase, route) of a ``Rollout`` object without decoding it whole, so a damaged
    object of another name does not block creating one; no status reads as pending."""
    status = obj.get("status") or {}
    try:
        phase = Phase(status.get("phase", Phase.PENDING))
    except ValueError:
        phase = Phase.PENDING  # unreadable: counted as active, it may hold its route
    spec = obj.get("spec") or {}
    return str(obj["metadata"]["name"]), phase, str(spec.get("route", ""))


def _replaced_metadata(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """The metadata replacing a terminal rollout's: the old one (uid, resourceVersion as the
    precondition, labels, finalizers, owners) with Sluice's annotations renewed (the old ones
    dropped: a policy text absent now must not survive from the previous rollout)."""
    annotations = old.get("annotations") or {}
    kept = {k: v for k, v in annotations.items() if not k.startswith("sluice.dev/")}
    return {**old, "annotations": {**kept, **new["annotations"]}}


def _conforms(store: KubernetesRolloutStore) -> RolloutStore:
    return store  # mypy checks the class against the protocol here
