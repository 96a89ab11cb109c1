"""The ``prometheus`` provider's parity SLI against a real Prometheus (``/usr/bin/prometheus``).

Prometheus scrapes, every second, a prometheus-client registry served by prometheus-client's
own HTTP server on 127.0.0.1 (port 0). The registry holds what the comparator exports,
``sluice_parity_requests_total{route, outcome}`` (a collector reading tallies, as
``controller.parity.metrics`` does), and the Envoy per-cluster counters the rest of a sample
needs. Every counter grows linearly in time, so ``increase()`` over a window is ``rate x
window`` and ratios of one scrape are exact.

Routes: ``items`` compares at known rates; ``broken`` reports a NaN (a corrupt tally); no
series exist for ``quiet`` (nothing mirrored, or the comparator not scraped). Then the three
no-data outcomes, each kept apart: an empty result and NaN are gaps of the parity SLO only
(the policy's ``noData`` decides), a failing Prometheus is a query error of the whole sample
(held, never a breach).

Without the binary these tests skip (fail under CI=true).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import prometheus_client
import prometheus_fixture
import pytest
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry
from prometheus_fixture import Prometheus, ScrapeTarget

from controller.analysis.judge import judge
from controller.analysis.providers.prometheus import PrometheusProvider
from controller.analysis.sli import PARITY_GAP, NoSample, Sample, SampleResult
from controller.policy.rollout_policy import RolloutPolicy

pytestmark = pytest.mark.timeout(90)

BASELINE, CANDIDATE = "items-v1", "items-v2"
WINDOW_S = 6.0
"""The window the parity SLI is judged over, seconds (the fixture scrapes a little longer)."""
CLUSTER_RATES = {BASELINE: 50.0, CANDIDATE: 0.0}  # a shadow stage: no user reaches the candidate
PARITY_RATES = {
    "items": {
        "matched": 200.0,
        "noisy": 10.0,
        "mismatched": 2.0,
        "error": 1.0,
        "skipped": 5.0,  # never compared: not part of the SLI
        "dropped": 3.0,
    },
    "broken": {"matched": math.nan, "noisy": 0.0, "mismatched": 0.0, "error": 0.0},
    # Configured in the comparator, but nothing mirrored: every outcome exported at 0.
    "idle": {"matched": 0.0, "noisy": 0.0, "mismatched": 0.0, "error": 0.0},
}


class Exporter(Collector):
    """Counters growing linearly since ``started`` (requests per second above)."""

    def __init__(self) -> None:
        self.started = time.time()

    def collect(self) -> Iterator[Metric]:
        elapsed = time.time() - self.started
        parity = CounterMetricFamily(
            "sluice_parity_requests",
            "Mirrored requests by outcome (matched, noisy and mismatched are compared).",
            labels=("route", "outcome"),
        )
        for route, rates in PARITY_RATES.items():
            for outcome, rate in rates.items():
                parity.add_metric((route, outcome), rate * elapsed)
        yield parity
        requests = CounterMetricFamily(
            "envoy_cluster_upstream_rq", "Requests.", labels=("envoy_cluster_name",)
        )
        latency = HistogramMetricFamily(
            "envoy_cluster_upstream_rq_time", "Upstream time (ms).", labels=("envoy_cluster_name",)
        )
        for cluster, rate in CLUSTER_RATES.items():
            total = rate * elapsed
            requests.add_metric((cluster,), total)
            latency.add_metric(
                (cluster,), [("10", total * 0.5), ("100", total * 0.99), ("+Inf", total)], 0.0
            )
        yield requests
        yield latency


@dataclass
class Scraped:
    prometheus: Prometheus
    address: str


@pytest.fixture(scope="module")
def scraped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scraped]:
    registry = CollectorRegistry()
    registry.register(Exporter())
    server, thread = prometheus_client.start_http_server(0, addr="127.0.0.1", registry=registry)
    try:
        address = f"127.0.0.1:{server.server_address[1]}"
        with prometheus_fixture.factory(tmp_path_factory.mktemp("prometheus")) as start:
            prometheus = start([ScrapeTarget("comparator", address, "/metrics")])
            first = prometheus.wait_scraped(0.0)
            prometheus.wait_scraped(first + WINDOW_S + 0.5, timeout=15.0)
            yield Scraped(prometheus, address)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def last_scrape_time(prometheus: Prometheus) -> float:
    data = prometheus.query("timestamp(sluice_parity_requests_total)")
    return min(float(s["value"][1]) for s in data["result"])


def sample(
    url: str, route: str, start: float, end: float, retry_budget_s: float = 2.0
) -> SampleResult:
    async def go() -> SampleResult:
        provider = PrometheusProvider(url, timeout_s=2, retry_budget_s=retry_budget_s)
        try:
            return await provider.sample(BASELINE, CANDIDATE, start, end, parity_route=route)
        finally:
            await provider.close()

    return asyncio.run(go())


def policy(no_data: str) -> RolloutPolicy:
    return RolloutPolicy.model_validate(
        {
            "apiVersion": "sluice.dev/v1alpha1",
            "kind": "RolloutPolicy",
            "metadata": {"name": "items"},
            "spec": {
                "route": "items",
                "baseline": {"cluster": BASELINE},
                "candidate": {"cluster": CANDIDATE},
                "stages": [{"weight": w, "bake": "1m"} for w in ("0%", "10%", "100%")],
                "analysis": {
                    "interval": "1s",
                    "noData": no_data,
                    "slos": [
                        {"metric": "error_rate", "maxDrift": "5%"},
                        {"metric": "parity", "minValue": "99.9%", "minCompared": 100},
                    ],
                },
                "parity": {"mirror": "10%"},
            },
        }
    )


def test_the_parity_sli_is_read_per_outcome(scraped: Scraped) -> None:
    """compared = matched + noisy + mismatched (212/s), errors apart; skipped and dropped
    requests are not counted. The judge fails 1% mismatches against 99.9% at a shadow stage
    (over :data:`WINDOW_S`: over 3 s, ~636 compared with 6 mismatches sat on the anytime-valid
    test's boundary, and the scrape's jitter decided the verdict)."""
    end = last_scrape_time(scraped.prometheus)
    result = sample(scraped.prometheus.url, "items", end - WINDOW_S, end)
    assert isinstance(result, Sample), result
    assert PARITY_GAP not in result.gaps, result.gaps
    parity = result.parity
    assert parity is not None
    rates = PARITY_RATES["items"]
    # The exporter computes its counts when scraped, Prometheus stamps them when the scrape
    # starts: on a busy machine the gap varies by tens of ms over a 2 s span of samples, so
    # the totals carry a few percent of jitter; the ratios between outcomes are exact.
    assert parity.compared == pytest.approx(212 * WINDOW_S, rel=0.1), parity
    assert parity.mismatched / parity.compared == pytest.approx(rates["mismatched"] / 212)
    assert parity.noisy / parity.compared == pytest.approx(rates["noisy"] / 212)
    assert parity.errors / parity.compared == pytest.approx(rates["error"] / 212)
    assert result.baseline.requests == pytest.approx(50 * WINDOW_S, rel=0.1)
    assert result.candidate.requests == 0.0
    verdict = judge(policy("hold"), 0, result, window_s=WINDOW_S)
    assert verdict.outcome == "fail", verdict.reason
    assert verdict.reason.startswith("parity failed: mismatch rate 0.943%"), verdict.reason


def test_a_route_without_series_is_an_empty_parity_gap(scraped: Scraped) -> None:
    """The rest of the sample is read; noData decides the parity SLO alone."""
    end = last_scrape_time(scraped.prometheus)
    result = sample(scraped.prometheus.url, "quiet", end - 3, end)
    assert isinstance(result, Sample), result
    assert result.parity is None
    gap = result.gaps[PARITY_GAP]
    assert gap.kind == "empty", gap
    assert "'quiet'" in gap.message
    assert "no sluice_parity_requests_total series" in gap.message
    assert result.baseline.requests == pytest.approx(50 * 3, rel=0.1)
    held = judge(policy("hold"), 0, result, window_s=3)
    assert held.outcome == "inconclusive", held.reason
    failed = judge(policy("fail"), 0, result, window_s=3)
    assert failed.outcome == "fail", failed.reason
    assert "parity: no data (noData: fail)" in failed.reason


def test_a_route_whose_counts_all_stay_at_zero_is_an_empty_parity_gap(scraped: Scraped) -> None:
    end = last_scrape_time(scraped.prometheus)
    result = sample(scraped.prometheus.url, "idle", end - 3, end)
    assert isinstance(result, Sample), result
    assert result.parity is None
    gap = result.gaps[PARITY_GAP]
    assert gap.kind == "empty", gap
    assert "no mirrored request was compared" in gap.message
    failed = judge(policy("fail"), 0, result, window_s=3)
    assert failed.outcome == "fail", failed.reason


def test_a_nan_counter_is_a_nan_parity_gap(scraped: Scraped) -> None:
    end = last_scrape_time(scraped.prometheus)
    result = sample(scraped.prometheus.url, "broken", end - 3, end)
    assert isinstance(result, Sample), result
    assert result.parity is None
    gap = result.gaps[PARITY_GAP]
    assert gap.kind == "nan", gap
    assert 'outcome="matched"' in gap.message, gap
    assert "NaN" in gap.message, gap
    failed = judge(policy("fail"), 0, result, window_s=3)
    assert failed.outcome == "fail", failed.reason
    assert "parity: NaN (noData: fail)" in failed.reason


def test_a_failing_prometheus_is_a_query_error_never_a_breach(
    tmp_path_factory: pytest.TempPathFactory, scraped: Scraped
) -> None:
    """Prometheus stopped: every query fails, the parity ones too; the judge holds even with
    ``noData: fail``."""
    start_prometheus: Callable[..., Prometheus]
    with prometheus_fixture.factory(tmp_path_factory.mktemp("stopped")) as start_prometheus:
        own = start_prometheus([ScrapeTarget("comparator", scraped.address, "/metrics")])
        own.stop()
        end = time.time()
        result = sample(own.url, "items", end - 3, end, retry_budget_s=0.5)
    assert isinstance(result, NoSample), result
    assert result.kind == "error", result
    assert "10 of 10 queries failed" in result.message, result.message
    verdict = judge(policy("fail"), 0, result, window_s=600)
    assert verdict.outcome == "inconclusive", verdict.reason
    assert "not a breach" in verdict.reason
