"""The ``prometheus`` metrics provider: Envoy's per-cluster stats read back through PromQL.

Each :meth:`PrometheusProvider.sample` runs, for the baseline and the candidate, the three
count queries of :mod:`controller.analysis.queries` (requests, 5xx, latency buckets) and the
policy's custom queries, as instant queries evaluated at ``end`` over the window
``[end - W, end]`` (W: ``end - start`` rounded to whole seconds; the sample reports the window
it measured). The queries run concurrently in the provider's own bounded thread pool
(prometheus-api-client is synchronous; retries sleep in those threads, never in the event
loop's shared default executor), and each retries transient failures (connection refused or
reset, timeouts, HTTP 429 and 5xx) with exponential backoff until the retry budget is spent; a
bad query (HTTP 400, 422) fails at once. The whole sample is bounded by a deadline (by default
the retry budget plus the timeout plus 1 s).

Outcomes, none of them a pass:

- any query failed (an HTTP or connection error), or the deadline passed →
  ``NoSample("error")``, the message naming the query, the error and the attempts made (a
  failing backend is not data, for any metric);
- a side's request query returned no series → ``NoSample("empty")`` (unknown cluster, nothing
  scraped yet, or fewer than two samples in the window: ``increase()`` needs two). The 5xx
  query returning no series reads 0: Envoy creates that counter on the first 5xx;
- a side's latency query returned no series or no ``+Inf`` bucket → a :class:`Sample` whose
  side has :data:`~controller.analysis.sli.EMPTY_HISTOGRAM` and
  ``gaps[LATENCY_GAP] = NoSample("empty")`` naming the cluster (one entry for both sides).
  A candidate that is down from the start has no ``upstream_rq_time`` series at all (Envoy
  records it for upstream responses only), yet its local 503s are counted: its errors are
  still judged;
- a custom query returned no series (``empty``), NaN or an infinite value (``nan``, e.g. a
  ratio over no requests) or not one value (``error``: several series, a range vector) → a
  :class:`Sample` with ``gaps[custom_gap(name)]`` of that kind and no ``custom`` entry for that
  SLO; the other SLOs are judged. The judge applies the policy's ``noData`` per SLO;
- with ``parity_route``, the comparator's four counts of the route
  (:mod:`~controller.analysis.providers.prometheus_parity`): none with a series →
  ``gaps[PARITY_GAP] = NoSample("empty")``, NaN or infinite → ``nan``, not one value →
  ``error``; a failing query fails the sample, as above.

Modules: this one holds the provider, its query plan and the sample's assembly; running a query
with retries is :mod:`~controller.analysis.providers.prometheus_query`, reading results as values
and histograms :mod:`~controller.analysis.providers.prometheus_values` (latency buckets are made
monotonic there), the parity SLI :mod:`~controller.analysis.providers.prometheus_parity`.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor

from prometheus_api_client.prometheus_connect import PrometheusConnect
from urllib3.util.retry import Retry

from controller.analysis import queries
from controller.analysis.providers.base import CustomQuery, MetricsProvider
from controller.analysis.providers.prometheus_parity import parity_plan, parity_sli
from controller.analysis.providers.prometheus_query import (
    Answer,
    describe_failures,
    http_status,
    is_transient,
    run_query,
)
from controller.analysis.providers.prometheus_values import Outcome, histogram, single_value
from controller.analysis.sli import (
    EMPTY_HISTOGRAM,
    LATENCY_GAP,
    PARITY_GAP,
    NoSample,
    ParitySli,
    Sample,
    SampleResult,
    SideCounts,
    custom_gap,
    merge_gaps,
)

__all__ = ["FACTORY", "MAX_WORKERS", "PrometheusProvider", "http_status", "is_transient"]

_DEADLINE_SLACK_S = 1.0
MAX_WORKERS = 8
"""Threads of a provider's pool: the six queries of a sample without custom queries run at
once (with parity, four more wait their turn); kept under requests' connection pool (10 per
host) so that no connection is discarded."""


class PrometheusProvider:
    """Reads Envoy's per-cluster stats from Prometheus' HTTP API (``/api/v1/query``).

    Args:
        url: Prometheus' base URL, e.g. ``http://prometheus:9090``.
        timeout_s: seconds per HTTP attempt (connect and read), also sent to Prometheus as the
            query's evaluation ``timeout``.
        retry_budget_s: retries of a transient failure start no later than this many seconds
            after the first attempt; with the attempt timeout capped to what remains of the
            budget, a query ends within about ``max(timeout_s, retry_budget_s)``.
        headers: extra HTTP headers (e.g. ``Authorization``).
        deadline_s: :meth:`sample` gives up after this many seconds (``NoSample("error")``);
            default ``retry_budget_s + timeout_s + 1``. Queries still running are told to stop
            (no new attempt; the one under way ends with its timeout).
        max_workers: threads of the provider's own pool (see :data:`MAX_WORKERS`).
    """

    def __init__(
        self,
        url: str,
        timeout_s: float = 5.0,
        retry_budget_s: float = 10.0,
        headers: Mapping[str, str] | None = None,
        *,
        deadline_s: float | None = None,
        max_workers: int = MAX_WORKERS,
    ) -> None:
        if timeout_s <= 0 or retry_budget_s < 0:
            raise ValueError("timeout_s must be > 0 and retry_budget_s >= 0")
        if deadline_s is not None and deadline_s <= 0:
            raise ValueError("deadline_s must be > 0")
        if max_workers < 1:
            raise ValueError("max_workers must be >= 1")
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s
        self.retry_budget_s = retry_budget_s
        self.deadline_s = (
            deadline_s if deadline_s is not None else retry_budget_s + timeout_s + _DEADLINE_SLACK_S
        )
        # Its own pool: queries blocked in retries must not starve the event loop's default
        # executor (asyncio.to_thread: the state store, the admin API).
        self._executor = ThreadPoolExecutor(
            max_workers=max_workers, thread_name_prefix="sluice-prometheus"
        )
        self._running: set[threading.Event] = set()
        # No retries inside requests/urllib3: tenacity alone retries, within the budget.
        self._client = PrometheusConnect(
            url=self.url,
            headers=dict(headers or {}),
            retry=Retry(total=0, connect=0, read=0, status=0, redirect=0, raise_on_status=False),
            timeout=timeout_s,  # type: ignore[arg-type]  # annotated int; requests takes a float
        )

    @classmethod
    def from_options(cls, options: Mapping[str, str]) -> PrometheusProvider:
        """Build from a policy's options: ``url`` (required), ``timeout`` (seconds, default
        5), ``retryBudget`` (seconds, default 10).

        Raises:
            ValueError: ``url`` is missing or a number does not parse.
        """
        url = options.get("url")
        if not url:
            raise ValueError("the prometheus metrics provider needs a 'url' option")
        timeout = float(options.get("timeout", "5"))
        budget = float(options.get("retryBudget", "10"))
        return cls(url, timeout_s=timeout, retry_budget_s=budget)

    async def close(self) -> None:
        """Stop the queries under way (no new attempt), shut the thread pool down (without
        waiting for an attempt in flight) and close the HTTP session."""
        for stop in list(self._running):
            stop.set()
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._client.close()

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
        """See :meth:`MetricsProvider.sample`; the outcomes are listed in the module doc.

        Raises:
            ValueError: ``end`` is not after ``start``.
            QueryTemplateError: a custom query template is refused (a policy error).
            RuntimeError: the provider was closed.
        """
        seconds = queries.window_seconds(start, end)
        clusters = (baseline, candidate)
        plan: list[str] = []
        for cluster in clusters:
            plan += [
                queries.requests_query(cluster, seconds),
                queries.errors_query(cluster, seconds),
                queries.latency_buckets_query(cluster, seconds),
            ]
            plan += [queries.render_custom(c.template, cluster, seconds) for c in custom]
        if parity_route is not None:
            plan += parity_plan(parity_route, seconds)
        loop = asyncio.get_running_loop()
        stop = threading.Event()
        self._running.add(stop)
        try:
            futures = [
                loop.run_in_executor(self._executor, self._query, q, end, stop) for q in plan
            ]
            answers = await asyncio.wait_for(asyncio.gather(*futures), self.deadline_s)
        except TimeoutError:
            return NoSample(
                "error",
                f"Prometheus at {self.url}: {len(plan)} queries not answered, timed out after"
                f" {self.deadline_s:g} s (timeout {self.timeout_s:g} s, retry budget"
                f" {self.retry_budget_s:g} s)",
            )
        finally:
            stop.set()  # a query still retrying (timed out, cancelled) makes no new attempt
            self._running.discard(stop)
        return _read(list(answers), clusters, end, seconds, custom, parity_route)

    def _query(self, query: str, at: float, stop: threading.Event) -> Answer:
        """:func:`~controller.analysis.providers.prometheus_query.run_query` with the
        provider's client, timeout and retry budget (blocking; in a worker thread)."""
        return run_query(
            self._client,
            query,
            at,
            stop,
            timeout_s=self.timeout_s,
            retry_budget_s=self.retry_budget_s,
        )


# --- reading results -------------------------------------------------------------------------


def _read(
    answers: list[Answer],
    clusters: tuple[str, str],
    end: float,
    seconds: int,
    custom: tuple[CustomQuery, ...],
    parity_route: str | None = None,
) -> SampleResult:
    """The sample from the answers, in the plan's order: per side requests, 5xx, latency, then
    the custom queries; last the parity queries (see the module doc for the outcomes)."""
    failed = [a for a in answers if a.error is not None]
    if failed:
        return NoSample("error", describe_failures(failed, len(answers)))
    per_side = 3 + len(custom)
    parity: ParitySli | NoSample | None = None
    if parity_route is not None:
        parity = parity_sli(answers[2 * per_side :], parity_route)
    sides: list[SideCounts] = []
    latency_gaps: list[NoSample] = []
    custom_values: list[list[float]] = [[] for _ in custom]
    custom_gaps: list[list[NoSample]] = [[] for _ in custom]
    for index, cluster in enumerate(clusters):
        requests_a, errors_a, latency_a, *custom_a = answers[
            index * per_side : (index + 1) * per_side
        ]
        try:
            req = single_value(requests_a, missing=None)
            err = single_value(errors_a, missing=0.0)
        except Outcome as outcome:
            return NoSample(outcome.kind, f"{cluster}: {outcome}")
        try:
            hist = histogram(latency_a)
        except Outcome as outcome:
            hist = EMPTY_HISTOGRAM
            latency_gaps.append(NoSample(outcome.kind, f"{cluster}: {outcome}"))
        for values, outcomes, answer in zip(custom_values, custom_gaps, custom_a, strict=True):
            try:
                values.append(single_value(answer, missing=None))
            except Outcome as outcome:
                outcomes.append(NoSample(outcome.kind, f"{cluster}: {outcome}"))
        sides.append(SideCounts(requests=req, errors=err, latency=hist))
    gaps: dict[str, NoSample] = {}
    if latency_gaps:
        gaps[LATENCY_GAP] = merge_gaps(latency_gaps)
    values_by_name: dict[str, tuple[float, float]] = {}
    for query, values, query_gaps in zip(custom, custom_values, custom_gaps, strict=True):
        if query_gaps:
            gaps[custom_gap(query.name)] = merge_gaps(query_gaps)
        else:
            values_by_name[query.name] = (values[0], values[1])
    if isinstance(parity, NoSample):
        gaps[PARITY_GAP] = parity
    return Sample(
        start=end - seconds,
        end=end,
        baseline=sides[0],
        candidate=sides[1],
        custom=values_by_name,
        gaps=gaps,
        parity=parity if isinstance(parity, ParitySli) else None,
    )


def _factory(options: Mapping[str, str]) -> MetricsProvider:
    return PrometheusProvider.from_options(options)


FACTORY: Callable[[Mapping[str, str]], MetricsProvider] = _factory
"""The registry entry (``PROVIDERS["prometheus"]``)."""
