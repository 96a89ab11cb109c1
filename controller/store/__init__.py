"""Durable state of the controller (SQLite embedded default; Kubernetes CR status later)."""
