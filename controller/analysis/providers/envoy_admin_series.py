"""The ``envoy_admin`` provider's memory: one Envoy's retained scrapes, kept compact, and a
cluster's increase over a window of them.

Pure (no I/O, no clock). Successful scrapes of one Envoy are numbered (``seq``) and their
times kept in order; each cluster has a :class:`ClusterTrack`: its values in the scrapes that
had it, in columns (``array('d')``; a histogram is one ``array('d')`` shared by the scrapes
that saw it unchanged), and the scrapes whose step from the previous one is not a plain
difference, its *breaks* (the cluster appeared or came back, a value went down, the histogram
appeared or its bounds changed). Between two breaks every value only grows, so the increase
over that run is its last value minus its first: a window's increase costs a few bisects and
one subtraction per run, however many scrapes it spans (summing the steps of a one-hour window
of 1 s scrapes took ~0.3 s per cluster and Envoy, on the event loop). The result equals
:func:`~controller.analysis.providers.envoy_stats.increase` over the window's scrapes.
"""

from __future__ import annotations

import bisect
from array import array
from dataclasses import dataclass

from controller.analysis.providers import envoy_stats
from controller.analysis.providers.envoy_stats import ClusterStats, EnvoyStats

_NO_BUCKETS: array[float] = array("d")


@dataclass(frozen=True)
class EnvoyScrapeStatus:
    """How scraping one Envoy goes (for status output and failure messages).

    Attributes:
        url: the admin endpoint.
        scrapes: successful scrapes retained.
        last_success: epoch seconds of the last successful scrape (None: never).
        last_error: the last failed scrape's error (None: never failed).
        last_error_at: when it failed.
        consecutive_failures: failed scrapes since the last success.
    """

    url: str
    scrapes: int
    last_success: float | None
    last_error: str | None
    last_error_at: float | None
    consecutive_failures: int


class ClusterTrack:
    """One cluster's values in the scrapes of one Envoy that had it (``seqs`` ascending)."""

    __slots__ = (
        "bounds",
        "breaks",
        "bucket_nans",
        "buckets",
        "counter_nans",
        "errors",
        "last",
        "requests",
        "seqs",
    )

    def __init__(self) -> None:
        self.seqs: list[int] = []
        self.requests: array[float] = array("d")
        self.errors: array[float] = array("d")
        self.bounds: list[tuple[float, ...]] = []  # shared tuples
        self.buckets: list[array[float]] = []  # shared while unchanged
        self.breaks: list[int] = []  # seqs whose step is not last minus previous
        self.counter_nans: list[int] = []  # seqs with a NaN counter
        self.bucket_nans: list[int] = []  # seqs with a NaN bucket
        self.last: ClusterStats | None = None  # the newest values, as parsed

    def append(self, seq: int, values: ClusterStats) -> None:
        """Add the values of scrape ``seq`` (greater than every seq added before)."""
        last = self.last
        if last is not None and self.seqs[-1] == seq - 1:
            if last.bounds != values.bounds or envoy_stats.is_reset(last, values):
                self.breaks.append(seq)
        else:
            self.breaks.append(seq)  # first seen, or back after scrapes without it
        if values.counter_nan() is not None:
            self.counter_nans.append(seq)
        if last is not None and last.bounds == values.bounds and last.buckets == values.buckets:
            bounds, buckets = self.bounds[-1], self.buckets[-1]
            values = ClusterStats(values.requests, values.errors, last.bounds, last.buckets)
        else:
            if last is not None and last.bounds == values.bounds:
                values = ClusterStats(values.requests, values.errors, last.bounds, values.buckets)
            bounds = values.bounds
            buckets = array("d", values.buckets) if values.buckets else _NO_BUCKETS
            if envoy_stats.has_nan(buckets):
                self.bucket_nans.append(seq)
        self.seqs.append(seq)
        self.requests.append(values.requests)
        self.errors.append(values.errors)
        self.bounds.append(bounds)
        self.buckets.append(buckets)
        self.last = values

    def drop_before(self, seq: int) -> None:
        """Forget the scrapes numbered below ``seq``."""
        drop = bisect.bisect_left(self.seqs, seq)
        if drop:
            for column in (self.seqs, self.requests, self.errors, self.bounds, self.buckets):
                del column[:drop]
            if not self.seqs:
                self.last = None
        for marks in (self.breaks, self.counter_nans, self.bucket_nans):
            del marks[: bisect.bisect_left(marks, seq)]

    def values(self, index: int) -> ClusterStats:
        """The values of the ``index``-th scrape kept (not a seq)."""
        return ClusterStats(
            self.requests[index],
            self.errors[index],
            self.bounds[index],
            tuple(self.buckets[index]),
        )

    def present(self, first: int, last: int) -> bool:
        """Whether any scrape numbered ``first`` to ``last`` has the cluster."""
        index = bisect.bisect_left(self.seqs, first)
        return index < len(self.seqs) and self.seqs[index] <= last

    def increase(self, first: int, last: int) -> ClusterStats:
        """The growth of the values from scrape ``first`` to scrape ``last`` (``increase()`` of
        the scrapes in between: a scrape without the cluster reads as all zero)."""
        lo = bisect.bisect_left(self.seqs, first)
        hi = bisect.bisect_right(self.seqs, last)
        if lo >= hi:
            return envoy_stats.ZERO
        total = envoy_stats.ZERO
        run = lo  # the first scrape of the current run of plain steps
        starts = self.breaks[
            bisect.bisect_right(self.breaks, first) : bisect.bisect_right(self.breaks, last)
        ]
        for seq in starts:
            index = bisect.bisect_left(self.seqs, seq, lo, hi)
            if index - 1 > run:  # a run of one scrape has no growth (and no say on bounds)
                total = envoy_stats.add(total, self._growth(run, index - 1))
            if index > lo and self.seqs[index - 1] == seq - 1:
                step = envoy_stats.step(self.values(index - 1), self.values(index))
            else:  # the cluster (re)appeared: its values are new
                step = self.values(index)
            total = envoy_stats.add(total, step)
            run = index
        if hi - 1 > run:
            total = envoy_stats.add(total, self._growth(run, hi - 1))
        return total

    def _growth(self, a: int, b: int) -> ClusterStats:
        """Values at ``b`` minus values at ``a`` (indexes of one run: no break in ``(a, b]``)."""
        bounds, before, after = self.bounds[b], self.buckets[a], self.buckets[b]
        if before is after:
            counts: tuple[float, ...] = (0.0,) * len(after)
        else:
            counts = tuple(y - x for x, y in zip(before, after, strict=True))
        return ClusterStats(
            self.requests[b] - self.requests[a], self.errors[b] - self.errors[a], bounds, counts
        )

    def first_nan(self, first: int, last: int) -> tuple[int, str] | None:
        """The first scrape numbered ``first`` to ``last`` with a NaN, and the stat: a counter's
        NaN before a bucket's (it spoils the whole sample, a bucket's only the latency)."""
        for marks in (self.counter_nans, self.bucket_nans):
            index = bisect.bisect_left(marks, first)
            if index < len(marks) and marks[index] <= last:
                seq = marks[index]
                stat = self.values(bisect.bisect_left(self.seqs, seq)).nan_stat()
                assert stat is not None
                return seq, stat
        return None


class EnvoySeries:
    """One Envoy's successful scrapes (ascending times, ``first_seq`` the oldest kept) and its
    failures."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.times: list[float] = []
        self.first_seq = 0
        self.tracks: dict[str, ClusterTrack] = {}
        self.last_error: str | None = None
        self.last_error_at: float | None = None
        self.failures = 0

    def record(self, at: float, stats: EnvoyStats, retention_s: float) -> None:
        """Keep a successful scrape, and forget those older than ``retention_s`` but the last
        one at or before the cutoff (a window starting there has its edge)."""
        if self.times:
            at = max(at, self.times[-1])  # the wall clock stepped back: keep times ascending
        seq = self.first_seq + len(self.times)
        self.times.append(at)
        for cluster, values in stats.items():
            track = self.tracks.get(cluster)
            if track is None:
                track = self.tracks[cluster] = ClusterTrack()
            track.append(seq, values)
        self.failures = 0
        drop = envoy_stats.last_at_or_before(self.times, at - retention_s)
        if drop:
            del self.times[:drop]
            self.first_seq += drop
            for cluster, track in list(self.tracks.items()):
                track.drop_before(self.first_seq)
                if not track.seqs:
                    del self.tracks[cluster]

    def fail(self, at: float, error: str) -> None:
        self.last_error, self.last_error_at = error, at
        self.failures += 1

    def window(self, start: float, end: float) -> tuple[int, int] | None:
        """The seqs of the scrapes bounding ``[start, end]`` (see
        :func:`~controller.analysis.providers.envoy_stats.window`)."""
        span = envoy_stats.window(self.times, start, end)
        if span is None:
            return None
        return self.first_seq + span[0], self.first_seq + span[1]

    def time_of(self, seq: int) -> float:
        return self.times[seq - self.first_seq]

    def status(self) -> EnvoyScrapeStatus:
        return EnvoyScrapeStatus(
            self.url,
            len(self.times),
            self.times[-1] if self.times else None,
            self.last_error,
            self.last_error_at,
            self.failures,
        )

    def problem(self, now: float) -> str:
        """Why this Envoy has no data for a window, for people."""
        if not self.times:
            seen = "never scraped successfully" if self.failures else "not scraped yet"
        else:
            seen = f"last good scrape {now - self.times[-1]:.1f}s ago"
        if self.last_error is not None and self.last_error_at is not None:
            seen += (
                f"; {self.failures} failed scrape(s) in a row, the last"
                f" {now - self.last_error_at:.1f}s ago: {self.last_error}"
            )
        return f"{self.url}: {seen}"
