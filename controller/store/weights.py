"""Served route weights, kept in SQLite so a restarted controller serves the same weights.

One row per route: the weights (JSON, cluster → relative weight) and when they were set.
Writes are single transactions; SQLite's WAL journal keeps them atomic across crashes.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Mapping
from pathlib import Path

_SCHEMA = """
CREATE TABLE IF NOT EXISTS route_weights (
    route TEXT PRIMARY KEY,
    weights TEXT NOT NULL,
    updated_at REAL NOT NULL
)
"""


class SqliteWeightStore:
    """Durable route → weights map.

    Args:
        path: the SQLite file (created with its parent folders), or ``":memory:"``.

    Raises:
        sqlite3.Error: the file cannot be opened or is not a Sluice state database.
    """

    def __init__(self, path: str | Path) -> None:
        if str(path) != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        # Used from one worker thread at a time (the weight controller serializes changes);
        # a short busy timeout: a locked database must fail a change, not stall the controller.
        self._db = sqlite3.connect(
            str(path), isolation_level=None, timeout=1.0, check_same_thread=False
        )
        self._lock = threading.Lock()  # one statement at a time; close waits for a write
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute(_SCHEMA)

    def load(self) -> dict[str, dict[str, int]]:
        """Every persisted route's weights."""
        rows = self._db.execute("SELECT route, weights FROM route_weights ORDER BY route")
        return {route: {str(k): int(v) for k, v in json.loads(w).items()} for route, w in rows}

    def put(self, route: str, weights: Mapping[str, int] | None) -> None:
        """Persist one route's weights; None deletes them (the route serves the gateway's).

        This is the weight controller's persist hook.

        Raises:
            sqlite3.Error: the write failed (nothing was changed).
        """
        if weights is None:
            with self._lock:
                self._db.execute("DELETE FROM route_weights WHERE route = ?", (route,))
        else:
            self.save(route, weights)

    def save(self, route: str, weights: Mapping[str, int], now: float | None = None) -> None:
        """Persist one route's weights (replacing the previous ones) in one transaction.

        ``now``: wall-clock seconds since the epoch to record (default: the current time).
        """
        with self._lock:
            self._db.execute(
                "INSERT INTO route_weights (route, weights, updated_at) VALUES (?, ?, ?) "
                "ON CONFLICT(route) DO UPDATE SET weights = excluded.weights, "
                "updated_at = excluded.updated_at",
                (
                    route,
                    json.dumps(dict(weights), sort_keys=True),
                    time.time() if now is None else now,
                ),
            )

    def close(self) -> None:
        """Close the database (after a write in progress, if any)."""
        with self._lock:
            self._db.close()
