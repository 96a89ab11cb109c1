"""Metrics providers, one module per backend behind a ``MetricsProvider`` protocol (issue 4).

The registry is lazy: a backend's module is imported when its factory is first called, not
when this package is. Each backend costs ~0.3 s of import and 15-25 MB resident (httpx;
prometheus-api-client and requests, and pandas with the versions of prometheus-api-client
that import it eagerly), for a controller that uses one backend or none.
"""

from __future__ import annotations

from collections.abc import Mapping

from controller.analysis.providers.base import MetricsProvider, ProviderFactory


def _envoy_admin(options: Mapping[str, str]) -> MetricsProvider:
    from controller.analysis.providers import envoy_admin

    return envoy_admin.FACTORY(options)


def _prometheus(options: Mapping[str, str]) -> MetricsProvider:
    from controller.analysis.providers import prometheus

    return prometheus.FACTORY(options)


PROVIDERS: dict[str, ProviderFactory] = {
    "envoy_admin": _envoy_admin,
    "prometheus": _prometheus,
}
"""Metrics providers by the name a policy gives (``make_provider(name, options, PROVIDERS)``);
each factory imports its backend's module on first use."""
