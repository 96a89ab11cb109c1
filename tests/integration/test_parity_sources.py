"""Where the parity SLI comes from without Prometheus: the ``envoy_admin`` provider (which
cannot see the comparator) and a :class:`ParitySource` (the comparator in the controller's
process), given to the provider or to :class:`MetricsAnalyzer`.

One aiohttp server on 127.0.0.1 (port 0) plays an Envoy admin endpoint; scrapes are taken with
``scrape_once()`` under a fake clock, so the window's edges are known. The parity source is a
small in-memory tally keyed by route.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from aiohttp import web

from controller.analysis.providers.base import CustomQuery
from controller.analysis.providers.envoy_admin import EnvoyAdminProvider
from controller.analysis.sli import PARITY_GAP, ParitySli, Sample, SampleResult
from controller.policy.loading import load_policy
from controller.rollout.machine import start
from controller.runtime.analyzer import MetricsAnalyzer
from controller.store.rollouts import PolicySource, StoredRollout

BASELINE, CANDIDATE = "items-v1", "items-v2"
T0, T1 = 1_000.0, 1_600.0


def envoy_text(requests: dict[str, float]) -> str:
    lines = ["# TYPE envoy_cluster_upstream_rq_total counter"]
    lines += [
        f'envoy_cluster_upstream_rq_total{{envoy_cluster_name="{name}"}} {count}'
        for name, count in requests.items()
    ]
    return "\n".join(lines) + "\n"


@dataclass
class Envoy:
    url: str = ""
    text: str = ""


@dataclass
class Tallies:
    """A :class:`~controller.analysis.providers.base.ParitySource`: per route, the counts, the
    reason there are none, or an error to raise; records the windows asked for."""

    answers: dict[str, ParitySli | str | Exception] = field(default_factory=dict)
    asked: list[tuple[str, float, float]] = field(default_factory=list)

    async def window(self, route: str, start: float, end: float) -> ParitySli | str:
        self.asked.append((route, start, end))
        answer = self.answers.get(route, f"no request of route {route!r} was mirrored yet")
        if isinstance(answer, Exception):
            raise answer
        return answer


class Recording:
    """The envoy_admin provider, recording each call's ``parity_route``."""

    def __init__(self, inner: EnvoyAdminProvider) -> None:
        self.inner = inner
        self.parity_routes: list[str | None] = []

    async def sample(
        self,
        baseline: str,
        candidate: str,
        start: float,
        end: float,
        custom: tuple[CustomQuery, ...] = (),
        *,
        parity_route: str | None = None,
    ) -> SampleResult:
        self.parity_routes.append(parity_route)
        return await self.inner.sample(
            baseline, candidate, start, end, custom, parity_route=parity_route
        )

    async def close(self) -> None:
        await self.inner.close()


@pytest.fixture
async def envoy() -> AsyncIterator[Envoy]:
    fake = Envoy()

    async def handle(request: web.Request) -> web.Response:
        return web.Response(text=fake.text, content_type="text/plain")

    app = web.Application()
    app.router.add_get("/stats/prometheus", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server = site._server
    assert server is not None
    port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
    fake.url = f"http://127.0.0.1:{port}"
    try:
        yield fake
    finally:
        await runner.cleanup()


async def scraped_provider(envoy: Envoy, parity: Tallies | None = None) -> EnvoyAdminProvider:
    """A provider with two scrapes: nothing at T0, 2,000 baseline requests at T1."""
    clock = {"now": T0}
    provider = EnvoyAdminProvider(
        [envoy.url], timeout_s=2.0, clock=lambda: clock["now"], parity=parity
    )
    envoy.text = envoy_text({BASELINE: 0, CANDIDATE: 0})
    assert await provider.scrape_once() == {envoy.url: None}
    clock["now"] = T1
    envoy.text = envoy_text({BASELINE: 2_000, CANDIDATE: 0})
    assert await provider.scrape_once() == {envoy.url: None}
    return provider


def _sample(result: SampleResult) -> Sample:
    assert isinstance(result, Sample), result
    return result


# --- envoy_admin -----------------------------------------------------------------------------


async def test_envoy_admin_cannot_see_the_comparator(envoy: Envoy) -> None:
    provider = await scraped_provider(envoy)
    try:
        plain = _sample(await provider.sample(BASELINE, CANDIDATE, T0, T1))
        asked = _sample(await provider.sample(BASELINE, CANDIDATE, T0, T1, parity_route="items"))
    finally:
        await provider.close()
    assert PARITY_GAP not in plain.gaps
    assert asked.parity is None
    gap = asked.gaps[PARITY_GAP]
    assert gap.kind == "error", gap  # a configuration the controller must fix: never noData
    assert "envoy_admin metrics provider cannot see the parity comparator" in gap.message
    assert asked.baseline.requests == 2_000


async def test_envoy_admin_reads_parity_from_a_source(envoy: Envoy) -> None:
    counts = ParitySli(compared=9_000.0, mismatched=3.0, noisy=20.0, errors=1.0)
    tallies = Tallies({"items": counts, "flaky": RuntimeError("tally lock timeout")})
    provider = await scraped_provider(envoy, tallies)
    try:
        items = _sample(await provider.sample(BASELINE, CANDIDATE, T0, T1, parity_route="items"))
        quiet = _sample(await provider.sample(BASELINE, CANDIDATE, T0, T1, parity_route="quiet"))
        flaky = _sample(await provider.sample(BASELINE, CANDIDATE, T0, T1, parity_route="flaky"))
    finally:
        await provider.close()
    assert items.parity == counts
    assert PARITY_GAP not in items.gaps
    assert tallies.asked[0] == ("items", T0, T1)
    assert quiet.parity is None
    assert quiet.gaps[PARITY_GAP].kind == "empty"
    assert "no request of route 'quiet' was mirrored yet" in quiet.gaps[PARITY_GAP].message
    assert flaky.gaps[PARITY_GAP].kind == "error"
    assert "RuntimeError: tally lock timeout" in flaky.gaps[PARITY_GAP].message


# --- MetricsAnalyzer ---------------------------------------------------------------------------

POLICY = """apiVersion: sluice.dev/v1alpha1
kind: RolloutPolicy
metadata: {name: items}
spec:
  route: items
  baseline: {cluster: items-v1}
  candidate: {cluster: items-v2}
  parity: {mirror: 10%}
  stages:
    - {weight: 0%, bake: 5m}
    - {weight: 10%, bake: 5m}
    - {weight: 100%, bake: 5m}
  analysis:
    interval: 30s
    slos:
      - {metric: error_rate, maxDrift: 5%}
"""
PARITY_SLO = "      - {metric: parity, minValue: 99.9%}\n"


def rollout(text: str) -> StoredRollout:
    policy = load_policy(text, "items.yaml")
    state, _ = start(policy, T0, "t")
    state = state.model_copy(update={"stage": 0, "stage_started_at": T0})
    return StoredRollout(
        name="items",
        route="items",
        policy=policy,
        source=PolicySource(None, None, False, ""),
        state=state,
        revision=1,
        created_at=T0,
    )


async def test_the_analyzer_prefers_its_parity_source(envoy: Envoy) -> None:
    """The in-process source judges the shadow stage; the provider is not asked for parity."""
    tallies = Tallies({"items": ParitySli(10_000.0, 0.0, 12.0, 0.0)})
    provider = Recording(await scraped_provider(envoy))
    try:
        verdict = await MetricsAnalyzer(provider, parity=tallies).judge(
            rollout(POLICY + PARITY_SLO), T1
        )
    finally:
        await provider.close()
    assert verdict.outcome == "pass", verdict.reason
    assert provider.parity_routes[0] is None
    assert tallies.asked == [("items", T0, T1)]
    slos = verdict.details["slos"]
    assert isinstance(slos, dict)
    assert slos["error_rate"]["outcome"] == "not judged"
    assert slos["parity"]["compared"] == 10_000


async def test_the_analyzer_asks_the_provider_only_for_a_parity_slo(envoy: Envoy) -> None:
    provider = Recording(await scraped_provider(envoy))
    try:
        analyzer = MetricsAnalyzer(provider)
        with_parity = await analyzer.judge(rollout(POLICY + PARITY_SLO), T1)
        without = await analyzer.judge(rollout(POLICY.replace("0%, bake", "1%, bake", 1)), T1)
    finally:
        await provider.close()
    assert provider.parity_routes == ["items", None]
    # envoy_admin cannot see the comparator: the parity SLO holds (a query error), whatever
    # noData says.
    assert with_parity.outcome == "inconclusive", with_parity.reason
    assert "cannot see the parity comparator" in with_parity.reason
    judged = without.details["slos"]
    assert isinstance(judged, dict)
    assert set(judged) == {"error_rate"}
