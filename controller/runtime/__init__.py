"""Wiring of a running controller: xDS server, admin API, persisted state, signals."""
