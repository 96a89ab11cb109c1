"""The ``envoy_admin`` metrics provider: Envoy's own ``/stats/prometheus``, no Prometheus.

The embedded default (design section 10). A background task per Envoy scrapes
``GET <admin>/stats/prometheus`` every ``scrape_interval_s`` (with Envoy's ``filter`` so only
the three stats the judge reads come back), parses it
(:mod:`~controller.analysis.providers.envoy_stats`) and keeps a bounded time series
(``retention_s``, :mod:`~controller.analysis.providers.envoy_admin_series`) of per-cluster
cumulative values: requests (``envoy_cluster_upstream_rq_total``), 5xx
(``envoy_cluster_upstream_rq_xx{class="5"}``) and the latency histogram
(``envoy_cluster_upstream_rq_time_bucket`` per ``le``, ms).

:meth:`EnvoyAdminProvider.sample` takes, per Envoy, the increase from the last scrape at or
before ``start`` (the first after it when there is none) to the last scrape at or before
``end``, counter resets handled like PromQL's ``increase()`` but never extrapolated (exact
counts), and sums over the Envoys. Histograms with different bounds on different Envoys are
summed on the bounds they share. A one-hour window costs about as little as a short one.

Outcomes (:mod:`~controller.analysis.providers.envoy_admin_sample`), none of them a pass: no
Envoy with scrapes covering the window → ``NoSample("error")``; a cluster absent from all of
them → ``NoSample("empty")``; a NaN counter → ``NoSample("nan")``; custom SLO queries (PromQL)
→ ``NoSample("error")``: they need the ``prometheus`` provider. Envoy's stats hold nothing of
the parity comparator: asked for a route's parity, the sample has ``gaps[PARITY_GAP]`` of kind
``error`` saying so, unless the provider was given a
:class:`~controller.analysis.providers.base.ParitySource`. A latency histogram that is
missing while a side served requests (a candidate down from the start: Envoy answers 503
itself and times nothing), NaN or inconsistent → the sample, with ``gaps[LATENCY_GAP]``.
Envoys failing while others have data → the sample of those, with :attr:`Sample.warnings`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping, Sequence

import httpx

from controller.analysis.providers import envoy_stats
from controller.analysis.providers.base import CustomQuery, MetricsProvider, ParitySource
from controller.analysis.providers.envoy_admin_options import OPTIONS, parse_options
from controller.analysis.providers.envoy_admin_sample import window_sample
from controller.analysis.providers.envoy_admin_series import EnvoyScrapeStatus, EnvoySeries
from controller.analysis.providers.parity import read_parity, unseen, with_parity
from controller.analysis.sli import NoSample, SampleResult

__all__ = ["FACTORY", "OPTIONS", "EnvoyAdminProvider", "EnvoyScrapeStatus", "from_options"]

_PARSE_IN_THREAD_BYTES = 64 * 1024
"""Texts larger than this are parsed in a worker thread (the event loop also serves xDS)."""


class EnvoyAdminProvider(MetricsProvider):
    """Scrapes every Envoy's admin ``/stats/prometheus`` and answers samples from memory.

    Args:
        admin_urls: Envoy admin endpoints (``http://10.0.0.7:9901``).
        scrape_interval_s: seconds between scrapes of one Envoy.
        retention_s: how much history is kept (windows older than that are counted from the
            oldest scrape kept, with a warning).
        timeout_s: HTTP timeout of one scrape.
        stale_after_s: an Envoy whose last good scrape is older than this at the window's
            end (or now) is left out as failing (default: 2 scrape intervals + the timeout).
        stats_filter: Envoy's ``filter`` query parameter (None: scrape every stat).
        clock: epoch seconds (tests pass a fake).
        parity: where the parity comparator's counts come from (None: nowhere; a sample asked
            for parity then has a parity gap).

    Cost, per Envoy (Sluice's 257 buckets; ``benchmarks/envoy_admin_provider.py``): parsing a
    scrape takes ~1.2 ms per cluster (texts over 64 KiB, about ten clusters, are parsed in a
    worker thread); a cluster whose histogram changed (at each stats flush) costs ~2 KB per
    scrape, ~7.5 MB per busy cluster for an hour of 1 s scrapes; a sample takes well under a
    millisecond whatever its window.
    """

    def __init__(
        self,
        admin_urls: Sequence[str],
        *,
        scrape_interval_s: float = 1.0,
        retention_s: float = 3600.0,
        timeout_s: float = 2.0,
        stale_after_s: float | None = None,
        stats_filter: str | None = envoy_stats.STATS_FILTER,
        clock: Callable[[], float] = time.time,
        parity: ParitySource | None = None,
    ) -> None:
        if not admin_urls:
            raise ValueError("envoy_admin needs at least one Envoy admin URL")
        if scrape_interval_s <= 0 or retention_s <= 0 or timeout_s <= 0:
            raise ValueError("scrape interval, retention and timeout must be positive")
        self.admin_urls = tuple(u.rstrip("/") for u in admin_urls)
        self.scrape_interval_s = scrape_interval_s
        self.retention_s = retention_s
        self.timeout_s = timeout_s
        self.stale_after_s = (
            stale_after_s if stale_after_s is not None else 2 * scrape_interval_s + timeout_s
        )
        self._params = {"filter": stats_filter} if stats_filter else {}
        self._clock = clock
        self._parity = parity
        self._series = [EnvoySeries(url) for url in self.admin_urls]
        self._locks = [asyncio.Lock() for _ in self.admin_urls]
        self._client: httpx.AsyncClient | None = None
        self._tasks: list[asyncio.Task[None]] = []

    # --- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Start scraping (one task per Envoy, the first scrape at once). Idempotent."""
        if self._tasks:
            return
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self.timeout_s)
        self._tasks = [
            asyncio.create_task(self._run(index), name=f"envoy-admin-scrape {url}")
            for index, url in enumerate(self.admin_urls)
        ]

    async def close(self) -> None:
        """Stop the scrape tasks and close the HTTP client (the history is kept)."""
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def _run(self, index: int) -> None:
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            await self._scrape(index)
            next_at += self.scrape_interval_s
            delay = next_at - loop.time()
            if delay < 0:  # a scrape took longer than the interval: skip the missed ticks
                next_at = loop.time()
                delay = 0.0
            await asyncio.sleep(delay)

    # --- scraping -----------------------------------------------------------------------------

    async def scrape_once(self) -> dict[str, str | None]:
        """Scrape every Envoy now; returns each URL's error (None: success)."""
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self.timeout_s)
        results = await asyncio.gather(*(self._scrape(i) for i in range(len(self._series))))
        return dict(zip(self.admin_urls, results, strict=True))

    async def _scrape(self, index: int) -> str | None:
        assert self._client is not None
        series = self._series[index]
        async with self._locks[index]:
            try:
                response = await self._client.get(
                    f"{series.url}/stats/prometheus", params=self._params
                )
                at = self._clock()
                if response.status_code != 200:
                    raise _ScrapeError(f"HTTP {response.status_code}: {response.text[:200]!r}")
                text = response.text
                if len(text) > _PARSE_IN_THREAD_BYTES:
                    stats = await asyncio.to_thread(envoy_stats.parse_envoy_stats, text)
                else:
                    stats = envoy_stats.parse_envoy_stats(text)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # any failure of a scrape is that scrape's error
                error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
                series.fail(self._clock(), error)
                return error
            series.record(at, stats, self.retention_s)
            return None

    def status(self) -> tuple[EnvoyScrapeStatus, ...]:
        """Each Envoy's scraping state, in the order of :attr:`admin_urls`."""
        return tuple(series.status() for series in self._series)

    # --- samples ------------------------------------------------------------------------------

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
        """Both clusters' increases over ``[start, end]``, summed over the Envoys with data;
        with ``parity_route``, that route's parity from the provider's
        :class:`~controller.analysis.providers.base.ParitySource`, or a gap."""
        if custom:
            names = ", ".join(q.name for q in custom)
            return NoSample(
                "error",
                f"custom SLO queries need the prometheus provider (envoy_admin runs no PromQL):"
                f" {names}",
            )
        if end < start:
            return NoSample("error", f"the window ends ({end}) before it starts ({start})")
        if not self._tasks:
            await self.start()
        sample = window_sample(
            self._series,
            baseline,
            candidate,
            start,
            end,
            now=self._clock(),
            stale_after_s=self.stale_after_s,
        )
        if parity_route is None or isinstance(sample, NoSample):
            return sample
        if self._parity is None:
            return with_parity(sample, unseen("envoy_admin"))
        return with_parity(sample, await read_parity(self._parity, parity_route, start, end))


class _ScrapeError(Exception):
    """A scrape answered, but not with stats."""


def from_options(options: Mapping[str, str]) -> EnvoyAdminProvider:
    """Build from a policy's or the controller's options (see
    :mod:`~controller.analysis.providers.envoy_admin_options`).

    Raises:
        ValueError: an unknown option, no URL, or a duration that is not positive.
    """
    parsed = parse_options(options)
    return EnvoyAdminProvider(
        parsed.urls,
        scrape_interval_s=parsed.scrape_interval_s,
        retention_s=parsed.retention_s,
        timeout_s=parsed.timeout_s,
    )


def _factory(options: Mapping[str, str]) -> MetricsProvider:
    return from_options(options)


FACTORY = _factory
"""The registry entry (``PROVIDERS["envoy_admin"]``)."""
