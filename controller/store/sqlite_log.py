"""The SQLite rollout store's analysis log table (``rollout_log``, schema version 2).

One row per :data:`~controller.store.analysis_log.LogEntry`, numbered per rollout (``seq``),
``kind`` ``verdict`` (an :class:`~controller.store.rollouts.AnalysisPoint`) or ``weights`` (a
:class:`~controller.store.rollouts.WeightStep`); append-only like the history. The functions
run inside the caller's transaction on the caller's connection.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from typing import Any, Literal, cast

from controller.rollout.state import VerdictOutcome
from controller.store.analysis_log import LogEntry, numbered
from controller.store.rollouts import AnalysisPoint, CorruptRecordError, WeightStep

TABLES = (
    """CREATE TABLE rollout_log (
        rollout TEXT NOT NULL,
        seq INTEGER NOT NULL,
        kind TEXT NOT NULL CHECK (kind IN ('verdict', 'weights')),
        at REAL NOT NULL,
        stage INTEGER NOT NULL,
        weight REAL NOT NULL,
        acked REAL,
        phase TEXT NOT NULL DEFAULT '',
        outcome TEXT NOT NULL DEFAULT '',
        reason TEXT NOT NULL DEFAULT '',
        details TEXT NOT NULL DEFAULT '{}',
        PRIMARY KEY (rollout, seq)
    )""",
    "CREATE TRIGGER rollout_log_no_update BEFORE UPDATE ON rollout_log "
    "BEGIN SELECT RAISE(ABORT, 'rollout analysis log is append-only'); END",
    "CREATE TRIGGER rollout_log_no_delete BEFORE DELETE ON rollout_log "
    "BEGIN SELECT RAISE(ABORT, 'rollout analysis log is append-only'); END",
)
"""Added by schema version 2 (a version 1 file gets them in its migration)."""


def append(db: sqlite3.Connection, name: str, entries: Sequence[LogEntry]) -> None:
    """Append ``entries`` to ``name``'s log, numbered on from its last entry."""
    if not entries:
        return
    (last,) = db.execute(
        "SELECT COALESCE(MAX(seq), 0) FROM rollout_log WHERE rollout = ?", (name,)
    ).fetchone()
    rows: list[tuple[object, ...]] = []
    for e in numbered(list(entries), last):
        row: tuple[object, ...]
        if isinstance(e, AnalysisPoint):
            row = (e.seq, "verdict", e.at, e.stage, e.weight, None, "", e.outcome, e.reason,
                   json.dumps(e.details))  # fmt: skip
        else:
            row = (e.seq, "weights", e.at, e.stage, e.desired, e.acked, e.phase, "", "", "{}")
        rows.append((name, *row))
    db.executemany(
        "INSERT INTO rollout_log (rollout, seq, kind, at, stage, weight, acked, phase, outcome, "
        "reason, details) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        rows,
    )


def read(
    db: sqlite3.Connection, name: str, kind: Literal["verdict", "weights"], limit: int | None
) -> list[LogEntry]:
    """``name``'s entries of ``kind``, oldest first (the last ``limit`` with one)."""
    rows = db.execute(
        "SELECT seq, at, stage, weight, acked, phase, outcome, reason, details FROM rollout_log "
        "WHERE rollout = ? AND kind = ? ORDER BY seq DESC LIMIT ?",
        (name, kind, -1 if limit is None else limit),
    ).fetchall()
    return [_decode(name, row) for row in reversed(rows)]


def _decode(name: str, row: tuple[Any, ...]) -> LogEntry:
    seq, at, stage, weight, acked, phase, outcome, reason, details_json = row
    if not outcome:
        return WeightStep(seq, at, stage, weight, acked, phase)
    try:
        details = json.loads(details_json)
        if not isinstance(details, dict):
            raise TypeError(f"details is a JSON {type(details).__name__}, not an object")
    except (ValueError, TypeError) as exc:
        raise CorruptRecordError(
            f"rollout {name!r}: analysis log entry {seq} cannot be read ({exc})"
        ) from exc
    return AnalysisPoint(seq, at, stage, weight, cast(VerdictOutcome, outcome), reason, details)
