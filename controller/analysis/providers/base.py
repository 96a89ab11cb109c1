"""The ``MetricsProvider`` protocol and the registry of backends.

A provider turns "baseline cluster B and candidate cluster C over ``[start, end]``" into a
:class:`~controller.analysis.sli.Sample`, or a :class:`~controller.analysis.sli.NoSample`
saying why not (a query error, an empty result and NaN are three different outcomes, none of
them a pass). A metric that alone cannot be read (a side's latency histogram, a custom query)
is a gap of the sample (:attr:`~controller.analysis.sli.Sample.gaps`), not a missing sample:
the other SLOs are still judged. Backends: ``prometheus`` (PromQL over Prometheus' HTTP API) and
``envoy_admin`` (the embedded default: Envoy's own ``/stats/prometheus``).

The parity SLI (the comparator's counts of the route under rollout) comes from the provider
when asked for (``parity_route``: Prometheus scraping the comparator), or from a
:class:`ParitySource` (the comparator running in the controller's process).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from controller.analysis.sli import ParitySli, SampleResult


@dataclass(frozen=True)
class CustomQuery:
    """A policy's custom SLO query: ``template`` with ``{cluster}`` and ``{window}`` (e.g.
    ``2m``) replaced for each side."""

    name: str
    template: str


class MetricsProvider(Protocol):
    """A metrics backend."""

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
        """Counts of both clusters over ``[start, end]`` (epoch seconds), summed over every
        Envoy, and the custom queries' values; a metric that cannot be read while the others
        can is in :attr:`~controller.analysis.sli.Sample.gaps`. Never raises for a failing
        backend: that is a :class:`~controller.analysis.sli.NoSample` of kind ``error``.

        With ``parity_route`` (a gateway route's name), also the parity comparator's counts
        of that route (:attr:`~controller.analysis.sli.Sample.parity`), or why not
        (``gaps[PARITY_GAP]``)."""
        ...

    async def close(self) -> None:
        """Release connections and background tasks."""
        ...


class ParitySource(Protocol):
    """The parity comparator's counts, read without a metrics backend (the comparator in the
    controller's own process implements it)."""

    async def window(self, route: str, start: float, end: float) -> ParitySli | str:
        """The counts of mirrored requests of ``route`` over ``[start, end]`` (epoch
        seconds), or, as a string, why none exist (e.g. no request of that route was
        mirrored yet). Raising is a failure of the source (a query error, never no data)."""
        ...


ProviderFactory = Callable[[Mapping[str, str]], MetricsProvider]
"""Builds a provider from its options (e.g. ``{"url": "http://prometheus:9090"}``)."""


class UnknownProviderError(ValueError):
    """No metrics provider has that name."""


def make_provider(
    name: str, options: Mapping[str, str], registry: Mapping[str, ProviderFactory]
) -> MetricsProvider:
    """The provider ``name`` from ``registry``, built with ``options``.

    Raises:
        UnknownProviderError: ``name`` is not registered (the message lists those that are).
    """
    factory = registry.get(name)
    if factory is None:
        known = ", ".join(sorted(registry)) or "none"
        raise UnknownProviderError(f"unknown metrics provider {name!r} (known: {known})")
    return factory(options)
