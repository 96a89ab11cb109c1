"""What the judge reads: per-side request counts, 5xx counts and latency histograms over a window,
and the parity comparator's counts of the route under rollout.

Both metrics providers (Prometheus, Envoy's admin ``/stats/prometheus``) reduce Envoy's
per-cluster stats to these values, summed over every Envoy:

- ``requests``: ``envoy_cluster_upstream_rq_total`` increase over the window;
- ``errors``: ``envoy_cluster_upstream_rq_xx{envoy_response_code_class="5"}`` increase;
- ``latency``: ``envoy_cluster_upstream_rq_time_bucket`` increase per ``le`` (milliseconds,
  cumulative counts, ascending bounds, the last one ``+Inf``).

The parity comparator (tap-compare, issue 5) counts, per route, the mirrored requests it
compared (``sluice_parity_requests_total{route, outcome}``): :class:`ParitySli`.

Pure data, no I/O. Counts are floats: Prometheus' ``increase()`` extrapolates to the window's
edges and returns non-integers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal


@dataclass(frozen=True)
class Histogram:
    """A cumulative latency histogram: ``bounds`` (ms, ascending, the last ``inf``) and
    ``counts[i]`` = requests that took at most ``bounds[i]`` ms (Prometheus ``le`` semantics).

    Raises:
        ValueError: bounds and counts differ in length, bounds are not strictly ascending, the
            last bound is not ``inf``, or counts decrease.
    """

    bounds: tuple[float, ...]
    counts: tuple[float, ...]

    def __post_init__(self) -> None:
        if len(self.bounds) != len(self.counts):
            raise ValueError("bounds and counts must have the same length")
        if self.bounds and not math.isinf(self.bounds[-1]):
            raise ValueError("the last bound must be +Inf")
        if any(b >= a for a, b in zip(self.bounds[1:], self.bounds, strict=False)):
            raise ValueError("bounds must be strictly ascending")
        if any(b < a - 1e-9 for a, b in zip(self.counts, self.counts[1:], strict=False)):
            raise ValueError("cumulative counts must not decrease")

    @property
    def total(self) -> float:
        """Requests counted (the ``+Inf`` bucket); 0 for an empty histogram."""
        return self.counts[-1] if self.counts else 0.0

    def above(self, bound_ms: float) -> float:
        """Requests slower than ``bound_ms``, which must be one of :attr:`bounds`.

        Raises:
            ValueError: ``bound_ms`` is not a bucket bound (exceedance is only exact at one).
        """
        try:
            index = self.bounds.index(bound_ms)
        except ValueError:
            raise ValueError(f"{bound_ms} ms is not a bucket bound") from None
        return self.total - self.counts[index]

    def bound_at_or_above(self, value_ms: float) -> float:
        """The smallest bucket bound >= ``value_ms`` (``inf`` when none)."""
        for bound in self.bounds:
            if bound >= value_ms:
                return bound
        return math.inf

    def bound_at_or_below(self, value_ms: float) -> float:
        """The largest finite bucket bound <= ``value_ms`` (``-inf`` when none)."""
        best = -math.inf
        for bound in self.bounds:
            if bound > value_ms or math.isinf(bound):
                break
            best = bound
        return best

    def quantile(self, q: float) -> float | None:
        """The upper bound of the bucket holding quantile ``q`` (0 < q < 1): an upper estimate,
        never an interpolation (``histogram_quantile`` interpolates linearly inside a bucket;
        the judge does not use it for decisions). None for an empty histogram."""
        if not 0 < q < 1:
            raise ValueError("q must be in (0, 1)")
        if self.total <= 0:
            return None
        target = q * self.total
        for bound, count in zip(self.bounds, self.counts, strict=True):
            if count >= target:
                return bound
        return math.inf

    def plus(self, other: Histogram) -> Histogram:
        """The sum of two histograms with the same bounds (an empty one is neutral).

        Raises:
            ValueError: both are non-empty and their bounds differ.
        """
        if not self.bounds:
            return other
        if not other.bounds:
            return self
        if self.bounds != other.bounds:
            raise ValueError("cannot add histograms with different bucket bounds")
        return Histogram(
            self.bounds, tuple(a + b for a, b in zip(self.counts, other.counts, strict=True))
        )


EMPTY_HISTOGRAM = Histogram((), ())


@dataclass(frozen=True)
class SideCounts:
    """What one side (a cluster) served over a window, summed over every Envoy."""

    requests: float
    errors: float
    latency: Histogram = EMPTY_HISTOGRAM

    @property
    def attempts(self) -> float:
        """The requests the error rate is out of: ``max(requests, errors)``. Envoy counts the
        503s it answers itself (upstream connect failure, overflow) in ``upstream_rq_xx`` but
        not in ``upstream_rq_total``; a candidate that is down has errors and no requests."""
        return max(self.requests, self.errors)

    @property
    def error_rate(self) -> float | None:
        """5xx / :attr:`attempts` (a ratio, 0-1); None without any."""
        return self.errors / self.attempts if self.attempts > 0 else None


FailureKind = Literal["error", "empty", "nan"]
"""Why a provider has no sample: the query failed (backend down, bad query, timeout), the
result was empty (no series: nothing scraped yet, wrong cluster name), or it was NaN (0/0)."""


@dataclass(frozen=True)
class NoSample:
    """A provider's answer when it has no usable sample (or, in :attr:`Sample.gaps`, no
    usable value for one metric); never a pass.

    Attributes:
        kind: see :data:`FailureKind`.
        message: what failed, for people (the query and the backend's error).
    """

    kind: FailureKind
    message: str


_SEVERITY: tuple[FailureKind, ...] = ("error", "nan", "empty")


def merge_gaps(gaps: Sequence[NoSample]) -> NoSample:
    """One gap for a metric unreadable on one side or both: the messages joined, the kind the
    most serious of theirs (``error`` before ``nan`` before ``empty``).

    Raises:
        ValueError: ``gaps`` is empty.
    """
    if not gaps:
        raise ValueError("no gaps to merge")
    kind = min((g.kind for g in gaps), key=_SEVERITY.index)
    return NoSample(kind, "; ".join(g.message for g in gaps))


LATENCY_GAP = "latency"
"""The :attr:`Sample.gaps` key of a side's latency histogram that could not be read."""


PARITY_GAP = "parity"
"""The :attr:`Sample.gaps` key of the parity comparator's counts that could not be read (no
series for the route, NaN, a provider that cannot see the comparator)."""


def custom_gap(name: str) -> str:
    """The :attr:`Sample.gaps` key of custom SLO ``name``'s query."""
    return f"custom:{name}"


@dataclass(frozen=True)
class ParitySli:
    """The parity comparator's counts of one route over a window (floats: Prometheus'
    ``increase()`` extrapolates).

    Attributes:
        compared: mirrored requests both the baseline (primary) and the candidate answered
            (any status: a 5xx is a reply); ``matched + noisy + mismatched``.
        mismatched: compared requests with at least one difference that is not noise.
        noisy: compared requests whose differences were all noise (the baseline's replicas
            differ there too); not mismatches.
        errors: mirrored requests not compared: a target could not be reached or timed out.

    Raises:
        ValueError: a negative count, or more mismatched or noisy requests than compared.
    """

    compared: float
    mismatched: float
    noisy: float
    errors: float

    def __post_init__(self) -> None:
        if min(self.compared, self.mismatched, self.noisy, self.errors) < 0:
            raise ValueError(f"negative parity counts: {self}")
        # A hair of slack: increase() extrapolates each outcome's series separately.
        if self.mismatched + self.noisy > self.compared * (1 + 1e-9) + 1e-9:
            raise ValueError(f"more mismatched and noisy requests than compared: {self}")

    @property
    def matched(self) -> float:
        """Compared requests without any difference."""
        return max(0.0, self.compared - self.mismatched - self.noisy)

    @property
    def mismatch_rate(self) -> float | None:
        """``mismatched / compared`` (a ratio, 0-1); None before any request was compared."""
        return self.mismatched / self.compared if self.compared > 0 else None


@dataclass(frozen=True)
class Sample:
    """Both sides over the same window ``[start, end]`` (epoch seconds).

    Attributes:
        custom: the values of custom SLO queries by SLO name, ``(baseline, candidate)``.
        gaps: metrics that could not be read while the rest could, keyed by
            :data:`LATENCY_GAP`, :data:`PARITY_GAP` or :func:`custom_gap`, with why (no data
            is decided per SLO: a candidate that is down from the start has no latency
            histogram at all, yet its errors must still be judged). A missing latency
            histogram reads as :data:`EMPTY_HISTOGRAM`; a custom SLO with a gap has no entry
            in ``custom``; parity with a gap is None.
        warnings: for people, about a partial sample (e.g. some Envoys could not be scraped
            and were left out); shown with the verdict.
        parity: the parity comparator's counts of the route under rollout, when the policy
            has a parity SLO and they could be read; else None, and ``gaps[PARITY_GAP]`` says
            why when they were asked for.
    """

    start: float
    end: float
    baseline: SideCounts
    candidate: SideCounts
    custom: dict[str, tuple[float, float]] = field(default_factory=dict)
    gaps: dict[str, NoSample] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()
    parity: ParitySli | None = None


SampleResult = Sample | NoSample
