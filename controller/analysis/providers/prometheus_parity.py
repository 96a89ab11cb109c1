"""The parity SLI through Prometheus: the comparator's four counts of a route, queried and
read into a :class:`~controller.analysis.sli.ParitySli` (the ``prometheus`` provider's
``parity_route``).

The queries are :func:`~controller.analysis.queries.parity_query`, one per outcome of
:data:`~controller.analysis.queries.PARITY_OUTCOMES` (matched, noisy, mismatched, error). An
outcome without a series reads 0 (the comparator's counter is born on its first increment);
none of the four with a series, or all four at 0, → ``NoSample("empty")`` (the comparator
is not scraped, nothing was mirrored in the window, or under two scrapes in it); NaN or
infinite → ``nan``; not one value → ``error``. The provider puts a
:class:`~controller.analysis.sli.NoSample` under ``gaps[PARITY_GAP]``.
"""

from __future__ import annotations

from controller.analysis import queries
from controller.analysis.providers.prometheus_query import Answer
from controller.analysis.providers.prometheus_values import Outcome, single_value
from controller.analysis.sli import NoSample, ParitySli


def parity_plan(route: str, seconds: int) -> list[str]:
    """The queries of ``route``'s counts over the last ``seconds`` seconds, in the order of
    :data:`~controller.analysis.queries.PARITY_OUTCOMES` (what :func:`parity_sli` reads)."""
    return [queries.parity_query(route, outcome, seconds) for outcome in queries.PARITY_OUTCOMES]


def parity_sli(answers: list[Answer], route: str) -> ParitySli | NoSample:
    """The comparator's counts from the answers of the :data:`~queries.PARITY_OUTCOMES`
    queries, in that order; an outcome without a series is 0, all four without: ``empty``."""
    values: dict[str, float] = {}
    for outcome, answer in zip(queries.PARITY_OUTCOMES, answers, strict=True):
        try:
            values[outcome] = single_value(answer, missing=None)
        except Outcome as problem:
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
    if matched + noisy + mismatched + values.get("error", 0.0) <= 0:
        # The comparator exports every outcome at 0 from the moment it compares a route: zero
        # everywhere is no mirrored request in the window, the same gap as no series.
        return NoSample(
            "empty",
            f"parity of route {route!r}: no mirrored request was compared in the window (is"
            " Envoy mirroring to the comparator's cluster?)",
        )
    return ParitySli(
        compared=matched + noisy + mismatched,
        mismatched=mismatched,
        noisy=noisy,
        errors=values.get("error", 0.0),
    )
