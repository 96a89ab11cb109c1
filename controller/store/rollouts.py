"""The rollout store: each rollout's policy, where it came from, its state, and its history.

A backend (``controller.store.sqlite_rollouts`` embedded, Kubernetes CR status later) keeps one
record per rollout name: the policy as recorded when the rollout started, the policy file's
origin (path, git commit), the state the machine derives, a revision for optimistic
concurrency, and an append-only history of events. A state and the events of its transition
are written together or not at all.

At most one *active* rollout (``state.phase in controller.rollout.state.ACTIVE``) moves a
route; a terminal rollout frees its route, and its name may be reused by a new rollout (its
history continues).

This module holds the protocol, its value types and its errors; it does no I/O.
"""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from pydantic import ValidationError

from controller.policy.rollout_policy import RolloutPolicy
from controller.rollout.actions import RecordEvent
from controller.rollout.state import ACTIVE, RolloutState, VerdictOutcome


@dataclass(frozen=True)
class PolicySource:
    """Where a rollout's policy came from.

    Attributes:
        path: the policy file as given (None: not from a file, e.g. stdin or an API).
        git_commit: the commit checked out in the git work tree holding the file (None: not in
            a git work tree, or git is not available).
        git_dirty: the file differs from ``git_commit`` (modified, staged or untracked).
        text: the policy's YAML text as given.
    """

    path: str | None
    git_commit: str | None
    git_dirty: bool
    text: str


@dataclass(frozen=True)
class StoredRollout:
    """One rollout as stored.

    Attributes:
        name: the rollout's name (unique in the store).
        route: the route it moves (``policy.spec.route``).
        policy: the policy recorded when the rollout was created.
        source: where the policy came from.
        state: the current state.
        revision: increases by one with every write of this record (creation included, and
            across a terminal rollout replaced by a new one of the same name); pass it to
            :meth:`RolloutStore.update` as ``expected_revision``.
        created_at: when this rollout was created (epoch seconds: the creation event's time).
    """

    name: str
    route: str
    policy: RolloutPolicy
    source: PolicySource
    state: RolloutState
    revision: int
    created_at: float

    @property
    def active(self) -> bool:
        """The rollout is in an active phase: it holds its route."""
        return self.state.phase in ACTIVE


@dataclass(frozen=True)
class HistoryEvent:
    """One entry of a rollout's append-only history.

    Attributes:
        seq: the entry's number in this rollout's history (1, 2, 3, ... in write order).
        rollout: the rollout's name.
        at: when it happened (epoch seconds, as the machine recorded it).
        actor: who caused it (an operator, or ``controller``).
        transition: ``"progressing → paused"``, or one phase when it did not change.
        reason: why, for people.
        details: free-form JSON values (figures of a verdict, a push's sequence, ...).
    """

    seq: int
    rollout: str
    at: float
    actor: str
    transition: str
    reason: str
    details: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class AnalysisPoint:
    """One analysis of a rollout: a verdict as the machine stored it in ``last_verdict``.

    Stores append one whenever a write changes the state's ``last_verdict`` (in the same
    transaction), so the figures of every interval are kept without an event per interval.

    Attributes:
        seq: the entry's number in this rollout's analysis log (shared with
            :class:`WeightStep`: increasing in write order, with gaps between verdicts).
        at: when the verdict was given (epoch seconds).
        stage: the stage judged (index into the policy's ``stages``, 0-based).
        weight: the candidate's desired share at the time, in percent (0-100).
        outcome: pass, fail or inconclusive.
        reason: one line for people.
        details: per SLO figures as the analyzer gave them (free-form JSON values).
    """

    seq: int
    at: float
    stage: int
    weight: float
    outcome: VerdictOutcome
    reason: str = ""
    details: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class WeightStep:
    """A change of a rollout's weights, stage or phase, as stored (the weight chart's steps).

    Stores append one whenever a write changes ``stage``, ``phase``, ``desired_weight`` or
    ``acked_weight`` (creation included), in the same transaction.

    Attributes:
        seq: the entry's number in the rollout's analysis log (see :class:`AnalysisPoint`).
        at: when the state changed (``state.updated_at``, epoch seconds).
        stage: the stage index (0-based; -1 before the first).
        desired: the candidate share the controller serves or pushes, in percent.
        acked: the candidate share every Envoy last ACKed, in percent (None: not known).
        phase: the rollout's phase after the change.
    """

    seq: int
    at: float
    stage: int
    desired: float
    acked: float | None
    phase: str


class StoreError(Exception):
    """A rollout store operation failed; the message says why, for people."""


class RolloutExistsError(StoreError):
    """An active rollout already has this name."""

    def __init__(self, name: str, phase: str) -> None:
        super().__init__(
            f"rollout {name!r} already exists and is {phase}; abort it or wait until it ends"
        )
        self.name = name
        self.phase = phase


class RouteBusyError(StoreError):
    """Another active rollout already moves this route."""

    def __init__(self, route: str, holder: str, phase: str) -> None:
        super().__init__(
            f"route {route!r} is already being moved by rollout {holder!r} ({phase}); "
            "abort it or wait until it ends"
        )
        self.route = route
        self.holder = holder
        self.phase = phase


class RolloutNotFoundError(StoreError):
    """No rollout has this name."""

    def __init__(self, name: str) -> None:
        super().__init__(f"no rollout named {name!r}")
        self.name = name


class RevisionConflictError(StoreError):
    """The rollout changed since it was read: ``expected`` is stale, ``current`` is stored.

    Read it again, derive the new state from the stored one, and retry.
    """

    def __init__(self, name: str, expected: int, current: int) -> None:
        super().__init__(
            f"rollout {name!r} changed meanwhile (revision {current}, expected {expected}); "
            "read it again and retry"
        )
        self.name = name
        self.expected = expected
        self.current = current


class CorruptRecordError(StoreError):
    """A stored record cannot be read back (damaged, or written by an incompatible version)."""


def record_problem(exc: Exception) -> str:
    """Why a stored record cannot be read, in one line for people: a pydantic error's first
    problem with its path (and how many more), a missing key, else the exception's text."""
    if isinstance(exc, ValidationError):
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "<root>"
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        return f"{where}: {first['msg']}{more}"
    if isinstance(exc, KeyError):
        return f"missing field {exc}"
    return str(exc)


class RolloutStore(Protocol):
    """Durable rollouts: records with compare-and-set updates and an append-only history.

    Implementations are safe to call from several threads, and several processes may share
    one store: every write is one atomic transaction.
    """

    def create(
        self,
        name: str,
        policy: RolloutPolicy,
        source: PolicySource,
        state: RolloutState,
        event: RecordEvent,
    ) -> StoredRollout:
        """Record a new rollout of ``policy.spec.route`` with its first state and event.

        A terminal rollout of the same name is replaced (new policy, source and state; its
        revision keeps increasing and its history continues).

        Raises:
            RolloutExistsError: an active rollout has this name.
            RouteBusyError: an active rollout of another name moves the same route.
            StoreError: the store failed (nothing was written).
        """
        ...

    def get(self, name: str, fresh: bool = False) -> StoredRollout:
        """The rollout named ``name``.

        ``fresh``: read the record itself, never a cache of it. A store that serves reads
        from a cache that may lag behind other writers (the Kubernetes store's watch) reads
        its backend directly; a store without one (SQLite) ignores it. Callers ask for it
        where an old state would act on the world before any compare-and-set could catch it
        (the reconciler's read before it pushes weights).

        Raises:
            RolloutNotFoundError: no rollout has this name.
            CorruptRecordError: its record cannot be read back.
        """
        ...

    def list(self, active_only: bool = False) -> builtins.list[StoredRollout]:
        """Every rollout (or only the active ones), sorted by name.

        Raises:
            CorruptRecordError: a record cannot be read back (the message names it).
        """
        ...

    def update(
        self,
        name: str,
        expected_revision: int,
        state: RolloutState,
        events: Sequence[RecordEvent],
    ) -> StoredRollout:
        """Compare-and-set: store ``state`` and append ``events`` in one transaction, if the
        rollout is still at ``expected_revision``; the revision becomes ``expected + 1``.

        Raises:
            RolloutNotFoundError: no rollout has this name.
            RevisionConflictError: the stored revision is not ``expected_revision``.
            RouteBusyError: ``state`` makes a terminal rollout active again (a retry) while
                another active rollout moves its route.
            StoreError: the store failed (nothing was written).
        """
        ...

    def history(self, name: str, limit: int | None = None) -> builtins.list[HistoryEvent]:
        """The rollout's events, oldest first; with ``limit``, only the last ``limit``.

        Raises:
            RolloutNotFoundError: no rollout has this name.
        """
        ...

    def analyses(self, name: str, limit: int | None = None) -> builtins.list[AnalysisPoint]:
        """The rollout's analysis log (every verdict), oldest first; with ``limit``, only the
        last ``limit``. A name reused by a new rollout continues its log (compare ``at`` with
        ``created_at``). A backend may keep only the most recent entries (Kubernetes: 500).

        Raises:
            RolloutNotFoundError: no rollout has this name.
            CorruptRecordError: the log cannot be read back.
        """
        ...

    def weight_steps(self, name: str, limit: int | None = None) -> builtins.list[WeightStep]:
        """The rollout's weight, stage and phase changes, oldest first; with ``limit``, only
        the last ``limit``. Kept with the analysis log (same numbering and retention).

        Raises:
            RolloutNotFoundError: no rollout has this name.
            CorruptRecordError: the log cannot be read back.
        """
        ...

    def close(self) -> None:
        """Release the store (after a write in progress, if any)."""
        ...
