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
  differed at ``path`` (a field path of ``controller.parity.diff``), ``kind`` ``mismatch`` or
  ``noise``.
* ``sluice_parity_unrouted_total``: mirrored requests refused (404) because their route header
  was missing or named no route under comparison.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass

from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from controller.parity.tally import ParityCounts, PathCounts

OUTCOMES = ("matched", "noisy", "mismatched", "error", "skipped", "dropped", "exercised")
"""Values of the ``outcome`` label, in the order exported."""


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
            for path, counts in sorted(figures.paths.items()):
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
