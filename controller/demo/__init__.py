"""``sluice demo``: a real rollout on loopback (controller, Envoy, sample services, comparator,
Prometheus when on PATH, load), started, watched and stopped by one command."""
