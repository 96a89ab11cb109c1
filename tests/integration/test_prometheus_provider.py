"""The ``prometheus`` provider against a real Prometheus (``/usr/bin/prometheus``).

Prometheus scrapes, every second, an in-process exporter that serves Envoy's
``/stats/prometheus`` metric names for two clusters with counters growing linearly in time:
``increase()`` over a window is then ``rate x window`` (its extrapolation to the window's edges
is exact for a linear counter), so the counts can be checked to a few per cent, and ratios
(5xx share, histogram shape), which come from the same scrape, exactly.

A third fake cluster is down: no request reached it (``upstream_rq_total`` stays 0, no
``upstream_rq_time`` series at all) while Envoy answers its requests with local 503s (counted
in ``upstream_rq_xx``). Error shapes, retries, the provider's own thread pool and its overall
deadline are checked against scripted HTTP servers (no Prometheus needed).

The real-Envoy version (real traffic, the counts the clients saw) is
``tests/e2e/test_prometheus_e2e.py``. Without the binary these tests skip (fail under CI=true).
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

import prometheus_fixture
import pytest
from prometheus_fixture import Prometheus, ScrapeTarget

from controller.analysis.providers.base import CustomQuery
from controller.analysis.providers.prometheus import PrometheusProvider
from controller.analysis.sli import (
    EMPTY_HISTOGRAM,
    LATENCY_GAP,
    NoSample,
    Sample,
    custom_gap,
)

pytestmark = pytest.mark.timeout(60)

BOUNDS = ("0.5", "1", "5", "10", "25", "50", "100", "250", "500", "1000", "+Inf")


@dataclass
class Side:
    """One fake cluster: ``rate`` requests/s, a share of them 5xx, and the cumulative share of
    requests at or below each bound of :data:`BOUNDS`; ``local_503_rate``: Envoy's own 503s
    per second (counted in ``upstream_rq_xx`` only); ``histogram``: whether its
    ``upstream_rq_time`` series exist."""

    rate: float
    error_share: float
    cumulative: tuple[float, ...]
    local_503_rate: float = 0.0
    histogram: bool = True


@dataclass
class FakeEnvoyStats:
    """An HTTP server answering ``/stats/prometheus`` like an Envoy admin endpoint."""

    sides: dict[str, Side]
    started: float = field(default_factory=time.time)
    server: ThreadingHTTPServer | None = None

    def text(self) -> str:
        elapsed = time.time() - self.started
        lines = ["# TYPE envoy_cluster_upstream_rq_total counter"]
        for name, side in self.sides.items():
            lines.append(
                f'envoy_cluster_upstream_rq_total{{envoy_cluster_name="{name}"}}'
                f" {side.rate * elapsed!r}"
            )
        lines.append("# TYPE envoy_cluster_upstream_rq_xx counter")
        for name, side in self.sides.items():
            total = side.rate * elapsed
            label = f'envoy_cluster_name="{name}"'
            lines.append(
                f'envoy_cluster_upstream_rq_xx{{envoy_response_code_class="2",{label}}}'
                f" {total * (1 - side.error_share)!r}"
            )
            errors = total * side.error_share + side.local_503_rate * elapsed
            if errors > 0:  # Envoy creates the 5xx counter on the first 5xx
                lines.append(
                    f'envoy_cluster_upstream_rq_xx{{envoy_response_code_class="5",{label}}}'
                    f" {errors!r}"
                )
        lines.append("# TYPE envoy_cluster_upstream_rq_time histogram")
        for name, side in self.sides.items():
            if not side.histogram:
                continue
            total = side.rate * elapsed
            label = f'envoy_cluster_name="{name}"'
            for bound, share in zip(BOUNDS, side.cumulative, strict=True):
                lines.append(
                    f'envoy_cluster_upstream_rq_time_bucket{{{label},le="{bound}"}}'
                    f" {total * share!r}"
                )
            lines.append(f"envoy_cluster_upstream_rq_time_sum{{{label}}} {total * 20!r}")
            lines.append(f"envoy_cluster_upstream_rq_time_count{{{label}}} {total!r}")
        return "\n".join(lines) + "\n"

    def serve(self) -> str:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = fake.text().encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self.address

    @property
    def address(self) -> str:
        assert self.server is not None
        return f"127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


BASELINE = Side(50.0, 0.02, (0, 0, 0.1, 0.3, 0.6, 0.9, 0.99, 1, 1, 1, 1))
CANDIDATE = Side(20.0, 0.0, (0, 0, 0.05, 0.2, 0.5, 0.8, 0.95, 0.999, 1, 1, 1))
DOWN = Side(0.0, 0.0, (), local_503_rate=20.0, histogram=False)
# Names a PromQL string literal must escape.
BASELINE_NAME = 'comments-python"v1'
CANDIDATE_NAME = "comments-go"
DOWN_NAME = "comments-down"


@dataclass
class Scraped:
    prometheus: Prometheus
    fake: FakeEnvoyStats


@pytest.fixture(scope="module")
def scraped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scraped]:
    """One Prometheus for the module, scraping the fake Envoy every second; ready once 4 s of
    data exist. (The test that stops Prometheus starts its own.)"""
    escaped = BASELINE_NAME.replace('"', '\\"')
    fake = FakeEnvoyStats({escaped: BASELINE, CANDIDATE_NAME: CANDIDATE, DOWN_NAME: DOWN})
    try:
        address = fake.serve()
        with prometheus_fixture.factory(tmp_path_factory.mktemp("prometheus")) as start:
            prometheus = start([ScrapeTarget("envoy", address)])
            # The first scrape comes ~5 s after the start (Prometheus' discovery manager sends
            # target updates every 5 s); then 4 s of data for the tests' 3 s windows.
            first = prometheus.wait_scraped(0.0)
            prometheus.wait_scraped(first + 3.5, timeout=15.0)
            yield Scraped(prometheus, fake)
    finally:
        fake.close()


def run(coro: object) -> object:
    return asyncio.run(coro)  # type: ignore[arg-type]


async def sample(provider: PrometheusProvider, *args: object, **kwargs: object) -> object:
    try:
        return await provider.sample(*args, **kwargs)  # type: ignore[arg-type]
    finally:
        await provider.close()


def last_scrape_time(prometheus: Prometheus) -> float:
    data = prometheus.query("timestamp(envoy_cluster_upstream_rq_total)")
    return min(float(s["value"][1]) for s in data["result"])


# --- counts ----------------------------------------------------------------------------------


def test_counts_match_the_scraped_counters(scraped: Scraped) -> None:
    """Requests = rate x window within 3% (the exporter computes its counters a few ms after
    the scrape timestamp Prometheus records); 5xx share and histogram shape exact (ratios of
    one scrape); a side without any 5xx series reads 0 errors, not "no data"."""
    end = last_scrape_time(scraped.prometheus)
    provider = PrometheusProvider(scraped.prometheus.url, timeout_s=2, retry_budget_s=2)
    custom = (
        CustomQuery(
            "rps",
            'sum(rate(envoy_cluster_upstream_rq_total{envoy_cluster_name="{cluster}"}[{window}]))',
        ),
    )
    result = run(sample(provider, BASELINE_NAME, CANDIDATE_NAME, end - 3.2, end, custom))

    assert isinstance(result, Sample), result
    figures = {
        "window": [result.start, result.end],
        "baseline": [result.baseline.requests, result.baseline.errors],
        "candidate": [result.candidate.requests, result.candidate.errors],
        "custom": result.custom,
    }
    print(json.dumps(figures))
    assert result.end == end
    assert result.start == end - 3  # 3.2 s rounds to [3s]
    for side, expected in ((result.baseline, BASELINE), (result.candidate, CANDIDATE)):
        assert side.requests == pytest.approx(expected.rate * 3, rel=0.03), figures
        assert side.errors == pytest.approx(side.requests * expected.error_share, abs=1e-6)
        assert side.latency.bounds == tuple(float(b) for b in BOUNDS)
        assert side.latency.total == pytest.approx(side.requests, rel=1e-6)
        shares = tuple(c / side.latency.total for c in side.latency.counts)
        assert shares == pytest.approx(expected.cumulative, abs=1e-6)
    assert result.candidate.errors == 0.0
    rps = result.custom["rps"]
    assert rps == pytest.approx((BASELINE.rate, CANDIDATE.rate), rel=0.03)


# --- empty, nan, error -----------------------------------------------------------------------


def test_unknown_cluster_is_empty(scraped: Scraped) -> None:
    end = last_scrape_time(scraped.prometheus)
    provider = PrometheusProvider(scraped.prometheus.url, timeout_s=2, retry_budget_s=2)
    result = run(sample(provider, BASELINE_NAME, "no-such-cluster", end - 3, end))
    assert isinstance(result, NoSample), result
    assert result.kind == "empty", result
    assert "no-such-cluster" in result.message
    assert "envoy_cluster_upstream_rq_total" in result.message


def test_too_short_a_window_is_empty(scraped: Scraped) -> None:
    """Under two samples in the window, increase() has nothing to say: empty, not zero."""
    end = last_scrape_time(scraped.prometheus) + 0.5
    provider = PrometheusProvider(scraped.prometheus.url, timeout_s=2, retry_budget_s=2)
    result = run(sample(provider, BASELINE_NAME, CANDIDATE_NAME, end - 1, end))
    assert isinstance(result, NoSample), result
    assert result.kind == "empty", result


def test_a_candidate_down_from_the_start_is_a_sample_with_a_latency_gap(scraped: Scraped) -> None:
    """No ``upstream_rq_time`` series for the candidate: its latency is a gap (empty histogram),
    while its local 503s and the baseline's figures are read as usual."""
    end = last_scrape_time(scraped.prometheus)
    provider = PrometheusProvider(scraped.prometheus.url, timeout_s=2, retry_budget_s=2)
    result = run(sample(provider, BASELINE_NAME, DOWN_NAME, end - 3, end))

    assert isinstance(result, Sample), result
    print(f"candidate down: {result}")
    assert set(result.gaps) == {LATENCY_GAP}, result.gaps
    gap = result.gaps[LATENCY_GAP]
    assert gap.kind == "empty", gap
    assert gap.message.startswith(f"{DOWN_NAME}: "), gap
    assert "envoy_cluster_upstream_rq_time_bucket" in gap.message, gap
    assert "no series" in gap.message, gap
    assert BASELINE_NAME not in gap.message, gap
    down = result.candidate
    assert down.latency == EMPTY_HISTOGRAM
    assert down.requests == 0.0
    assert down.errors == pytest.approx(DOWN.local_503_rate * 3, rel=0.03)
    assert down.error_rate == 1.0
    assert result.baseline.requests == pytest.approx(BASELINE.rate * 3, rel=0.03)
    assert result.baseline.latency.bounds == tuple(float(b) for b in BOUNDS)
    assert result.baseline.latency.total == pytest.approx(result.baseline.requests, rel=1e-6)


def test_nan_custom_query_is_a_gap_of_that_slo_only(scraped: Scraped) -> None:
    end = last_scrape_time(scraped.prometheus)
    provider = PrometheusProvider(scraped.prometheus.url, timeout_s=2, retry_budget_s=2)
    nan = CustomQuery("ratio", 'label_replace(vector(0) / vector(0), "c", "{cluster}", "", "")')
    rps = CustomQuery(
        "rps",
        'sum(rate(envoy_cluster_upstream_rq_total{envoy_cluster_name="{cluster}"}[{window}]))',
    )
    result = run(sample(provider, BASELINE_NAME, CANDIDATE_NAME, end - 3, end, (nan, rps)))
    assert isinstance(result, Sample), result
    assert set(result.gaps) == {custom_gap("ratio")}, result.gaps
    gap = result.gaps[custom_gap("ratio")]
    assert gap.kind == "nan", gap
    assert "vector(0) / vector(0)" in gap.message
    # Both sides returned NaN: one entry naming both.
    assert BASELINE_NAME in gap.message, gap
    assert CANDIDATE_NAME in gap.message, gap
    assert set(result.custom) == {"rps"}
    assert result.custom["rps"] == pytest.approx((BASELINE.rate, CANDIDATE.rate), rel=0.03)
    assert result.candidate.requests == pytest.approx(CANDIDATE.rate * 3, rel=0.03)
    assert result.candidate.latency.total > 0


def test_empty_custom_query_is_a_gap_of_that_slo_only(scraped: Scraped) -> None:
    """A custom query with no series on one side only (the down cluster has no latency
    histogram): the gap names that side; the other custom SLO is read."""
    end = last_scrape_time(scraped.prometheus)
    provider = PrometheusProvider(scraped.prometheus.url, timeout_s=2, retry_budget_s=2)
    slow = CustomQuery(
        "slow",
        "sum(increase(envoy_cluster_upstream_rq_time_bucket"
        '{envoy_cluster_name="{cluster}",le="+Inf"}[{window}]))',
    )
    errors = CustomQuery(
        "errors",
        'sum(increase(envoy_cluster_upstream_rq_xx{envoy_cluster_name="{cluster}",'
        'envoy_response_code_class="5"}[{window}]))',
    )
    result = run(sample(provider, BASELINE_NAME, DOWN_NAME, end - 3, end, (slow, errors)))
    assert isinstance(result, Sample), result
    assert set(result.gaps) == {LATENCY_GAP, custom_gap("slow")}, result.gaps
    gap = result.gaps[custom_gap("slow")]
    assert gap.kind == "empty", gap
    assert gap.message.startswith(f"{DOWN_NAME}: "), gap
    assert BASELINE_NAME not in gap.message, gap
    assert "slow" not in result.custom
    baseline_errors, down_errors = result.custom["errors"]
    assert baseline_errors == pytest.approx(result.baseline.errors, rel=1e-6)
    assert down_errors == pytest.approx(result.candidate.errors, rel=1e-6)


def test_several_series_in_a_custom_query_is_an_error_gap(scraped: Scraped) -> None:
    end = last_scrape_time(scraped.prometheus)
    provider = PrometheusProvider(scraped.prometheus.url, timeout_s=2, retry_budget_s=2)
    many = CustomQuery(
        "by_class",
        'increase(envoy_cluster_upstream_rq_xx{envoy_cluster_name="{cluster}"}[{window}])',
    )
    result = run(sample(provider, BASELINE_NAME, CANDIDATE_NAME, end - 3, end, (many,)))
    assert isinstance(result, Sample), result
    assert set(result.gaps) == {custom_gap("by_class")}, result.gaps
    gap = result.gaps[custom_gap("by_class")]
    assert gap.kind == "error", gap
    assert "2 series" in gap.message
    assert result.custom == {}


def test_bad_promql_fails_at_once(scraped: Scraped) -> None:
    """HTTP 400 is the query's fault: one attempt, although the budget allows many."""
    end = last_scrape_time(scraped.prometheus)
    provider = PrometheusProvider(scraped.prometheus.url, timeout_s=2, retry_budget_s=30)
    bad = CustomQuery("bad", 'sum(up{job="{cluster}"}) +* 2')
    began = time.monotonic()
    result = run(sample(provider, BASELINE_NAME, CANDIDATE_NAME, end - 3, end, (bad,)))
    elapsed = time.monotonic() - began
    print(f"bad query: {elapsed:.3f}s: {result}")
    assert isinstance(result, NoSample), result
    assert result.kind == "error", result
    assert "+* 2" in result.message
    assert "HTTP 400" in result.message
    assert "failed after 1 attempt:" in result.message


def test_prometheus_stopped_is_an_error_within_the_budget(
    prometheus_factory: Callable[..., Prometheus], scraped: Scraped
) -> None:
    """Connection refused is retried until the budget is spent, then reported: never raised,
    never a hang (the wait_for bound is a guard, not the figure under test)."""
    own = prometheus_factory([ScrapeTarget("envoy", scraped.fake.address)])
    assert own.query("vector(1)")["result"], "the Prometheus about to be stopped answered"
    own.stop()
    end = time.time()
    provider = PrometheusProvider(own.url, timeout_s=1, retry_budget_s=2)
    began = time.monotonic()

    async def bounded() -> object:
        return await asyncio.wait_for(
            sample(provider, BASELINE_NAME, CANDIDATE_NAME, end - 1, end), timeout=20
        )

    result = run(bounded())
    elapsed = time.monotonic() - began
    print(f"prometheus stopped: returned after {elapsed:.2f}s (budget 2 s): {result}")
    assert isinstance(result, NoSample), result
    assert result.kind == "error", result
    assert "6 of 6 queries failed" in result.message
    assert "Connection refused" in result.message
    assert "envoy_cluster_upstream_rq_total" in result.message
    attempts = int(result.message.split("failed after ")[1].split(" attempts")[0])
    assert attempts >= 2, f"a refused connection is retried: {result.message}"


# --- retries, against a scripted HTTP API (no Prometheus needed) -----------------------------


Result = list[dict[str, object]]


class ScriptedApi:
    """``/api/v1/query`` answering each distinct query ``failures`` times with ``status``, then
    with a plausible result (or ``respond(query)`` when that is not None), each answer after
    ``delay_s``; counts the requests per query and the answers sent."""

    def __init__(
        self,
        status: int = 503,
        failures: int = 0,
        *,
        respond: Callable[[str], Result | None] | None = None,
        delay_s: float = 0.0,
    ) -> None:
        self.status = status
        self.failures = failures
        self.calls: dict[str, int] = {}
        self.answered = 0
        self.lock = threading.Lock()
        api = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                query = parse_qs(urlparse(self.path).query)["query"][0]
                with api.lock:
                    api.calls[query] = api.calls.get(query, 0) + 1
                    failing = api.calls[query] <= api.failures
                time.sleep(delay_s)
                scripted = respond(query) if respond is not None else None
                body: dict[str, object]
                if failing:
                    code = api.status
                    body = {"status": "error", "errorType": "scripted", "error": f"HTTP {code}"}
                elif scripted is not None:
                    code = 200
                    body = {
                        "status": "success",
                        "data": {"resultType": "vector", "result": scripted},
                    }
                elif query.startswith("sum by (le)"):
                    code = 200
                    result = [
                        {"metric": {"le": "1"}, "value": [1.0, "4"]},
                        {"metric": {"le": "+Inf"}, "value": [1.0, "10"]},
                    ]
                    body = {"status": "success", "data": {"resultType": "vector", "result": result}}
                else:
                    code = 200
                    result = [{"metric": {}, "value": [1.0, "10"]}]
                    body = {"status": "success", "data": {"resultType": "vector", "result": result}}
                text = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(text)))
                self.end_headers()
                self.wfile.write(text)
                with api.lock:
                    api.answered += 1

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.parametrize("status", [503, 502, 429])
def test_transient_http_errors_are_retried(status: int) -> None:
    api = ScriptedApi(status, failures=2)
    try:
        provider = PrometheusProvider(api.url, timeout_s=2, retry_budget_s=10)
        result = run(sample(provider, "b", "c", 100.0, 130.0))
    finally:
        api.close()
    assert isinstance(result, Sample), result
    assert result.baseline.requests == 10.0
    assert result.candidate.latency.counts == (4.0, 10.0)
    assert sorted(api.calls.values()) == [3] * 6, api.calls


@pytest.mark.parametrize("status", [400, 422])
def test_query_errors_are_not_retried(status: int) -> None:
    api = ScriptedApi(status, failures=1)
    try:
        provider = PrometheusProvider(api.url, timeout_s=2, retry_budget_s=10)
        result = run(sample(provider, "b", "c", 100.0, 130.0))
    finally:
        api.close()
    assert isinstance(result, NoSample), result
    assert result.kind == "error"
    assert f"HTTP {status}: scripted: HTTP {status}" in result.message
    assert sorted(api.calls.values()) == [1] * 6, api.calls


def test_retries_stop_with_the_budget() -> None:
    """A server that keeps answering 503: the attempts stop once the budget is spent."""
    api = ScriptedApi(503, failures=10**6)
    try:
        provider = PrometheusProvider(api.url, timeout_s=1, retry_budget_s=1.5)
        result = run(sample(provider, "b", "c", 100.0, 130.0))
    finally:
        api.close()
    assert isinstance(result, NoSample), result
    assert result.kind == "error"
    attempts = sorted(api.calls.values())
    print(f"attempts per query within a 1.5 s budget: {attempts}")
    # Backoff 0.1, 0.2, 0.4, 0.8 s...: about 4-5 attempts start within 1.5 s, not dozens.
    assert attempts[0] >= 2, attempts
    assert attempts[-1] <= 8, attempts


# --- gaps, against a scripted HTTP API -------------------------------------------------------


def test_no_latency_series_on_both_sides_is_one_gap_naming_both() -> None:
    api = ScriptedApi(respond=lambda q: [] if q.startswith("sum by (le)") else None)
    try:
        provider = PrometheusProvider(api.url, timeout_s=2, retry_budget_s=2)
        result = run(sample(provider, "b", "c", 100.0, 130.0))
    finally:
        api.close()
    assert isinstance(result, Sample), result
    assert set(result.gaps) == {LATENCY_GAP}, result.gaps
    gap = result.gaps[LATENCY_GAP]
    assert gap.kind == "empty", gap
    assert gap.message.startswith("b: "), gap
    assert "; c: " in gap.message, gap
    assert result.baseline.latency == result.candidate.latency == EMPTY_HISTOGRAM
    assert (result.baseline.requests, result.candidate.errors) == (10.0, 10.0)


def test_no_inf_bucket_is_a_latency_gap() -> None:
    def respond(query: str) -> Result | None:
        if query.startswith("sum by (le)") and '"c"' in query:
            return [{"metric": {"le": "1"}, "value": [1.0, "4"]}]
        return None

    api = ScriptedApi(respond=respond)
    try:
        provider = PrometheusProvider(api.url, timeout_s=2, retry_budget_s=2)
        result = run(sample(provider, "b", "c", 100.0, 130.0))
    finally:
        api.close()
    assert isinstance(result, Sample), result
    gap = result.gaps[LATENCY_GAP]
    assert gap.kind == "empty", gap
    assert gap.message.startswith("c: "), gap
    assert "+Inf" in gap.message, gap
    assert result.candidate.latency == EMPTY_HISTOGRAM
    assert result.baseline.latency.counts == (4.0, 10.0)


def test_no_request_series_is_still_no_sample() -> None:
    """The requests query empty (an unknown cluster) is no sample at all, gaps or not."""
    api = ScriptedApi(
        respond=lambda q: (
            [] if q.startswith("sum(increase(envoy_cluster_upstream_rq_total") else None
        )
    )
    try:
        provider = PrometheusProvider(api.url, timeout_s=2, retry_budget_s=2)
        result = run(sample(provider, "b", "c", 100.0, 130.0))
    finally:
        api.close()
    assert isinstance(result, NoSample), result
    assert result.kind == "empty"
    assert result.message.startswith("b: "), result


def test_a_failed_custom_query_fails_the_whole_sample() -> None:
    """An HTTP error is a failing backend, not a gap: the whole sample is an error."""
    api = ScriptedApi(400, failures=1, respond=lambda q: None)
    try:
        provider = PrometheusProvider(api.url, timeout_s=2, retry_budget_s=2)
        custom = (CustomQuery("x", 'sum(up{job="{cluster}"})'),)
        result = run(sample(provider, "b", "c", 100.0, 130.0, custom))
    finally:
        api.close()
    assert isinstance(result, NoSample), result
    assert result.kind == "error"
    assert "8 of 8 queries failed" in result.message


# --- the provider's own threads and its deadline ---------------------------------------------


def dead_url() -> str:
    """A URL on a port nothing listens on (connection refused at once)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def test_retries_do_not_occupy_the_default_executor() -> None:
    """While a sample retries against a dead port, ``asyncio.to_thread`` (the state store,
    the admin API) still gets a thread at once: the queries run in the provider's own pool.
    The default executor is made small (2 threads) so that six queries retrying in it would
    hold every thread until their budget ends, whatever the machine's CPU count; the
    ``to_thread`` call must complete before any query has ended its retries (~1.5 s here)."""
    provider = PrometheusProvider(dead_url(), timeout_s=1, retry_budget_s=3)
    ended: list[str] = []
    query = provider._query

    def counted(*args: Any) -> Any:
        answer = query(*args)
        ended.append(answer.query)
        return answer

    provider._query = counted  # type: ignore[method-assign,assignment]

    async def scenario() -> tuple[int, bool, object]:
        asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(max_workers=2))
        try:
            sampling = asyncio.create_task(provider.sample("b", "c", 100.0, 130.0))
            await asyncio.sleep(0.05)  # the queries are refused and back off
            value = await asyncio.to_thread(lambda: 1)
            ended_then, still_sampling = len(ended), not sampling.done()
            assert value == 1
            return ended_then, still_sampling, await sampling
        finally:
            await provider.close()

    ended_then, still_sampling, result = asyncio.run(scenario())
    assert ended_then == 0, f"asyncio.to_thread waited for {ended_then} queries' retries"
    assert still_sampling
    assert isinstance(result, NoSample), result
    assert result.kind == "error"
    assert "Connection refused" in result.message
    assert len(ended) == 6


def test_the_deadline_bounds_a_sample_and_stops_its_retries() -> None:
    """A Prometheus that answers 503 after 1.5 s, a 0.5 s deadline: the sample is an error
    naming the timeout, returned before any answer came; the attempts under way are not
    retried once they end (the budget alone would allow more)."""
    api = ScriptedApi(503, failures=10**6, delay_s=1.5)
    try:
        provider = PrometheusProvider(api.url, timeout_s=5, retry_budget_s=10, deadline_s=0.5)

        async def scenario() -> tuple[object, int]:
            try:
                result = await provider.sample("b", "c", 100.0, 130.0)
                return result, api.answered
            finally:
                await provider.close()

        result, answered = asyncio.run(scenario())
        assert isinstance(result, NoSample), result
        assert result.kind == "error"
        assert "timed out after 0.5 s" in result.message, result
        assert answered == 0, "the sample waited for Prometheus' answers"
        # The attempts under way end (503) and are not retried: their backoff is 0.1 s.
        deadline = time.monotonic() + 10
        while api.answered < 6 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)
        assert sorted(api.calls.values()) == [1] * 6, api.calls
    finally:
        api.close()


def test_the_default_deadline_is_budget_plus_timeout() -> None:
    provider = PrometheusProvider("http://p:9090", timeout_s=2, retry_budget_s=5)
    assert provider.deadline_s == 8.0
    run(provider.close())
    with pytest.raises(ValueError, match="deadline_s"):
        PrometheusProvider("http://p:9090", deadline_s=0)


# --- the registry ----------------------------------------------------------------------------


def test_the_registry_imports_a_backend_only_when_used() -> None:
    """Importing the registry imports neither backend (prometheus-api-client, httpx); building
    a provider imports its own."""
    code = """
import sys
from controller.analysis.providers import PROVIDERS
from controller.analysis.providers.base import make_provider
loaded = lambda: sorted(m for m in sys.modules if m.split(".")[0] in (
    "prometheus_api_client", "pandas", "httpx") or m.startswith("controller.analysis.providers."))
print(loaded())
provider = make_provider("prometheus", {"url": "http://p:9090"}, PROVIDERS)
print(type(provider).__name__, loaded())
"""
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    before, after = done.stdout.splitlines()
    assert before == "['controller.analysis.providers.base']", done.stdout
    assert after.startswith("PrometheusProvider "), done.stdout
    assert "'controller.analysis.providers.prometheus'" in after, done.stdout
    assert "'prometheus_api_client'" in after, done.stdout
    assert "'controller.analysis.providers.envoy_admin'" not in after, done.stdout
