"""The comparator's Prometheus metrics, read from the route tallies at each scrape.

A custom collector (``prometheus_client.registry.Collector``) rather than counters incremented
per request: the tallies are the one record, so the scrape and the admin API can never disagree,
and a request costs no metric updates.

Exported (counters; the judge queries them with ``increase()``):

* ``sluice_parity_requests_total{route, outcome}``: mirrored requests by outcome: ``matched``,
  ``noisy``, ``mismatched`` (the three are *compared*), ``error`` (a target gave no reply),
  ``skipped`` (never forwarded: a method that is not safe and no sister), ``dropped`` (the
  comparator was saturated), and ``exercised`` (a write sent to the candidate's sister only,
  with no baseline sister to compare it with: the candidate answered, nothing was compared).
* ``sluice_parity_field_differences_total{route, path, kind}``: compared requests whose replies
  differed at ``path`` (a field path of ``controller.parity.diff``, or ``:unanswered``),
  ``kind`` ``mismatch`` or ``noise``. Bounded, because paths come from the replies' bodies
  (JSON keys: unbounded in number and length, and possibly data): per route only the
  :data:`TOP_PATHS` paths with the most differences (mismatch + noise) are exported, the rest
  summed under ``(other)``; a path longer than :data:`MAX_LABEL_CHARS` characters is exported
  as :func:`path_label`. The admin API keeps the whole table (as the tally caps it). As the top
  set can change between scrapes, ``(other)`` may decrease (Prometheus reads a counter reset);
  the judge does not use this metric.
* ``sluice_parity_unrouted_total``: mirrored requests refused (404) because their route header
  was missing or named no route under comparison.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass

from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from controller.parity.tally import OTHER_PATH, ParityCounts, PathCounts

OUTCOMES = ("matched", "noisy", "mismatched", "error", "skipped", "dropped", "exercised")
"""Values of the ``outcome`` label, in the order exported."""

TOP_PATHS = 20
"""Field paths exported per route (the most differences first); the rest sum to ``(other)``."""
MAX_LABEL_CHARS = 120
"""Longest ``path`` label value exported (characters)."""
_KEPT_CHARS = 100


def path_label(path: str) -> str:
    """``path`` as a label value: itself when at most :data:`MAX_LABEL_CHARS` characters, else
    its first 100 characters, ``…`` and 8 hex digits of its SHA-256 (UTF-8), 109 characters,
    distinct for distinct long paths with the same start (barring a hash collision)."""
    if len(path) <= MAX_LABEL_CHARS:
        return path
    digest = hashlib.sha256(path.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return f"{path[:_KEPT_CHARS]}…{digest}"


def exported_paths(paths: Mapping[str, PathCounts], top: int = TOP_PATHS) -> dict[str, PathCounts]:
    """The per-path counts to export for one route: the ``top`` paths with the most
    differences (mismatched + noisy; ties by path), labelled by :func:`path_label`, and every
    other path (the tally's own ``(other)`` too) summed under ``(other)`` when there is any."""
    ranked = sorted(
        ((p, c) for p, c in paths.items() if p != OTHER_PATH),
        key=lambda item: (-(item[1].mismatched + item[1].noisy), item[0]),
    )
    out = {path_label(p): c for p, c in ranked[:top]}
    rest = ranked[top:]
    if OTHER_PATH in paths:
        rest.append((OTHER_PATH, paths[OTHER_PATH]))
    if rest:
        out[OTHER_PATH] = PathCounts(
            sum(c.mismatched for _, c in rest), sum(c.noisy for _, c in rest)
        )
    return out


@dataclass(frozen=True)
class RouteFigures:
    """What one route's tally holds at a scrape.

    Attributes:
        route: the route's name.
        counts: cumulative counts since the comparator started comparing the route.
        paths: per field path, requests that differed there (capped by the tally).
        exercised: writes sent to the candidate's sister only (outcome ``exercised``).
    """

    route: str
    counts: ParityCounts
    paths: Mapping[str, PathCounts]
    exercised: int

    def by_outcome(self) -> dict[str, int]:
        """Counts keyed by the ``outcome`` label (see the module doc)."""
        c = self.counts
        return {
            "matched": c.matched,
            "noisy": c.noisy,
            "mismatched": c.mismatched,
            "error": c.errors,
            "skipped": c.skipped,
            "dropped": c.dropped,
            "exercised": self.exercised,
        }


class TallyCollector(Collector):
    """Collects the metrics of the module doc from ``figures()`` and ``unrouted()``."""

    def __init__(
        self, figures: Callable[[], Iterable[RouteFigures]], unrouted: Callable[[], int]
    ) -> None:
        self._figures = figures
        self._unrouted = unrouted

    def collect(self) -> Iterator[Metric]:
        """One sample per route and outcome, per route, path and kind, and the unrouted total."""
        requests = CounterMetricFamily(
            "sluice_parity_requests",
            "Mirrored requests by outcome (matched, noisy and mismatched are compared).",
            labels=("route", "outcome"),
        )
        fields = CounterMetricFamily(
            "sluice_parity_field_differences",
            "Compared requests whose replies differed at a field path (kind: mismatch, noise).",
            labels=("route", "path", "kind"),
        )
        for figures in self._figures():
            for outcome, value in figures.by_outcome().items():
                requests.add_metric((figures.route, outcome), value)
            for path, counts in sorted(exported_paths(figures.paths).items()):
                fields.add_metric((figures.route, path, "mismatch"), counts.mismatched)
                fields.add_metric((figures.route, path, "noise"), counts.noisy)
        unrouted = CounterMetricFamily(
            "sluice_parity_unrouted",
            "Mirrored requests refused: no route header, or a route not under comparison.",
        )
        unrouted.add_metric((), self._unrouted())
        yield requests
        yield fields
        yield unrouted
