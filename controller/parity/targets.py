"""Where the comparator sends a mirrored request: a cluster's static endpoints, in turn.

The gateway file gives each cluster its endpoints (``spec.clusters[*].endpoints``, what Sluice
serves Envoy over EDS); the comparator reads them from there rather than asking Envoy, so it
reaches the same upstreams Envoy does without going through Envoy again (which would mirror
the request a second time).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

from controller.policy.gateway import Gateway


class UnknownCluster(ValueError):
    """A route under comparison names a cluster the gateway does not declare."""


class Targets:
    """``(host, port)`` of each cluster's endpoints, handed out round robin.

    Weights of endpoints are ignored: the comparator sends a few requests per mirrored one and
    spreading them evenly is enough (Envoy's ``ROUND_ROBIN`` without weights).
    """

    def __init__(self, gateway: Gateway) -> None:
        self._urls: dict[str, tuple[tuple[str, int], ...]] = {
            cluster.name: tuple((e.address, e.port) for e in cluster.endpoints)
            for cluster in gateway.spec.clusters
        }
        self._turns: dict[str, Iterator[tuple[str, int]]] = {
            name: itertools.cycle(urls) for name, urls in self._urls.items()
        }

    def check(self, cluster: str) -> None:
        """Raise :class:`UnknownCluster` unless the gateway declares ``cluster``."""
        if cluster not in self._urls:
            known = ", ".join(sorted(self._urls)) or "none"
            raise UnknownCluster(f"cluster {cluster!r} is not in the gateway (known: {known})")

    def endpoints(self, cluster: str) -> tuple[tuple[str, int], ...]:
        """All ``(host, port)`` of ``cluster``, in file order.

        Raises:
            UnknownCluster: the gateway does not declare it.
        """
        self.check(cluster)
        return self._urls[cluster]

    def next(self, cluster: str) -> tuple[str, int]:
        """The next ``(host, port)`` of ``cluster`` (round robin over its endpoints).

        Raises:
            UnknownCluster: the gateway does not declare it.
        """
        try:
            return next(self._turns[cluster])
        except KeyError:
            self.check(cluster)
            raise
