"""The ``prometheus`` provider against a real Prometheus (``/usr/bin/prometheus``).

Prometheus scrapes, every second, an in-process exporter that serves Envoy's
``/stats/prometheus`` metric names for two clusters with counters growing linearly in time:
``increase()`` over a window is then ``rate x window`` (its extrapolation to the window's edges
is exact for a linear counter), so the counts can be checked to a few per cent, and ratios
(5xx share, histogram shape), which come from the same scrape, exactly.

The real-Envoy version (real traffic, the counts the clients saw) is
``tests/e2e/test_prometheus_e2e.py``. Without the binary these tests skip (fail under CI=true).
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import prometheus_fixture
import pytest
from prometheus_fixture import Prometheus, ScrapeTarget

from controller.analysis.providers.base import CustomQuery
from controller.analysis.providers.prometheus import PrometheusProvider
from controller.analysis.sli import NoSample, Sample

pytestmark = pytest.mark.timeout(60)

BOUNDS = ("0.5", "1", "5", "10", "25", "50", "100", "250", "500", "1000", "+Inf")


@dataclass
class Side:
    """One fake cluster: ``rate`` requests/s, a share of them 5xx, and the cumulative share of
    requests at or below each bound of :data:`BOUNDS`."""

    rate: float
    error_share: float
    cumulative: tuple[float, ...]


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
            if side.error_share > 0:  # Envoy creates the 5xx counter on the first 5xx
                lines.append(
                    f'envoy_cluster_upstream_rq_xx{{envoy_response_code_class="5",{label}}}'
                    f" {total * side.error_share!r}"
                )
        lines.append("# TYPE envoy_cluster_upstream_rq_time histogram")
        for name, side in self.sides.items():
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
# Names a PromQL string literal must escape.
BASELINE_NAME = 'comments-python"v1'
CANDIDATE_NAME = "comments-go"


@dataclass
class Scraped:
    prometheus: Prometheus
    fake: FakeEnvoyStats


@pytest.fixture(scope="module")
def scraped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scraped]:
    """One Prometheus for the module, scraping the fake Envoy every second; ready once 4 s of
    data exist. (The test that stops Prometheus starts its own.)"""
    escaped = BASELINE_NAME.replace('"', '\\"')
    fake = FakeEnvoyStats({escaped: BASELINE, CANDIDATE_NAME: CANDIDATE})
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


def test_nan_custom_query(scraped: Scraped) -> None:
    end = last_scrape_time(scraped.prometheus)
    provider = PrometheusProvider(scraped.prometheus.url, timeout_s=2, retry_budget_s=2)
    nan = CustomQuery("ratio", 'label_replace(vector(0) / vector(0), "c", "{cluster}", "", "")')
    result = run(sample(provider, BASELINE_NAME, CANDIDATE_NAME, end - 3, end, (nan,)))
    assert isinstance(result, NoSample), result
    assert result.kind == "nan", result
    assert "vector(0) / vector(0)" in result.message


def test_several_series_in_a_custom_query_is_an_error(scraped: Scraped) -> None:
    end = last_scrape_time(scraped.prometheus)
    provider = PrometheusProvider(scraped.prometheus.url, timeout_s=2, retry_budget_s=2)
    many = CustomQuery(
        "by_class",
        'increase(envoy_cluster_upstream_rq_xx{envoy_cluster_name="{cluster}"}[{window}])',
    )
    result = run(sample(provider, BASELINE_NAME, CANDIDATE_NAME, end - 3, end, (many,)))
    assert isinstance(result, NoSample), result
    assert result.kind == "error", result
    assert "2 series" in result.message


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


class ScriptedApi:
    """``/api/v1/query`` answering each distinct query ``failures`` times with ``status``, then
    with a plausible result; counts the requests per query."""

    def __init__(self, status: int, failures: int) -> None:
        self.status = status
        self.failures = failures
        self.calls: dict[str, int] = {}
        self.lock = threading.Lock()
        api = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                query = parse_qs(urlparse(self.path).query)["query"][0]
                with api.lock:
                    api.calls[query] = api.calls.get(query, 0) + 1
                    failing = api.calls[query] <= api.failures
                if failing:
                    code = api.status
                    body = {"status": "error", "errorType": "scripted", "error": f"HTTP {code}"}
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
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

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
