"""The ``envoy_admin`` provider against scripted Envoy admin endpoints (aiohttp, 127.0.0.1:0).

One aiohttp server plays several Envoys: ``/<name>/stats/prometheus`` answers the text (or the
HTTP error) the test scripted for ``<name>``. Scrapes are triggered with ``scrape_once()`` under
a fake clock, so every scrape's time is known; one test runs the real background loop.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web

from controller.analysis.providers import PROVIDERS
from controller.analysis.providers.base import CustomQuery, make_provider
from controller.analysis.providers.envoy_admin import EnvoyAdminProvider, from_options
from controller.analysis.providers.envoy_stats import STATS_FILTER
from controller.analysis.sli import NoSample, Sample

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
    port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
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


async def test_nan_in_the_scraped_text_is_nan(envoys: FakeEnvoys, clock: Clock) -> None:
    provider = provider_for(envoys, ["e1"], clock)
    try:
        envoys.texts["e1"] = envoy_text({"b": (10, 0, (5, 9, 10)), "c": (10, 0, ())})
        await scrape_at(provider, clock, 1000.0)
        envoys.texts["e1"] = envoy_text({"b": (20, 0, (5, math.nan, 20)), "c": (10, 0, ())})
        await scrape_at(provider, clock, 1001.0)
        result = await provider.sample("b", "c", 1000.0, 1001.0)
    finally:
        await provider.close()
    assert isinstance(result, NoSample), result
    assert result.kind == "nan"
    assert "envoy_cluster_upstream_rq_time_bucket" in result.message
    assert 'envoy_cluster_name="b"' in result.message


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
        assert len({id(stats["b"]) for stats in series.stats}) == 1  # one object, shared
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
