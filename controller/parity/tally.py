"""Per-route counts of the comparator: outcomes, per-field-path differences, mismatch samples,
and a history of the cumulative counts from which any recent window is read.

Outcomes of one mirrored request (exactly one):

- ``matched``, ``noisy``, ``mismatched``: primary and candidate both replied (any status) and
  differ nowhere, only at noise paths, or at some path that is not noise (together:
  *compared*);
- ``error``: a target could not be reached or timed out (not compared);
- ``skipped``: the comparator refused to forward it (unsafe method without a sister, unknown
  route);
- ``dropped``: the comparator was saturated.

Windows: the cumulative counts are kept once per :data:`RESOLUTION_S` second (the counts at
the end of each second in which something was recorded) for :data:`RETENTION_S` seconds, so
``window(start, end)`` = counts at ``end`` minus counts at ``start``, where "counts at ``t``"
includes every record of ``t``'s whole second: a window's edges are rounded up to the end of
their second. A window reaching back past the retention is clipped to it (it undercounts).
Pure: time is the ``at`` passed to :meth:`RouteTally.record`; it never reads the clock.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections import deque
from dataclasses import dataclass, fields
from typing import Literal

from controller.parity.samples import MismatchSample

Outcome = Literal["matched", "noisy", "mismatched", "error", "skipped", "dropped"]
OUTCOMES: tuple[Outcome, ...] = ("matched", "noisy", "mismatched", "error", "skipped", "dropped")

MAX_PATHS = 200
"""Distinct field paths counted per route; differences at further paths count under
:data:`OTHER_PATH` (a body with ids as keys must not grow memory without bound)."""
NO_PATHS: frozenset[str] = frozenset()
"""The path set of an outcome with no differing field (skipped, dropped, an error)."""
OTHER_PATH = "(other)"
RESOLUTION_S = 1.0
RETENTION_S = 2 * 3600.0

_FIELD: dict[str, str] = {
    "matched": "matched",
    "noisy": "noisy",
    "mismatched": "mismatched",
    "error": "errors",
    "skipped": "skipped",
    "dropped": "dropped",
}


@dataclass(frozen=True)
class ParityCounts:
    """Requests per outcome, cumulative or over a window (counts, not rates)."""

    matched: int = 0
    noisy: int = 0
    mismatched: int = 0
    errors: int = 0
    skipped: int = 0
    dropped: int = 0

    @property
    def compared(self) -> int:
        """Requests both primary and candidate answered: matched + noisy + mismatched."""
        return self.matched + self.noisy + self.mismatched

    def __sub__(self, other: ParityCounts) -> ParityCounts:
        return ParityCounts(
            *(getattr(self, f.name) - getattr(other, f.name) for f in fields(ParityCounts))
        )

    def to_json(self) -> dict[str, int]:
        """``{"compared", "matched", "noisy", "mismatched", "errors", "skipped", "dropped"}``."""
        return {"compared": self.compared} | {
            f.name: getattr(self, f.name) for f in fields(ParityCounts)
        }


@dataclass(frozen=True)
class PathCounts:
    """Compared requests with a difference at one field path: ``mismatched`` where it was not
    noise, ``noisy`` where it was."""

    mismatched: int = 0
    noisy: int = 0

    def to_json(self) -> dict[str, int]:
        """``{"mismatched", "noisy"}``."""
        return {"mismatched": self.mismatched, "noisy": self.noisy}


class RouteTally:
    """The comparator's counts for one route (module docstring).

    Args:
        samples: mismatch samples kept, the newest (the policy's ``samples``; 0 keeps none).
        max_paths: distinct field paths counted before :data:`OTHER_PATH` takes the rest.
        retention_s: seconds of history kept for windows.

    Raises:
        ValueError: a negative ``samples`` or ``max_paths``, or a non-positive retention.
    """

    def __init__(
        self, samples: int = 20, max_paths: int = MAX_PATHS, retention_s: float = RETENTION_S
    ) -> None:
        if samples < 0 or max_paths < 0 or retention_s <= 0:
            raise ValueError("samples and max_paths must be >= 0, retention_s > 0")
        self._counts = dict.fromkeys(_FIELD.values(), 0)
        self._paths: dict[str, list[int]] = {}  # path -> [mismatched, noisy]
        self._max_paths = max_paths
        self._samples: deque[MismatchSample] = deque(maxlen=samples)
        self._retention_s = retention_s
        # Closed seconds: _keys[i] is a second (floor(at / RESOLUTION_S)), _points[i] the
        # cumulative counts at its end. The open second is _open with the live _counts.
        self._keys: list[int] = []
        self._points: list[ParityCounts] = []
        self._open: int | None = None
        self._base = ParityCounts()  # counts at the end of the newest second evicted

    def record(
        self,
        outcome: Outcome,
        mismatched_paths: frozenset[str],
        noisy_paths: frozenset[str],
        at: float,
        sample: MismatchSample | None = None,
    ) -> None:
        """Count one request's outcome and per-path differences at time ``at`` (seconds on
        the caller's clock; a time earlier than the last one counts in the last second).

        Raises:
            KeyError: an unknown outcome.
        """
        key = math.floor(at / RESOLUTION_S)
        if self._open is None:
            self._open = key
        elif key > self._open:
            self._keys.append(self._open)
            self._points.append(self.counts())
            self._open = key
            self._evict(key - math.ceil(self._retention_s / RESOLUTION_S))
        self._counts[_FIELD[outcome]] += 1
        self._count_paths(mismatched_paths, 0)
        self._count_paths(noisy_paths, 1)
        if sample is not None and self._samples.maxlen:
            self._samples.append(sample)

    def _count_paths(self, paths: frozenset[str], kind: int) -> None:
        overflow = False
        for path in paths:
            counts = self._paths.get(path)
            if counts is None:
                if len(self._paths) - (OTHER_PATH in self._paths) >= self._max_paths:
                    overflow = True  # counted once per request, however many paths
                    continue
                counts = self._paths[path] = [0, 0]
            counts[kind] += 1
        if overflow:
            self._paths.setdefault(OTHER_PATH, [0, 0])[kind] += 1

    def _evict(self, oldest_key: int) -> None:
        cut = bisect_right(self._keys, oldest_key - 1)
        if cut:
            self._base = self._points[cut - 1]
            del self._keys[:cut]
            del self._points[:cut]

    def counts(self) -> ParityCounts:
        """Cumulative counts since the tally began."""
        return ParityCounts(**self._counts)

    def counts_at(self, t: float) -> ParityCounts:
        """Cumulative counts including every record of ``t``'s second (module docstring)."""
        key = math.floor(t / RESOLUTION_S)
        if self._open is not None and key >= self._open:
            return self.counts()
        i = bisect_right(self._keys, key)
        return self._points[i - 1] if i else self._base

    def window(self, start: float, end: float) -> ParityCounts:
        """Counts of the requests recorded in ``(start, end]``, edges rounded up to the end of
        their second, clipped to the retention (seconds on the caller's clock).

        Raises:
            ValueError: ``end`` is before ``start``.
        """
        if end < start:
            raise ValueError(f"window end {end} is before its start {start}")
        return self.counts_at(end) - self.counts_at(start)

    def paths(self) -> dict[str, PathCounts]:
        """Compared requests with a difference, per field path (at most ``max_paths`` paths
        plus :data:`OTHER_PATH`)."""
        return {p: PathCounts(m, n) for p, (m, n) in self._paths.items()}

    def samples(self) -> tuple[MismatchSample, ...]:
        """The newest mismatch samples, oldest first, at most ``samples``."""
        return tuple(self._samples)

    def to_json(self) -> dict[str, object]:
        """``{"counts": {...}, "paths": {path: {"mismatched", "noisy"}}, "samples": [...]}``
        (the admin API's per-route body, without the route's name)."""
        return {
            "counts": self.counts().to_json(),
            "paths": {p: c.to_json() for p, c in sorted(self.paths().items())},
            "samples": [s.to_json() for s in self._samples],
        }
