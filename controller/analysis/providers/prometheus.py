"""The ``prometheus`` metrics provider: Envoy's per-cluster stats read back through PromQL.

Each :meth:`PrometheusProvider.sample` runs, for the baseline and the candidate, the three
count queries of :mod:`controller.analysis.queries` (requests, 5xx, latency buckets) and the
policy's custom queries, as instant queries evaluated at ``end`` over the window
``[end - W, end]`` (W: ``end - start`` rounded to whole seconds; the sample reports the window
it measured). The queries run concurrently, each in a worker thread (prometheus-api-client is
synchronous), and each retries transient failures (connection refused or reset, timeouts,
HTTP 429 and 5xx) with exponential backoff until the retry budget is spent; a bad query
(HTTP 400, 422) fails at once.

Outcomes, none of them a pass:

- any query failed → ``NoSample("error")``, the message naming the query, the error and the
  attempts made;
- a side's request query, the latency query or a custom query returned no series →
  ``NoSample("empty")`` (unknown cluster, nothing scraped yet, or fewer than two samples in
  the window: ``increase()`` needs two). The 5xx query returning no series reads 0: Envoy
  creates that counter on the first 5xx;
- a value is NaN (or infinite) → ``NoSample("nan")`` (e.g. a custom ratio over no requests).

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
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import requests
from prometheus_api_client.exceptions import PrometheusApiClientException
from prometheus_api_client.prometheus_connect import PrometheusConnect
from tenacity import (
    Retrying,
    retry_if_exception,
    stop_before_delay,
    wait_exponential,
)
from urllib3.util.retry import Retry

from controller.analysis import queries
from controller.analysis.providers.base import CustomQuery, MetricsProvider
from controller.analysis.sli import (
    FailureKind,
    Histogram,
    NoSample,
    Sample,
    SampleResult,
    SideCounts,
)

_STATUS = re.compile(r"HTTP Status Code (\d{3})")
_MIN_ATTEMPT_TIMEOUT_S = 0.2


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
            budget, :meth:`sample` returns within about ``max(timeout_s, retry_budget_s)``.
        headers: extra HTTP headers (e.g. ``Authorization``).
    """

    def __init__(
        self,
        url: str,
        timeout_s: float = 5.0,
        retry_budget_s: float = 10.0,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        if timeout_s <= 0 or retry_budget_s < 0:
            raise ValueError("timeout_s must be > 0 and retry_budget_s >= 0")
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s
        self.retry_budget_s = retry_budget_s
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
        """Close the HTTP session."""
        self._client.close()

    async def sample(
        self,
        baseline: str,
        candidate: str,
        start: float,
        end: float,
        custom: tuple[CustomQuery, ...] = (),
    ) -> SampleResult:
        """See :meth:`MetricsProvider.sample`; the outcomes are listed in the module doc.

        Raises:
            ValueError: ``end`` is not after ``start``.
            QueryTemplateError: a custom query template is refused (a policy error).
        """
        seconds = queries.window_seconds(start, end)
        names = ("requests", "errors", "latency")
        plan: list[str] = []
        for cluster in (baseline, candidate):
            plan += [
                queries.requests_query(cluster, seconds),
                queries.errors_query(cluster, seconds),
                queries.latency_buckets_query(cluster, seconds),
            ]
            plan += [queries.render_custom(c.template, cluster, seconds) for c in custom]
        answers = await asyncio.gather(*(asyncio.to_thread(self._query, q, end) for q in plan))

        failed = [a for a in answers if a.error is not None]
        if failed:
            return NoSample("error", _describe_failures(failed, len(answers)))
        per_side = len(names) + len(custom)
        sides: list[SideCounts] = []
        custom_values: list[list[float]] = [[] for _ in custom]
        for index, cluster in enumerate((baseline, candidate)):
            requests_a, errors_a, latency_a, *custom_a = answers[
                index * per_side : (index + 1) * per_side
            ]
            try:
                req = _single_value(requests_a, missing=None)
                err = _single_value(errors_a, missing=0.0)
                hist = _histogram(latency_a)
                for slot, answer in zip(custom_values, custom_a, strict=True):
                    slot.append(_single_value(answer, missing=None))
            except _Outcome as outcome:
                return NoSample(outcome.kind, f"{cluster}: {outcome}")
            sides.append(SideCounts(requests=req, errors=err, latency=hist))
        return Sample(
            start=end - seconds,
            end=end,
            baseline=sides[0],
            candidate=sides[1],
            custom={c.name: (v[0], v[1]) for c, v in zip(custom, custom_values, strict=True)},
        )

    # --- one query, retried ------------------------------------------------------------------

    def _query(self, query: str, at: float) -> _Answer:
        """Run ``query`` at time ``at`` (blocking; in a worker thread), retrying transient
        failures within the budget. Never raises."""
        began = time.monotonic()
        attempts = 0

        def attempt() -> Any:
            nonlocal attempts
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

        retrying = Retrying(
            stop=stop_before_delay(self.retry_budget_s),
            wait=wait_exponential(multiplier=0.1, min=0.1, max=2.0),
            retry=retry_if_exception(is_transient),
            reraise=True,
        )
        try:
            return _Answer(query, result=retrying(attempt), attempts=attempts)
        except Exception as exc:
            return _Answer(query, error=_error_text(exc), attempts=attempts)


# --- reading results -------------------------------------------------------------------------


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
