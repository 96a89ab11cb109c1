"""The rollout store on SQLite: the embedded default, next to the weight store in one file.

Tables (own to this store; the weight store's ``route_weights`` shares the file):

- ``rollouts``: one row per rollout name: route, phase and an ``active`` flag (derived from
  the phase, so the database itself enforces one active rollout per route with a partial
  unique index), revision, policy (JSON, camelCase as in the file), source (JSON), state
  (JSON), creation and update times.
- ``rollout_events``: the append-only history, numbered per rollout (``seq``); triggers refuse
  updates and deletes.
- ``rollout_log``: the analysis log (every verdict, every weight change), appended in the
  transaction writing the state (:mod:`controller.store.sqlite_log`; added in version 2: a
  version 1 file is migrated when opened).
- ``sluice_schema``: one version per component (``rollouts``), so the weight store and this
  one can evolve apart in one file (``PRAGMA user_version`` is one number for the file).

Every write is one ``BEGIN IMMEDIATE`` transaction: concurrent processes (the controller, CLI
commands) serialize on SQLite's write lock, waiting up to :data:`BUSY_TIMEOUT_S`. The WAL
journal with ``synchronous=FULL`` keeps a committed transaction across a crash or power loss,
and an interrupted one leaves nothing behind.
"""

from __future__ import annotations

import builtins
import json
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from controller.policy.rollout_policy import RolloutPolicy
from controller.rollout.actions import RecordEvent
from controller.rollout.state import ACTIVE, RolloutState
from controller.store import sqlite_log
from controller.store.analysis_log import LogEntry, log_entries
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
    record_problem,
)

SCHEMA_VERSION = 2
"""Version of this store's tables, recorded in ``sluice_schema`` under ``rollouts``."""

BUSY_TIMEOUT_S = 5.0
"""How long a write waits for another process's write transaction before failing."""

_SCHEMA = (
    """CREATE TABLE sluice_schema (
        component TEXT PRIMARY KEY,
        version INTEGER NOT NULL
    )""",
    """CREATE TABLE rollouts (
        name TEXT PRIMARY KEY,
        route TEXT NOT NULL,
        phase TEXT NOT NULL,
        active INTEGER NOT NULL CHECK (active IN (0, 1)),
        revision INTEGER NOT NULL CHECK (revision >= 1),
        policy TEXT NOT NULL,
        source TEXT NOT NULL,
        state TEXT NOT NULL,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL
    )""",
    "CREATE UNIQUE INDEX rollouts_one_active_per_route ON rollouts (route) WHERE active = 1",
    """CREATE TABLE rollout_events (
        rollout TEXT NOT NULL,
        seq INTEGER NOT NULL,
        revision INTEGER NOT NULL,
        at REAL NOT NULL,
        actor TEXT NOT NULL,
        transition TEXT NOT NULL,
        reason TEXT NOT NULL,
        details TEXT NOT NULL,
        PRIMARY KEY (rollout, seq)
    )""",
    "CREATE TRIGGER rollout_events_no_update BEFORE UPDATE ON rollout_events "
    "BEGIN SELECT RAISE(ABORT, 'rollout history is append-only'); END",
    "CREATE TRIGGER rollout_events_no_delete BEFORE DELETE ON rollout_events "
    "BEGIN SELECT RAISE(ABORT, 'rollout history is append-only'); END",
    *sqlite_log.TABLES,
)
"""Version 2, created in one transaction with its ``sluice_schema`` row."""

_MIGRATIONS: dict[int, tuple[str, ...]] = {1: sqlite_log.TABLES}
"""Statements taking the tables from version ``key`` to ``key + 1``."""


_COLUMNS = "name, route, policy, source, state, revision, created_at"


class SqliteRolloutStore:
    """:class:`~controller.store.rollouts.RolloutStore` on one SQLite file.

    Args:
        path: the SQLite file (created with its parent folders), or ``":memory:"``.

    Raises:
        StoreError: the file cannot be opened, is not a SQLite database, or holds a newer
            schema of this store than this version of Sluice knows.
    """

    def __init__(self, path: str | Path) -> None:
        self._path = str(path)
        self._lock = threading.Lock()  # one connection; one transaction at a time
        with _translated(self._path):
            if self._path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(
                self._path, isolation_level=None, timeout=BUSY_TIMEOUT_S, check_same_thread=False
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
        try:
            self._init_schema()
        except BaseException:
            self._db.close()
            raise

    def _init_schema(self) -> None:
        """Create the tables of :data:`SCHEMA_VERSION` unless they exist (one transaction, so
        processes opening a new file at once create them once)."""
        with self._write() as db:
            has_meta = db.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'sluice_schema'"
            ).fetchone()
            found = None
            if has_meta is not None:
                found = db.execute(
                    "SELECT version FROM sluice_schema WHERE component = 'rollouts'"
                ).fetchone()
            if found is None:
                for statement in _SCHEMA[0 if has_meta is None else 1 :]:
                    db.execute(statement)
                db.execute(
                    "INSERT INTO sluice_schema (component, version) VALUES ('rollouts', ?)",
                    (SCHEMA_VERSION,),
                )
            elif found[0] in _MIGRATIONS:  # an older file: migrated in this transaction
                for version in range(found[0], SCHEMA_VERSION):
                    for statement in _MIGRATIONS[version]:
                        db.execute(statement)
                db.execute(
                    "UPDATE sluice_schema SET version = ? WHERE component = 'rollouts'",
                    (SCHEMA_VERSION,),
                )
            elif found[0] != SCHEMA_VERSION:
                raise StoreError(
                    f"rollout store {self._path}: its rollout tables are at schema version "
                    f"{found[0]}, this Sluice knows version {SCHEMA_VERSION}; use a matching Sluice"
                )

    # -- reads ---------------------------------------------------------------------------

    def get(self, name: str, fresh: bool = False) -> StoredRollout:
        """See :meth:`controller.store.rollouts.RolloutStore.get` (every read is fresh: no
        cache)."""
        with self._lock, _translated(self._path):
            row = self._db.execute(
                f"SELECT {_COLUMNS} FROM rollouts WHERE name = ?", (name,)
            ).fetchone()
        if row is None:
            raise RolloutNotFoundError(name)
        return _decode_rollout(row)

    def list(self, active_only: bool = False) -> builtins.list[StoredRollout]:
        """See :meth:`controller.store.rollouts.RolloutStore.list`."""
        where = "WHERE active = 1 " if active_only else ""
        with self._lock, _translated(self._path):
            rows = self._db.execute(
                f"SELECT {_COLUMNS} FROM rollouts {where}ORDER BY name"
            ).fetchall()
        return [_decode_rollout(row) for row in rows]

    def history(self, name: str, limit: int | None = None) -> builtins.list[HistoryEvent]:
        """See :meth:`controller.store.rollouts.RolloutStore.history`."""
        if limit is not None and limit < 0:
            raise ValueError("limit must not be negative")
        with self._lock, _translated(self._path):
            self._db.execute("BEGIN")  # one snapshot for both reads
            try:
                exists = self._db.execute(
                    "SELECT 1 FROM rollouts WHERE name = ?", (name,)
                ).fetchone()
                rows = self._db.execute(
                    "SELECT seq, at, actor, transition, reason, details FROM rollout_events "
                    "WHERE rollout = ? ORDER BY seq DESC LIMIT ?",
                    (name, -1 if limit is None else limit),
                ).fetchall()
            finally:
                self._db.execute("COMMIT")
        if exists is None:
            raise RolloutNotFoundError(name)
        return [_decode_event(name, row) for row in reversed(rows)]

    def analyses(self, name: str, limit: int | None = None) -> builtins.list[AnalysisPoint]:
        """See :meth:`controller.store.rollouts.RolloutStore.analyses`."""
        return [e for e in self._read_log(name, "verdict", limit) if isinstance(e, AnalysisPoint)]

    def weight_steps(self, name: str, limit: int | None = None) -> builtins.list[WeightStep]:
        """See :meth:`controller.store.rollouts.RolloutStore.weight_steps`."""
        return [e for e in self._read_log(name, "weights", limit) if isinstance(e, WeightStep)]

    def _read_log(
        self, name: str, kind: Literal["verdict", "weights"], limit: int | None
    ) -> builtins.list[LogEntry]:
        if limit is not None and limit < 0:
            raise ValueError("limit must not be negative")
        with self._lock, _translated(self._path):
            self._db.execute("BEGIN")  # one snapshot for both reads
            try:
                exists = self._db.execute(
                    "SELECT 1 FROM rollouts WHERE name = ?", (name,)
                ).fetchone()
                entries = sqlite_log.read(self._db, name, kind, limit)
            finally:
                self._db.execute("COMMIT")
        if exists is None:
            raise RolloutNotFoundError(name)
        return entries

    # -- writes --------------------------------------------------------------------------

    def create(
        self,
        name: str,
        policy: RolloutPolicy,
        source: PolicySource,
        state: RolloutState,
        event: RecordEvent,
    ) -> StoredRollout:
        """See :meth:`controller.store.rollouts.RolloutStore.create`."""
        route = policy.spec.route
        active = state.phase in ACTIVE
        policy_json = json.dumps(policy.model_dump(mode="json", by_alias=True))
        source_json = json.dumps(
            {
                "path": source.path,
                "git_commit": source.git_commit,
                "git_dirty": source.git_dirty,
                "text": source.text,
            }
        )
        events = [_encode_event(event)]
        with self._write() as db:
            row = db.execute(
                "SELECT phase, active, revision FROM rollouts WHERE name = ?", (name,)
            ).fetchone()
            if row is not None and row[1]:
                raise RolloutExistsError(name, row[0])
            if active:
                _check_route_free(db, route, name)
            revision = 1 if row is None else row[2] + 1
            values = (
                route,
                str(state.phase),
                int(active),
                revision,
                policy_json,
                source_json,
                state.model_dump_json(),
                event.at,
                state.updated_at,
                name,
            )
            with _route_guard(db, route, name):
                if row is None:
                    db.execute(
                        "INSERT INTO rollouts (route, phase, active, revision, policy, source, "
                        "state, created_at, updated_at, name) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        values,
                    )
                else:
                    db.execute(
                        "UPDATE rollouts SET route = ?, phase = ?, active = ?, revision = ?, "
                        "policy = ?, source = ?, state = ?, created_at = ?, updated_at = ? "
                        "WHERE name = ?",
                        values,
                    )
            _append_events(db, name, revision, events)
            sqlite_log.append(db, name, log_entries(None, state, [event]))
        return StoredRollout(name, route, policy, source, state, revision, event.at)

    def update(
        self,
        name: str,
        expected_revision: int,
        state: RolloutState,
        events: Sequence[RecordEvent],
    ) -> StoredRollout:
        """See :meth:`controller.store.rollouts.RolloutStore.update`."""
        active = state.phase in ACTIVE
        state_json = state.model_dump_json()
        encoded = [_encode_event(e) for e in events]
        with self._write() as db:
            row = db.execute(f"SELECT {_COLUMNS} FROM rollouts WHERE name = ?", (name,)).fetchone()
            if row is None:
                raise RolloutNotFoundError(name)
            if row[5] != expected_revision:
                raise RevisionConflictError(name, expected_revision, row[5])
            stored = _decode_rollout(row)  # a damaged record fails here, before any write
            revision = expected_revision + 1
            with _route_guard(db, row[1], name):
                db.execute(
                    "UPDATE rollouts SET phase = ?, active = ?, revision = ?, state = ?, "
                    "updated_at = ? WHERE name = ? AND revision = ?",
                    (
                        str(state.phase),
                        int(active),
                        revision,
                        state_json,
                        state.updated_at,
                        name,
                        expected_revision,
                    ),
                )
            _append_events(db, name, revision, encoded)
            sqlite_log.append(db, name, log_entries(stored.state, state, events))
        return StoredRollout(
            name, stored.route, stored.policy, stored.source, state, revision, stored.created_at
        )

    def close(self) -> None:
        """Close the database (after a transaction in progress, if any)."""
        with self._lock:
            self._db.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, holding SQLite's write lock from its start; rolled back if
        the body raises."""
        with self._lock, _translated(self._path):
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise


def _conforms(store: SqliteRolloutStore) -> RolloutStore:
    return store  # mypy checks the class against the protocol here


@contextmanager
def _translated(path: str) -> Iterator[None]:
    """sqlite3 errors become :class:`StoreError` (callers do not import sqlite3)."""
    try:
        yield
    except sqlite3.OperationalError as exc:
        if "locked" in str(exc) or "busy" in str(exc):
            raise StoreError(
                f"rollout store {path} is busy: another process held its write lock for more "
                f"than {BUSY_TIMEOUT_S:g}s ({exc})"
            ) from exc
        raise StoreError(f"rollout store {path}: {exc}") from exc
    except sqlite3.Error as exc:
        raise StoreError(f"rollout store {path}: {exc}") from exc


def _check_route_free(db: sqlite3.Connection, route: str, name: str) -> None:
    holder = db.execute(
        "SELECT name, phase FROM rollouts WHERE route = ? AND active = 1 AND name <> ?",
        (route, name),
    ).fetchone()
    if holder is not None:
        raise RouteBusyError(route, holder[0], holder[1])


@contextmanager
def _route_guard(db: sqlite3.Connection, route: str, name: str) -> Iterator[None]:
    """The partial unique index refusing a second active rollout on a route, as
    :class:`RouteBusyError` (a retry making a terminal rollout active again lands here)."""
    try:
        yield
    except sqlite3.IntegrityError as exc:
        if "rollouts.route" not in str(exc):
            raise
        _check_route_free(db, route, name)
        raise  # pragma: no cover - the index and the query disagree


def _encode_event(event: RecordEvent) -> tuple[float, str, str, str, str]:
    return (event.at, event.actor, event.transition, event.reason, json.dumps(event.details))


def _append_events(
    db: sqlite3.Connection,
    name: str,
    revision: int,
    events: Sequence[tuple[float, str, str, str, str]],
) -> None:
    (last,) = db.execute(
        "SELECT COALESCE(MAX(seq), 0) FROM rollout_events WHERE rollout = ?", (name,)
    ).fetchone()
    db.executemany(
        "INSERT INTO rollout_events (rollout, seq, revision, at, actor, transition, reason, "
        "details) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [(name, last + i, revision, *event) for i, event in enumerate(events, start=1)],
    )


def _decode_rollout(row: tuple[Any, ...]) -> StoredRollout:
    name, route, policy_json, source_json, state_json, revision, created_at = row
    what = "policy"
    try:
        policy = RolloutPolicy.model_validate(json.loads(policy_json), by_alias=True)
        what = "source"
        raw = json.loads(source_json)
        source = PolicySource(
            path=_optional_str(raw["path"]),
            git_commit=_optional_str(raw["git_commit"]),
            git_dirty=bool(raw["git_dirty"]),
            text=str(raw["text"]),
        )
        what = "state"
        state = RolloutState.model_validate_json(state_json)
    except (ValueError, TypeError, KeyError) as exc:  # ValidationError, JSONDecodeError
        raise CorruptRecordError(
            f"rollout {name!r}: its stored {what} cannot be read ({record_problem(exc)}); "
            "the store is damaged or was written by an incompatible Sluice"
        ) from exc
    return StoredRollout(name, route, policy, source, state, revision, created_at)


def _decode_event(name: str, row: tuple[Any, ...]) -> HistoryEvent:
    seq, at, actor, transition, reason, details_json = row
    try:
        details = json.loads(details_json)
        if not isinstance(details, dict):
            raise TypeError(f"details is a JSON {type(details).__name__}, not an object")
    except (ValueError, TypeError) as exc:
        raise CorruptRecordError(
            f"rollout {name!r}: history event {seq} cannot be read ({record_problem(exc)})"
        ) from exc
    return HistoryEvent(seq, name, at, actor, transition, reason, details)


def _optional_str(value: object) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise TypeError(f"expected a string or null, got {type(value).__name__}")
