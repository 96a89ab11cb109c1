"""Analysis: PromQL templates over Envoy stats, the pure judge, and metrics providers.

Arrives with issue 4.
"""
