"""End to end: the ``envoy_admin`` provider counts what clients saw through real Envoys.

Two real Envoys fed by the controller (weights 70/30 set through its admin API), real
upstreams, 1,000 real requests (600 through one Envoy, 400 through the other). The provider
scrapes both admin endpoints in the background; its sample over the load's window must equal,
per upstream, the requests the clients got answered by that upstream (exactly), with 0 errors
and a latency histogram holding every request, on the fine buckets of the Sluice bootstrap.
Then the Envoys are killed one by one: the first one's loss is a warning, the second an error.

Run with ``pytest tests/e2e --e2e -k envoy_admin -rP`` (``-rP`` shows the figures).
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Callable

import pytest

from controller.analysis.providers.envoy_admin import EnvoyAdminProvider
from controller.analysis.sli import NoSample, Sample
from controller.xds.bootstrap import latency_buckets_ms

from .harness import (
    BASELINE,
    CANDIDATE,
    ROUTE,
    Controller,
    Envoy,
    LoadGenerator,
    Summary,
    wait_until,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

FLUSH_INTERVAL_S = 1.0  # the harness bootstrap's stats_flush_interval
SCRAPE_INTERVAL_S = 0.25


async def wait_scraped_after(provider: EnvoyAdminProvider, t: float, within_s: float) -> None:
    """Wait until every Envoy has a successful scrape later than ``t``."""
    deadline = time.monotonic() + within_s
    while True:
        statuses = provider.status()
        if all(s.last_success is not None and s.last_success > t for s in statuses):
            return
        assert time.monotonic() < deadline, f"no scrape after {t}: {statuses}"
        await asyncio.sleep(0.05)


async def test_envoy_admin_counts_equal_what_clients_saw(
    shared_controller: Controller,
    envoy_factory: Callable[..., Envoy],
    record_property: Callable[[str, object], None],
) -> None:
    envoys = [
        envoy_factory(shared_controller, node_id=f"envoy-admin-{i}", protocol="sotw")
        for i in (1, 2)
    ]
    weights = {BASELINE: 70, CANDIDATE: 30}
    shared_controller.set_weights(ROUTE, weights, nodes=[e.node_id for e in envoys])
    for envoy in envoys:
        envoy.wait_route_weights(weights, timeout=5.0)

    provider = EnvoyAdminProvider(
        [e.admin_url for e in envoys], scrape_interval_s=SCRAPE_INTERVAL_S, timeout_s=1.0
    )
    await provider.start()
    try:
        await wait_scraped_after(provider, time.time(), within_s=5.0)
        start = time.time()  # the scrape just before it is the window's first edge

        loads = [
            LoadGenerator(f"http://127.0.0.1:{e.listener_port()}", concurrency=4) for e in envoys
        ]
        summaries: list[Summary] = list(
            await asyncio.gather(
                asyncio.to_thread(loads[0].run, 600, 60.0),
                asyncio.to_thread(loads[1].run, 400, 60.0),
            )
        )
        load_done = time.time()
        # Histograms reach /stats/prometheus at Envoy's next flush; counters are live.
        await asyncio.sleep(2 * FLUSH_INTERVAL_S)
        await wait_scraped_after(provider, time.time(), within_s=5.0)
        end = time.time()
        result = await provider.sample(BASELINE, CANDIDATE, start, end)

        clients = {side: sum(s.count(side) for s in summaries) for side in (BASELINE, CANDIDATE)}
        for summary in summaries:
            assert summary.ok == summary.total, summary.describe()
        assert sum(clients.values()) == 1000, [s.describe() for s in summaries]
        assert isinstance(result, Sample), result
        envoy_counts = {
            side: sum(e.cluster_counter(side, "upstream_rq_total") for e in envoys)
            for side in (BASELINE, CANDIDATE)
        }
        figures = {
            "clients": clients,
            "envoy_stats": envoy_counts,
            "provider": {
                "baseline": [result.baseline.requests, result.baseline.errors],
                "candidate": [result.candidate.requests, result.candidate.errors],
                "latency_total": [result.baseline.latency.total, result.candidate.latency.total],
                "baseline_p99_upper_ms": result.baseline.latency.quantile(0.99),
                "candidate_p99_upper_ms": result.candidate.latency.quantile(0.99),
            },
            "buckets": len(result.baseline.latency.bounds),
            "window_s": round(end - start, 2),
            "sample_after_load_s": round(end - load_done, 2),
            "scrapes": [s.scrapes for s in provider.status()],
        }
        print(json.dumps(figures))
        record_property("figures", figures)

        for side, counts in ((BASELINE, result.baseline), (CANDIDATE, result.candidate)):
            assert counts.requests == clients[side], figures
            assert counts.errors == 0, figures
            assert counts.latency.total == clients[side], figures
            assert counts.latency.bounds == (*latency_buckets_ms(), math.inf), figures
        assert envoy_counts == clients, figures
        assert result.warnings == (), result.warnings
        assert result.gaps == {}, result.gaps

        # One Envoy gone: its scrapes go stale, the sample keeps the other and warns.
        envoys[1].kill()
        killed = time.time()
        await asyncio.sleep(provider.stale_after_s + 2 * SCRAPE_INTERVAL_S)
        partial = await provider.sample(BASELINE, CANDIDATE, start, time.time())
        assert isinstance(partial, Sample), partial
        assert partial.baseline.requests == summaries[0].count(BASELINE), partial
        assert partial.candidate.requests == summaries[0].count(CANDIDATE), partial
        assert len(partial.warnings) == 1, partial.warnings
        assert envoys[1].admin_url in partial.warnings[0], partial.warnings
        assert "ConnectError" in partial.warnings[0], partial.warnings

        # Both gone: no sample, an error naming both endpoints.
        envoys[0].kill()
        await asyncio.sleep(provider.stale_after_s + 2 * SCRAPE_INTERVAL_S)
        failed = await provider.sample(BASELINE, CANDIDATE, start, time.time())
        assert isinstance(failed, NoSample), failed
        assert failed.kind == "error", failed
        for envoy in envoys:
            assert envoy.admin_url in failed.message, failed.message
        print(
            json.dumps(
                {
                    "partial_warning": partial.warnings[0],
                    "error": failed.message,
                    "stale_after_s": provider.stale_after_s,
                    "killed_at": killed,
                }
            )
        )
    finally:
        await provider.close()
    wait_until(lambda: not any(e.proc.alive() for e in envoys), timeout=5.0, what="envoys gone")
