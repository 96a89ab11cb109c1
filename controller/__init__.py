"""Sluice: a progressive traffic-shifting controller for Envoy.

Layers (see docs/architecture.md and the import-linter contracts in pyproject.toml):
``policy`` (pure models) → ``rollout`` (pure state machine) → ``xds`` / ``analysis`` /
``parity`` → ``store`` → ``k8s`` → ``runtime`` (wiring) → ``cli``.
"""

__version__ = "0.1.0"
