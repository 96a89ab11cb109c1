"""Kubernetes adapters: watches, Lease leader election, EndpointSlices → EDS (issue 6)."""
