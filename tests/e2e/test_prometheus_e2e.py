"""End to end: the ``prometheus`` provider reads back what real clients sent through real Envoy.

A real Envoy fed by the controller splits real traffic 70/30 between the two real upstreams;
a real Prometheus scrapes the Envoy's admin ``/stats/prometheus`` every second; the provider's
sample over the traffic window must agree with what the clients received.

Run with ``pytest tests/e2e/test_prometheus_e2e.py --e2e -rP`` (``-rP`` shows the figures).
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Callable

import pytest
from prometheus_fixture import Prometheus, ScrapeTarget

from controller.analysis.providers.prometheus import PrometheusProvider
from controller.analysis.sli import Sample, SideCounts

from .harness import BASELINE, CANDIDATE, Stack

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]

REQUESTS = 1500


def envoy_prometheus_text(stack: Stack, cluster: str) -> str:
    """Envoy's own ``/stats/prometheus`` lines for ``cluster`` (for failure messages)."""
    text = stack.envoy.http.get("/stats/prometheus").text
    return "\n".join(line for line in text.splitlines() if f'"{cluster}"' in line)


def scrape_times(prometheus: Prometheus, since: float, until: float) -> list[float]:
    """The timestamps of the baseline counter's samples in ``(since, until)`` (every series of
    a scrape carries the scrape's timestamp)."""
    series = prometheus.query(
        f'{{__name__="envoy_cluster_upstream_rq_total", envoy_cluster_name="{BASELINE}"}}[2m]'
    )["result"]
    assert len(series) == 1, series
    return [float(t) for t, _ in series[0]["values"] if since < float(t) < until]


def edges_on_scrapes(starts: list[float], ends: list[float]) -> tuple[float, float]:
    """A window ``(start, end)`` with a scrape on each edge that lasts whole seconds, so that
    ``increase()`` over it (a range of whole seconds ending at ``end``) is the counters' exact
    delta: the start's sample inside the range, nothing extrapolated past the end. That needs
    Prometheus 2's closed range (``[end - W, end]``; Prometheus 3 leaves out a sample on the
    start, and would then count from the next one). CI installs 2.42 (Debian 12).

    Why pick: Prometheus aligns scrape timestamps to the interval only within 2 ms; a scrape
    that a busy host delayed more keeps its own timestamp. The provider rounds the window to
    whole seconds, so an end 3 ms late moved the range's start 3 ms past the first sample,
    and ``increase()`` extrapolated the rest from the second one: 828 of 1,029 requests read
    (a CI run, scrapes at ...20.679, ..., ...24.679, ...25.682). Every candidate edge here is
    flat (no traffic between it and the load), so any aligned pair gives the same delta.
    """
    pairs = [(e - s - round(e - s), s, e) for s in starts for e in ends]
    # Timestamps are whole ms: off <= 0 keeps the start's sample in the range; at most 2 ms
    # before it, increase() extrapolates by 2 ms over seconds (< 0.05%).
    aligned = [(s, e) for off, s, e in pairs if -0.0025 <= off < 0.0005]
    assert aligned, f"no pair of scrapes a whole number of seconds apart: {starts} / {ends}"
    return max(aligned, key=lambda pair: pair[1] - pair[0])


@pytest.mark.parametrize("protocol", ["sotw"])
def test_sample_matches_what_clients_saw(
    stack: Stack,
    prometheus_factory: Callable[..., Prometheus],
    record_property: Callable[[str, object], None],
) -> None:
    """1,500 requests at 70/30: per side, the sampled requests equal the clients' count within
    2%, errors are 0, and each latency histogram's +Inf bucket equals its requests.

    Why 2%: ``increase()`` extrapolates the counter's growth from the first and last samples in
    the window to the window's edges. The window here ends on a scrape's timestamp and lasts a
    whole number of seconds, so with 1 s scrapes whose timestamps Prometheus aligns (within
    its 2 ms tolerance) a sample sits on each edge and nothing is extrapolated: the result is
    the exact counter delta. A scrape a busy host delayed past that tolerance keeps its own
    timestamp, so the edges are picked among flat scrapes (no traffic between them and the
    load) to be a whole number of seconds apart (:func:`edges_on_scrapes`). Envoy's counters
    are live and the route has no retries, so Envoy's count is the clients' count.
    """
    address = stack.envoy.admin_url.removeprefix("http://")
    prometheus = prometheus_factory([ScrapeTarget("envoy", address)])
    stack.set_weights(70, 30)
    stack.envoy.wait_route_weights({BASELINE: 70, CANDIDATE: 30}, timeout=5.0)
    # One request per side first, so that every series (the latency buckets too) exists
    # before the window opens: increase() only partly counts a series born inside it.
    warmup = stack.load(concurrency=2).run(40)
    assert warmup.count(BASELINE), warmup.describe()
    assert warmup.count(CANDIDATE), warmup.describe()
    time.sleep(1.2)  # Envoy flushes histograms every stats_flush_interval (1 s here)
    flushed = time.time()
    # Three flat scrapes, the candidate starts: wait_scraped sees a scrape once it is done.
    last_flat = prometheus.wait_scraped(flushed, scrapes=3)

    summary = stack.load(concurrency=8).run(REQUESTS, duration=60.0)
    assert summary.total == REQUESTS, summary.describe()
    assert summary.ok == REQUESTS, f"{summary.describe()}\n{stack.diagnostics()}"

    time.sleep(1.2)  # the last histogram flush
    settled = time.time()
    prometheus.wait_scraped(settled, scrapes=3)  # three flat scrapes: candidate ends
    before, end = edges_on_scrapes(
        # A later scrape may still run when the load starts; 3 ms: the alignment tolerance.
        scrape_times(prometheus, flushed, last_flat + 0.003),
        scrape_times(prometheus, settled, math.inf),
    )
    provider = PrometheusProvider(prometheus.url, timeout_s=2, retry_budget_s=3)

    async def sample() -> object:
        try:
            return await provider.sample(BASELINE, CANDIDATE, before, end)
        finally:
            await provider.close()

    result = asyncio.run(sample())

    assert isinstance(result, Sample), (
        f"{result}\n{envoy_prometheus_text(stack, CANDIDATE)}\n{prometheus.logs(20)}"
    )
    clients = {BASELINE: summary.count(BASELINE), CANDIDATE: summary.count(CANDIDATE)}
    sides: dict[str, SideCounts] = {BASELINE: result.baseline, CANDIDATE: result.candidate}
    figures = {
        "window_s": result.end - result.start,
        "clients": clients,
        "requests": {c: s.requests for c, s in sides.items()},
        "errors": {c: s.errors for c, s in sides.items()},
        "histogram_total": {c: s.latency.total for c, s in sides.items()},
        "p99_bucket_ms": {c: s.latency.quantile(0.99) for c, s in sides.items()},
        "relative_error": {c: (sides[c].requests - n) / n for c, n in clients.items() if n},
    }
    print(f"prometheus sample vs clients: {json.dumps(figures)}")
    record_property("figures", figures)
    for cluster, seen in clients.items():
        side = sides[cluster]
        context = f"{cluster}: {figures}\n{envoy_prometheus_text(stack, cluster)}"
        assert side.requests == pytest.approx(seen, rel=0.02), context
        assert side.errors == 0.0, context
        assert side.latency.total == pytest.approx(side.requests, rel=0.02), context
        assert list(side.latency.counts) == sorted(side.latency.counts), context
    # The clients saw a 70/30 split; so did the sample (same counts, so the same share).
    assert clients[CANDIDATE] > 0.2 * REQUESTS, clients
