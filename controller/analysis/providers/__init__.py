"""Metrics providers, one module per backend behind a ``MetricsProvider`` protocol (issue 4)."""
