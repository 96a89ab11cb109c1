"""Metrics providers, one module per backend behind a ``MetricsProvider`` protocol (issue 4)."""

from __future__ import annotations

from controller.analysis.providers import envoy_admin, prometheus
from controller.analysis.providers.base import ProviderFactory

PROVIDERS: dict[str, ProviderFactory] = {
    "envoy_admin": envoy_admin.FACTORY,
    "prometheus": prometheus.FACTORY,
}
"""Metrics providers by the name a policy gives (``make_provider(name, options, PROVIDERS)``)."""
