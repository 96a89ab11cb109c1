"""PromQL results read as values: one value of an instant vector or a scalar, and latency
bucket series as a :class:`~controller.analysis.sli.Histogram` (the ``prometheus`` provider).

A result that is not a usable value raises :class:`Outcome`, whose ``kind`` is the
:class:`~controller.analysis.sli.NoSample` kind the provider reports: no series (``empty``),
NaN or an infinite value (``nan``), not the shape asked for (``error``).

Latency histograms: the per-``le`` increases are made monotonic (a running maximum, as
Prometheus' own ``histogram_quantile`` does) because ``increase()`` extrapolates each bucket
series separately and can leave a lower bucket a hair above a higher one.

Source: the result formats of Prometheus' HTTP API
(prometheus.io/docs/prometheus/latest/querying/api/#expression-query-result-formats).
"""

from __future__ import annotations

import math
from typing import Any

from controller.analysis.providers.prometheus_query import Answer
from controller.analysis.sli import FailureKind, Histogram


class Outcome(Exception):
    """A result that is not a usable value: no series (``empty``), NaN or infinite (``nan``),
    or not the shape asked for (``error``: several series, a range vector, a string)."""

    def __init__(self, kind: FailureKind, message: str) -> None:
        super().__init__(message)
        self.kind: FailureKind = kind


def _value(raw: Any, query: str) -> float:
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise Outcome("nan", f"query {query!r} returned a non-number {raw!r}") from None
    if not math.isfinite(value):
        raise Outcome("nan", f"query {query!r} returned {raw}")
    return value


def single_value(answer: Answer, *, missing: float | None) -> float:
    """The one value of an instant vector with one series, or of a scalar.

    ``missing``: the value of an empty vector (None: an empty vector is an ``empty`` outcome).
    """
    result = answer.result
    if _is_scalar(result):
        return _value(result[1], answer.query)
    if not isinstance(result, list):
        raise Outcome("error", f"query {answer.query!r} returned {result!r}")
    if not result:
        if missing is None:
            raise Outcome("empty", f"query {answer.query!r} returned no series")
        return missing
    if len(result) > 1:
        raise Outcome(
            "error",
            f"query {answer.query!r} returned {len(result)} series where one value was"
            " expected (aggregate it, e.g. with sum())",
        )
    series = result[0]
    if not isinstance(series, dict) or "value" not in series:
        raise Outcome(
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


def histogram(answer: Answer) -> Histogram:
    """``sum by (le)`` series → a cumulative :class:`Histogram` (running maximum applied)."""
    result = answer.result
    if not isinstance(result, list) or not result:
        raise Outcome("empty", f"query {answer.query!r} returned no series")
    buckets: list[tuple[float, float]] = []
    for series in result:
        le = series.get("metric", {}).get("le") if isinstance(series, dict) else None
        if le is None or "value" not in series:
            raise Outcome("error", f"query {answer.query!r} returned a series without 'le'")
        buckets.append((float(le), _value(series["value"][1], answer.query)))
    buckets.sort()
    if not math.isinf(buckets[-1][0]):
        raise Outcome("empty", f"query {answer.query!r} returned no +Inf bucket")
    counts: list[float] = []
    for _, count in buckets:
        counts.append(max(count, counts[-1]) if counts else count)
    return Histogram(tuple(b for b, _ in buckets), tuple(counts))
