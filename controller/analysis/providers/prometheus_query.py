"""One PromQL instant query run with retries, and the texts of its failures (the
``prometheus`` provider's query-running part).

:func:`run_query` runs a query in a worker thread (prometheus-api-client is synchronous) and
retries transient failures (connection refused or reset, timeouts, HTTP 429 and 5xx:
:func:`is_transient`) with exponential backoff (tenacity) until the retry budget is spent or
the sample gives up; a bad query (HTTP 400, 422) fails at once. It never raises: the outcome is
an :class:`Answer`, its ``result`` prometheus-api-client's ``data.result`` or its ``error`` a
short text (:func:`describe_failures` words a sample's failed queries).

Source: Prometheus' HTTP API (prometheus.io/docs/prometheus/latest/querying/api/),
``/api/v1/query`` with ``time`` and ``timeout``.
"""

from __future__ import annotations

import ast
import contextlib
import json
import re
import threading
import time
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
class Answer:
    """One query's outcome: its result (prometheus-api-client's ``data.result``) or error."""

    query: str
    result: Any = None
    error: str | None = None
    attempts: int = 1


def run_query(
    client: PrometheusConnect,
    query: str,
    at: float,
    stop: threading.Event,
    *,
    timeout_s: float,
    retry_budget_s: float,
) -> Answer:
    """Run ``query`` at time ``at`` (epoch seconds; blocking: call it in a worker thread),
    retrying transient failures within ``retry_budget_s`` seconds until ``stop`` is set.

    Each attempt waits ``timeout_s`` seconds at most (later attempts no longer than what
    remains of the budget, but at least 0.2 s), and Prometheus is asked to give up after
    ``timeout_s`` too. Never raises: a failure is an :class:`Answer` with ``error`` set.
    """
    if stop.is_set():  # queued behind other queries until the sample gave up
        return Answer(query, error="not run: the sample timed out", attempts=0)
    began = time.monotonic()
    attempts = 0

    def attempt() -> Any:
        nonlocal attempts
        if attempts and stop.is_set():  # woken from the backoff: no new attempt
            raise _Stopped("the sample gave up (timed out or cancelled)")
        attempts += 1
        timeout = timeout_s
        if attempts > 1:  # later attempts end with the budget
            remaining = retry_budget_s - (time.monotonic() - began)
            timeout = max(_MIN_ATTEMPT_TIMEOUT_S, min(timeout, remaining))
        return client.custom_query(
            query,
            params={"time": f"{at:.3f}", "timeout": f"{timeout_s:g}s"},
            timeout=timeout,  # type: ignore[arg-type]  # annotated int; requests takes a float
        )

    def sleep(seconds: float) -> None:
        stop.wait(seconds)  # the backoff ends early when the sample gives up

    retrying = Retrying(
        stop=stop_before_delay(retry_budget_s) | stop_when_event_set(stop),
        wait=wait_exponential(multiplier=0.1, min=0.1, max=2.0),
        retry=retry_if_exception(is_transient),
        sleep=sleep,
        reraise=True,
    )
    try:
        return Answer(query, result=retrying(attempt), attempts=attempts)
    except Exception as exc:
        return Answer(query, error=_error_text(exc), attempts=attempts)


class _Stopped(Exception):
    """The sample stopped waiting for this query (not transient: ends the retries)."""


def describe_failures(failed: list[Answer], total: int) -> str:
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
