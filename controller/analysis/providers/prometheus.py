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
  (:func:`~controller.analysis.queries.parity_query`: matched, noisy, mismatched, error): an
  outcome without a series reads 0 (the comparator's counter is born on its first increment),
  none of the four with a series → ``gaps[PARITY_GAP] = NoSample("empty")`` (the comparator is
  not scraped, or nothing was mirrored yet, or under two scrapes in the window), NaN or
  infinite → ``nan``, not one value → ``error``; a failing query fails the sample, as above.

Latency histograms: the per-``le`` increases are made monotonic (a running maximum, as
Prometheus' own ``histogram_quantile`` does) because ``increase()`` extrapolates each bucket
series separately and can leave a lower bucket a hair above a higher one.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import json
import math
import re
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import requests
from prometheus_api_client.exceptions import PrometheusApiClientException
from prometheus_api_client.prometheus_connect import PrometheusConnect
from tenacity import (
    Retrying,
    retry_if_exception,
    stop_before_delay,
    stop_when_event_set,
    wait_exponential,
)
from urllib3.util.retry import Retry

from controller.analysis import queries
from controller.analysis.providers.base import CustomQuery, MetricsProvider
from controller.analysis.sli import (
    EMPTY_HISTOGRAM,
    LATENCY_GAP,
    PARITY_GAP,
    FailureKind,
    Histogram,
    NoSample,
    ParitySli,
    Sample,
    SampleResult,
    SideCounts,
    custom_gap,
    merge_gaps,
)

_STATUS = re.compile(r"HTTP Status Code (\d{3})")
_MIN_ATTEMPT_TIMEOUT_S = 0.2
_DEADLINE_SLACK_S = 1.0
MAX_WORKERS = 8
"""Threads of a provider's pool: the six queries of a sample without custom queries run at
once (with parity, four more wait their turn); kept under requests' connection pool (10 per
host) so that no connection is discarded."""


def http_status(exc: BaseException) -> int | None:
    """The HTTP status of a prometheus-api-client error (``HTTP Status Code 503 (...)``)."""
    if isinstance(exc, PrometheusApiClientException):
        match = _STATUS.search(str(exc))
        return int(match.group(1)) if match else None
    return None


def is_transient(exc: BaseException) -> bool:
    """Worth retrying: the network or the server failed, not the query.

    Transient: connection errors and timeouts (``requests``), HTTP 429 and 5xx (Prometheus
    answers 503 when a query times out or is aborted). Not transient: HTTP 400 (bad query),
    422 (the query cannot be executed), anything else.
    """
    if isinstance(exc, requests.ConnectionError | requests.Timeout):
        return True
    status = http_status(exc)
    return status is not None and (status == 429 or status >= 500)


@dataclass(frozen=True)
class _Answer:
    """One query's outcome: its result (prometheus-api-client's ``data.result``) or error."""

    query: str
    result: Any = None
    error: str | None = None
    attempts: int = 1


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
            plan += [
                queries.parity_query(parity_route, outcome, seconds)
                for outcome in queries.PARITY_OUTCOMES
            ]
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

    # --- one query, retried ------------------------------------------------------------------

    def _query(self, query: str, at: float, stop: threading.Event) -> _Answer:
        """Run ``query`` at time ``at`` (blocking; in a worker thread), retrying transient
        failures within the budget until ``stop`` is set. Never raises."""
        if stop.is_set():  # queued behind other queries until the sample gave up
            return _Answer(query, error="not run: the sample timed out", attempts=0)
        began = time.monotonic()
        attempts = 0

        def attempt() -> Any:
            nonlocal attempts
            if attempts and stop.is_set():  # woken from the backoff: no new attempt
                raise _Stopped("the sample gave up (timed out or cancelled)")
            attempts += 1
            timeout = self.timeout_s
            if attempts > 1:  # later attempts end with the budget
                remaining = self.retry_budget_s - (time.monotonic() - began)
                timeout = max(_MIN_ATTEMPT_TIMEOUT_S, min(timeout, remaining))
            return self._client.custom_query(
                query,
                params={"time": f"{at:.3f}", "timeout": f"{self.timeout_s:g}s"},
                timeout=timeout,  # type: ignore[arg-type]  # as in __init__
            )

        def sleep(seconds: float) -> None:
            stop.wait(seconds)  # the backoff ends early when the sample gives up

        retrying = Retrying(
            stop=stop_before_delay(self.retry_budget_s) | stop_when_event_set(stop),
            wait=wait_exponential(multiplier=0.1, min=0.1, max=2.0),
            retry=retry_if_exception(is_transient),
            sleep=sleep,
            reraise=True,
        )
        try:
            return _Answer(query, result=retrying(attempt), attempts=attempts)
        except Exception as exc:
            return _Answer(query, error=_error_text(exc), attempts=attempts)


# --- reading results -------------------------------------------------------------------------


def _read(
    answers: list[_Answer],
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
        return NoSample("error", _describe_failures(failed, len(answers)))
    per_side = 3 + len(custom)
    parity: ParitySli | NoSample | None = None
    if parity_route is not None:
        parity = _parity(answers[2 * per_side :], parity_route)
    sides: list[SideCounts] = []
    latency_gaps: list[NoSample] = []
    custom_values: list[list[float]] = [[] for _ in custom]
    custom_gaps: list[list[NoSample]] = [[] for _ in custom]
    for index, cluster in enumerate(clusters):
        requests_a, errors_a, latency_a, *custom_a = answers[
            index * per_side : (index + 1) * per_side
        ]
        try:
            req = _single_value(requests_a, missing=None)
            err = _single_value(errors_a, missing=0.0)
        except _Outcome as outcome:
            return NoSample(outcome.kind, f"{cluster}: {outcome}")
        try:
            hist = _histogram(latency_a)
        except _Outcome as outcome:
            hist = EMPTY_HISTOGRAM
            latency_gaps.append(NoSample(outcome.kind, f"{cluster}: {outcome}"))
        for values, outcomes, answer in zip(custom_values, custom_gaps, custom_a, strict=True):
            try:
                values.append(_single_value(answer, missing=None))
            except _Outcome as outcome:
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


def _parity(answers: list[_Answer], route: str) -> ParitySli | NoSample:
    """The comparator's counts from the answers of the :data:`~queries.PARITY_OUTCOMES`
    queries, in that order; an outcome without a series is 0, all four without: ``empty``."""
    values: dict[str, float] = {}
    for outcome, answer in zip(queries.PARITY_OUTCOMES, answers, strict=True):
        try:
            values[outcome] = _single_value(answer, missing=None)
        except _Outcome as problem:
            if problem.kind != "empty":
                return NoSample(problem.kind, f"parity of route {route!r}: {problem}")
    if not values:
        return NoSample(
            "empty",
            f"parity of route {route!r}: no {queries.PARITY_METRIC} series (the comparator"
            " is not scraped, no request of the route was mirrored yet, or the window holds"
            " under two scrapes)",
        )
    matched, noisy, mismatched = (values.get(o, 0.0) for o in ("matched", "noisy", "mismatched"))
    return ParitySli(
        compared=matched + noisy + mismatched,
        mismatched=mismatched,
        noisy=noisy,
        errors=values.get("error", 0.0),
    )


class _Stopped(Exception):
    """The sample stopped waiting for this query (not transient: ends the retries)."""


class _Outcome(Exception):
    """A result that is not a usable value: no series (``empty``), NaN or infinite (``nan``),
    or not the shape asked for (``error``: several series, a range vector, a string)."""

    def __init__(self, kind: FailureKind, message: str) -> None:
        super().__init__(message)
        self.kind: FailureKind = kind


def _describe_failures(failed: list[_Answer], total: int) -> str:
    """The first failure in full (query, attempts, error); the other failed queries by text
    only when their error differs (a stopped Prometheus fails every query the same way)."""
    first = failed[0]
    tries = "attempt" if first.attempts == 1 else "attempts"
    parts = [
        f"{len(failed)} of {total} queries failed; query {first.query!r} failed after"
        f" {first.attempts} {tries}: {first.error}"
    ]
    for answer in failed[1:]:
        if answer.error != first.error and _shape(answer.error) != _shape(first.error):
            parts.append(f"query {answer.query!r}: {answer.error}")
    return "; ".join(parts)


def _shape(error: str | None) -> str:
    """An error without its URL and positions, to group the same failure of several queries."""
    return re.sub(r"(url: \S+|\d+:\d+:|port=\d+)", "", error or "")


def _error_text(exc: BaseException) -> str:
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    if isinstance(exc, requests.RequestException) and reason is not None:
        # urllib3's MaxRetryError: its text repeats the whole URL; the reason is what failed.
        return f"{type(exc).__name__}: {_short(str(reason))}"
    status = http_status(exc)
    if status is not None:
        return f"HTTP {status}: {_short(_api_error(str(exc)))}"
    return f"{type(exc).__name__}: {_short(str(exc))}"


def _api_error(text: str) -> str:
    """Prometheus' ``errorType: error`` from prometheus-api-client's message, which ends with
    the response body as a bytes repr: ``HTTP Status Code 400 (b'{"status":"error",...}')``;
    the message itself when that does not parse."""
    match = re.search(r"\((b(['\"]).*\2)\)\s*$", text, re.DOTALL)
    if match:
        with contextlib.suppress(ValueError, SyntaxError, UnicodeDecodeError):
            body = json.loads(ast.literal_eval(match.group(1)))
            if isinstance(body, dict) and "error" in body:
                return f"{body.get('errorType', 'error')}: {body['error']}"
    return text


def _short(text: str, limit: int = 400) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _value(raw: Any, query: str) -> float:
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise _Outcome("nan", f"query {query!r} returned a non-number {raw!r}") from None
    if not math.isfinite(value):
        raise _Outcome("nan", f"query {query!r} returned {raw}")
    return value


def _single_value(answer: _Answer, *, missing: float | None) -> float:
    """The one value of an instant vector with one series, or of a scalar.

    ``missing``: the value of an empty vector (None: an empty vector is an ``empty`` outcome).
    """
    result = answer.result
    if _is_scalar(result):
        return _value(result[1], answer.query)
    if not isinstance(result, list):
        raise _Outcome("error", f"query {answer.query!r} returned {result!r}")
    if not result:
        if missing is None:
            raise _Outcome("empty", f"query {answer.query!r} returned no series")
        return missing
    if len(result) > 1:
        raise _Outcome(
            "error",
            f"query {answer.query!r} returned {len(result)} series where one value was"
            " expected (aggregate it, e.g. with sum())",
        )
    series = result[0]
    if not isinstance(series, dict) or "value" not in series:
        raise _Outcome(
            "error", f"query {answer.query!r} did not return an instant vector or a scalar"
        )
    return _value(series["value"][1], answer.query)


def _is_scalar(result: Any) -> bool:
    return (
        isinstance(result, list)
        and len(result) == 2
        and isinstance(result[0], int | float)
        and isinstance(result[1], str)
    )


def _histogram(answer: _Answer) -> Histogram:
    """``sum by (le)`` series → a cumulative :class:`Histogram` (running maximum applied)."""
    result = answer.result
    if not isinstance(result, list) or not result:
        raise _Outcome("empty", f"query {answer.query!r} returned no series")
    buckets: list[tuple[float, float]] = []
    for series in result:
        le = series.get("metric", {}).get("le") if isinstance(series, dict) else None
        if le is None or "value" not in series:
            raise _Outcome("error", f"query {answer.query!r} returned a series without 'le'")
        buckets.append((float(le), _value(series["value"][1], answer.query)))
    buckets.sort()
    if not math.isinf(buckets[-1][0]):
        raise _Outcome("empty", f"query {answer.query!r} returned no +Inf bucket")
    counts: list[float] = []
    for _, count in buckets:
        counts.append(max(count, counts[-1]) if counts else count)
    return Histogram(tuple(b for b, _ in buckets), tuple(counts))


def _factory(options: Mapping[str, str]) -> MetricsProvider:
    return PrometheusProvider.from_options(options)


FACTORY: Callable[[Mapping[str, str]], MetricsProvider] = _factory
"""The registry entry (``PROVIDERS["prometheus"]``)."""
