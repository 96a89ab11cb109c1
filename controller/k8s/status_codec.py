"""A ``Rollout`` object (JSON dict, ``sluice.dev/v1alpha1``) <-> a stored rollout. Pure.

What the Kubernetes rollout store (:mod:`controller.k8s.store`) writes and reads, without I/O:

- ``metadata.name`` names the rollout; ``spec`` is the policy file's ``spec`` (camelCase, as
  ``RolloutPolicy.model_dump(mode="json", by_alias=True, exclude_none=True)``); the policy's
  own ``metadata.name`` and its :class:`~controller.store.rollouts.PolicySource` are
  annotations (:data:`POLICY_NAME` ... :data:`POLICY_TEXT`, the text only under
  :data:`MAX_POLICY_TEXT` bytes: annotations share a 256 KiB budget per object).
- ``status`` (the status subresource): the :class:`~controller.rollout.state.RolloutState`
  with camelCase keys (as :func:`controller.k8s.crd.status_schema`), ``observedGeneration``,
  and the store's bookkeeping: ``revision`` (the protocol's revision), ``createdAt`` (epoch
  seconds), ``historySeq`` (the last history number given), ``history`` (the last events),
  ``analysisSeq`` and ``analyses`` (the last :data:`ANALYSIS_LIMIT` entries of the analysis
  log, compact: :func:`controller.store.analysis_log.encode_entry`).
- An object without a status (applied with kubectl, or whose creator may not write status)
  reads as a new pending rollout: :func:`controller.rollout.machine.start` at its
  ``creationTimestamp``, by the :data:`CREATED_BY` annotation's actor, revision 1.

Source: Kubernetes API conventions (metadata, spec/status, Event fields of ``core/v1``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError
from pydantic.alias_generators import to_camel

from controller.k8s.crd import API_VERSION, KIND
from controller.policy.rollout_policy import RolloutPolicy
from controller.rollout.actions import RecordEvent
from controller.rollout.machine import start
from controller.rollout.state import Phase, RolloutState
from controller.store.analysis_log import (
    LogEntry,
    decode_entry,
    encode_entry,
    log_entries,
    numbered,
)
from controller.store.rollouts import (
    CorruptRecordError,
    HistoryEvent,
    PolicySource,
    StoredRollout,
    record_problem,
)

POLICY_NAME = "sluice.dev/policy-name"
POLICY_PATH = "sluice.dev/policy-path"
GIT_COMMIT = "sluice.dev/git-commit"
GIT_DIRTY = "sluice.dev/git-dirty"
POLICY_TEXT = "sluice.dev/policy-text"
CREATED_BY = "sluice.dev/created-by"
"""Who created the rollout: the actor of its creation event when it has no status yet."""
DEFAULT_ACTOR = "kubernetes"
"""The creation actor of an object without :data:`CREATED_BY`."""
MAX_POLICY_TEXT = 64 * 1024
"""Policy texts of this many UTF-8 bytes or more are not kept (annotation budget)."""
MAX_EVENT_MESSAGE = 1024
"""A Kubernetes Event's message is cut to this many UTF-8 bytes."""
ANALYSIS_LIMIT = 500
"""Analysis log entries kept in ``status.analyses`` (verdicts and weight steps together)."""
WARNING_PHASES = frozenset({Phase.ROLLING_BACK, Phase.ROLLED_BACK, Phase.FAILED, Phase.PAUSED})
"""Target phases recorded as ``type: Warning`` Events (the rest are ``Normal``)."""

_STATE_KEYS = {to_camel(f): f for f in RolloutState.model_fields}
"""camelCase status key -> RolloutState field."""


@dataclass(frozen=True)
class RolloutRecord:
    """A decoded ``Rollout`` object.

    Attributes:
        rollout: the rollout as the store protocol returns it.
        history: the events kept in status (oldest first; seq increasing).
        history_seq: the number of the last event ever recorded (older ones fell off).
        uid: ``metadata.uid``; resource_version: ``metadata.resourceVersion`` (the CAS token);
        generation: ``metadata.generation`` (1 if absent).
        has_status: False when the object had no status (read as new and pending).
        analyses: the analysis log entries kept in status (oldest first).
        analysis_seq: the number of the last analysis log entry ever recorded.
    """

    rollout: StoredRollout
    history: tuple[HistoryEvent, ...]
    history_seq: int
    uid: str
    resource_version: str
    generation: int
    has_status: bool
    analyses: tuple[LogEntry, ...] = ()
    analysis_seq: int = 0


def rollout_object(
    name: str, namespace: str, policy: RolloutPolicy, source: PolicySource, actor: str
) -> dict[str, Any]:
    """The ``Rollout`` object to create (or to replace a terminal one with), without status.

    ``actor`` goes in :data:`CREATED_BY`; ``source.text`` only when under
    :data:`MAX_POLICY_TEXT` UTF-8 bytes.
    """
    annotations = {POLICY_NAME: policy.metadata.name, CREATED_BY: actor}
    annotations[GIT_DIRTY] = "true" if source.git_dirty else "false"
    if source.path is not None:
        annotations[POLICY_PATH] = source.path
    if source.git_commit is not None:
        annotations[GIT_COMMIT] = source.git_commit
    if len(source.text.encode()) < MAX_POLICY_TEXT:
        annotations[POLICY_TEXT] = source.text
    spec = policy.model_dump(mode="json", by_alias=True, exclude_none=True)["spec"]
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": name, "namespace": namespace, "annotations": annotations},
        "spec": spec,
    }


def encode_status(
    state: RolloutState,
    *,
    revision: int,
    created_at: float,
    generation: int,
    history: Sequence[HistoryEvent],
    history_seq: int,
    analyses: Sequence[LogEntry] = (),
    analysis_seq: int = 0,
) -> dict[str, Any]:
    """The ``status`` of a rollout: state (camelCase, nulls left out: the schema's fields are
    optional), ``observedGeneration``, ``revision``, ``createdAt`` (epoch s), ``historySeq``,
    ``history``, ``analysisSeq`` and ``analyses`` (these two only once there is a log)."""
    status = {to_camel(k): v for k, v in state.model_dump(mode="json").items() if v is not None}
    status.update(
        observedGeneration=generation,
        revision=revision,
        createdAt=created_at,
        historySeq=history_seq,
        history=[
            {
                "seq": e.seq,
                "at": e.at,
                "actor": e.actor,
                "transition": e.transition,
                "reason": e.reason,
                "details": e.details,
            }
            for e in history
        ],
    )
    if analysis_seq:  # left out until there is a log, as nulls are
        status.update(analysisSeq=analysis_seq, analyses=[encode_entry(e) for e in analyses])
    return status


def append_history(
    record: RolloutRecord, events: Sequence[RecordEvent], limit: int
) -> tuple[tuple[HistoryEvent, ...], int]:
    """``record``'s history with ``events`` appended (numbered on from its ``history_seq``),
    cut to the last ``limit``; and the new ``history_seq``."""
    name = record.rollout.name
    added = tuple(
        HistoryEvent(record.history_seq + i, name, e.at, e.actor, e.transition, e.reason, e.details)
        for i, e in enumerate(events, start=1)
    )
    kept = (record.history + added)[-limit:] if limit > 0 else ()
    return kept, record.history_seq + len(added)


def append_analyses(
    record: RolloutRecord | None,
    state: RolloutState,
    events: Sequence[RecordEvent] = (),
    limit: int = ANALYSIS_LIMIT,
) -> tuple[tuple[LogEntry, ...], int]:
    """The analysis log of ``record`` (None: a new rollout) with the entries of writing
    ``state`` and ``events`` appended (:func:`controller.store.analysis_log.log_entries`),
    cut to the last ``limit``; and the new ``analysisSeq``. A record without status had no
    log: its state counts as new."""
    kept, seq = (record.analyses, record.analysis_seq) if record is not None else ((), 0)
    old = record.rollout.state if record is not None and record.has_status else None
    added = tuple(numbered(log_entries(old, state, events), seq))
    return (kept + added)[-limit:] if limit > 0 else (), seq + len(added)


def decode(obj: Mapping[str, Any]) -> RolloutRecord:
    """Read a ``Rollout`` object (as the API returns it).

    Raises:
        CorruptRecordError: its spec is not a valid policy, or its annotations or status
            cannot be read; the message names the object and the field.
    """
    meta = obj.get("metadata") or {}
    name = str(meta.get("name", "?"))
    where = f"rollout {name!r} (Rollout {meta.get('namespace', '?')}/{name})"
    annotations = meta.get("annotations") or {}
    policy = _decode_policy(where, name, annotations, obj.get("spec"))
    field = "metadata.annotations"
    try:
        source = PolicySource(
            path=_opt_str(annotations.get(POLICY_PATH)),
            git_commit=_opt_str(annotations.get(GIT_COMMIT)),
            git_dirty=str(annotations.get(GIT_DIRTY, "false")).lower() == "true",
            text=str(annotations.get(POLICY_TEXT, "")),
        )
        field = "metadata.creationTimestamp"
        created = parse_time(str(meta["creationTimestamp"]))
        field = "metadata.generation"
        generation = int(meta.get("generation", 1))
        status = obj.get("status") or {}
        if not status:
            actor = str(annotations.get(CREATED_BY) or DEFAULT_ACTOR)
            state, first = start(policy, created, actor)
            history: tuple[HistoryEvent, ...] = (_history_event(name, 1, first),)
            rollout = StoredRollout(name, policy.spec.route, policy, source, state, 1, created)
            return RolloutRecord(
                rollout, history, 1, str(meta.get("uid", "")), _rv(meta), generation, False
            )
        field = "status.revision"
        revision = _int(status["revision"])
        field = "status.createdAt"
        created = float(status["createdAt"])
        field = "status.historySeq"
        history_seq = _int(status.get("historySeq", 0))
        field = "status.history"
        history = tuple(_decode_entry(name, e) for e in status.get("history") or ())
        field = "status.analysisSeq"
        analysis_seq = _int(status.get("analysisSeq", 0))
        field = "status.analyses"
        analyses = tuple(decode_entry(e) for e in status.get("analyses") or ())
        field = "status"
        fields = {_STATE_KEYS[k]: v for k, v in status.items() if k in _STATE_KEYS}
        state = RolloutState.model_validate(fields)
        field = "status.observedGeneration"
        observed = status.get("observedGeneration")
        if observed is not None and _int(observed) != generation:
            # The state was derived from another spec (a replaced rollout whose new status is
            # not written yet, or a spec edited despite the CRD's rule): it says nothing about
            # this policy. Read as this policy's new pending rollout; its history goes on.
            actor = str(annotations.get(CREATED_BY) or DEFAULT_ACTOR)
            state, first = start(policy, created, actor)
            first = replace(
                first,
                reason=f"{first.reason} (the spec changed: generation {generation}, the state "
                f"was of generation {_int(observed)})",
            )
            history_seq += 1
            history = (*history, _history_event(name, history_seq, first))
    except ValidationError as exc:
        loc = exc.errors()[0]["loc"]
        if field == "status" and loc:  # name the camelCase key the object holds
            field = f"status.{to_camel(str(loc[0]))}"
        raise CorruptRecordError(
            f"{where}: {field} cannot be read ({record_problem(exc)})"
        ) from exc
    except (KeyError, TypeError, ValueError) as exc:
        raise CorruptRecordError(
            f"{where}: {field} cannot be read ({record_problem(exc)})"
        ) from exc
    rollout = StoredRollout(name, policy.spec.route, policy, source, state, revision, created)
    return RolloutRecord(
        rollout,
        history,
        history_seq,
        str(meta.get("uid", "")),
        _rv(meta),
        generation,
        True,
        analyses,
        analysis_seq,
    )


def event_body(involved: Mapping[str, Any], event: HistoryEvent, identity: str) -> dict[str, Any]:
    """The ``core/v1`` Event recording ``event`` of the Rollout ``involved`` (its object, for
    name, namespace, uid).

    ``reason``: the target phase in CamelCase (``progressing → rolling_back``:
    ``RollingBack``); ``type``: Warning for :data:`WARNING_PHASES`, else Normal; ``message``:
    the event's reason cut to :data:`MAX_EVENT_MESSAGE` bytes. The name is derived from the
    rollout's uid and the event's seq, so creating it twice is refused (409) rather than
    recorded twice.
    """
    meta = involved["metadata"]
    uid = str(meta.get("uid", ""))
    target = event.transition.split("→")[-1].strip()
    when = format_time(event.at)
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {
            "name": f"{meta['name']}.{uid[:8] or 'x'}.{event.seq}",
            "namespace": meta["namespace"],
            "labels": {"app.kubernetes.io/managed-by": "sluice"},
        },
        "involvedObject": {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "name": meta["name"],
            "namespace": meta["namespace"],
            "uid": uid,
        },
        "reason": "".join(p[:1].upper() + p[1:] for p in target.replace("-", "_").split("_"))
        or "Transition",
        "message": _cut(event.reason, MAX_EVENT_MESSAGE),
        "type": "Warning" if target in WARNING_PHASES else "Normal",
        "source": {"component": "sluice"},
        "reportingComponent": "sluice.dev/controller",
        "reportingInstance": identity,
        "firstTimestamp": when,
        "lastTimestamp": when,
        "count": 1,
    }


def parse_time(text: str) -> float:
    """An RFC 3339 time (``2026-11-22T00:03:38Z``) as epoch seconds.

    Raises:
        ValueError: not an RFC 3339 time.
    """
    parsed = datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        raise ValueError(f"time {text!r} has no UTC offset")
    return parsed.timestamp()


def format_time(epoch_s: float) -> str:
    """Epoch seconds as RFC 3339 in UTC, whole seconds (``metav1.Time``)."""
    return datetime.fromtimestamp(epoch_s, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _decode_policy(
    where: str, name: str, annotations: Mapping[str, Any], spec: object
) -> RolloutPolicy:
    document = {
        "apiVersion": API_VERSION,
        "kind": "RolloutPolicy",
        "metadata": {"name": str(annotations.get(POLICY_NAME) or name)},
        "spec": spec,
    }
    try:
        policy = RolloutPolicy.model_validate(document, by_alias=True)
    except ValidationError as exc:
        raise CorruptRecordError(f"{where}: {record_problem(exc)}") from exc
    return policy


def _decode_entry(name: str, entry: Mapping[str, Any]) -> HistoryEvent:
    details = entry.get("details") or {}
    if not isinstance(details, dict):
        raise TypeError(f"details is a JSON {type(details).__name__}, not an object")
    return HistoryEvent(
        seq=_int(entry["seq"]),
        rollout=name,
        at=float(entry["at"]),
        actor=str(entry["actor"]),
        transition=str(entry["transition"]),
        reason=str(entry.get("reason", "")),
        details=details,
    )


def _history_event(name: str, seq: int, event: RecordEvent) -> HistoryEvent:
    return HistoryEvent(
        seq, name, event.at, event.actor, event.transition, event.reason, dict(event.details)
    )


def _rv(meta: Mapping[str, Any]) -> str:
    return str(meta.get("resourceVersion", ""))


def _int(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value):
        raise TypeError(f"expected an integer, got {value!r}")
    return int(value)


def _opt_str(value: object) -> str | None:
    return None if value is None else str(value)


def _cut(text: str, limit: int) -> str:
    raw = text.encode()
    if len(raw) <= limit:
        return text
    return raw[: limit - 3].decode(errors="ignore") + "..."
