"""The weight primitive: set one route's ``weighted_clusters`` and await the ACK.

This is what the rollout engine moves traffic with. A change is persisted (through the
``persist`` hook) before it is served, so a restarted controller serves the weights Envoy may
already have, never a default. The same controller serves the live endpoints of ``kubernetes``
clusters (:meth:`WeightController.set_endpoints`): an endpoint change moves the EDS version
only, never a weight.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection, Mapping

from controller.policy.gateway import Endpoint, Gateway
from controller.xds import typeurls
from controller.xds.acks import AckResult, AckWaiter
from controller.xds.cache import SnapshotCache
from controller.xds.resources import (
    EndpointsByCluster,
    RouteOptions,
    RouteOptionsByRoute,
    RouteWeights,
    build_snapshot,
    effective_weights,
)
from controller.xds.snapshot import Snapshot
from controller.xds.weight_changes import (
    GatewayChange,
    PersistError,
    PersistHook,
    WeightChange,
    kept_endpoints,
)

__all__ = ["GatewayChange", "PersistError", "PersistHook", "WeightChange", "WeightController"]

log = logging.getLogger(__name__)

_Served = tuple[dict[str, int] | None, RouteOptions | None]
"""A route's weight override and options (None, None: the gateway file's own)."""


class WeightController:
    """Owns the gateway and the current weight overrides, and builds snapshots from them.

    Args:
        gateway: the checked gateway.
        cache: the snapshot cache the ADS server serves from.
        weights: persisted overrides to start from (route → cluster → weight).
        persist: hook saving a route's weights durably before they are served.
        options: rollout options to start with, by route (forcing header, sticky hashing).
            They are not persisted here: the rollout store is their source.
        endpoints: live endpoints to start with, by ``kubernetes`` cluster (such a cluster
            left out serves an empty assignment until :meth:`set_endpoints`).

    Raises:
        ValueError: ``weights``, ``options`` or ``endpoints`` name unknown routes or clusters
            (see ``build_snapshot``).
    """

    def __init__(
        self,
        gateway: Gateway,
        cache: SnapshotCache,
        weights: RouteWeights | None = None,
        persist: PersistHook | None = None,
        options: RouteOptionsByRoute | None = None,
        endpoints: EndpointsByCluster | None = None,
    ) -> None:
        self._gateway = gateway
        self._cache = cache
        self._weights: dict[str, dict[str, int]] = {r: dict(w) for r, w in (weights or {}).items()}
        self._options: dict[str, RouteOptions] = dict(options or {})
        # Per route, the last weights (and options) every target ACKed (None: the gateway's
        # own): what a NACKed change goes back to. What a controller starts with was served
        # before: taken as good.
        self._last_good: dict[str, _Served] = {
            r: (self._weights.get(r), self._options.get(r))
            for r in set(self._weights) | set(self._options)
        }
        self._endpoints: dict[str, tuple[Endpoint, ...]] = {
            c: tuple(e) for c, e in (endpoints or {}).items()
        }
        self._route_waiters: dict[str, AckWaiter] = {}  # the latest change of each route
        self._endpoint_waiters: dict[str, AckWaiter] = {}  # the latest change of each cluster
        self._persist = persist
        self._lock = asyncio.Lock()
        cache.set_snapshot(self._build(gateway, self._weights, self._options, "start"))

    @property
    def gateway(self) -> Gateway:
        """The gateway being served."""
        return self._gateway

    def options(self, route: str) -> RouteOptions | None:
        """The rollout options served on ``route``, if any."""
        return self._options.get(route)

    def routes_with_options(self) -> set[str]:
        """Routes served with rollout options now."""
        return set(self._options)

    def endpoints(self) -> dict[str, tuple[Endpoint, ...]]:
        """The live endpoints served for ``kubernetes`` clusters, by cluster name (clusters
        never given any are left out: they serve an empty assignment)."""
        return dict(self._endpoints)

    def current(self) -> dict[str, dict[str, int]]:
        """Every route's served weights (routes with weighted clusters or an override)."""
        out: dict[str, dict[str, int]] = {}
        for name, route in self._gateway.routes().items():
            eff = effective_weights(route, self._weights.get(name))
            if eff is not None:
                out[name] = {w.cluster: w.weight for w in eff}
        return out

    async def replace_gateway(
        self,
        gateway: Gateway,
        timeout_s: float = 10.0,
        endpoints: EndpointsByCluster | None = None,
    ) -> GatewayChange:
        """Serve another gateway with the current weights (a gateway file reload) and wait for
        the connected nodes to ACK every type it changes.

        When a node NACKs, the previous gateway is served again (unless something else changed
        meanwhile): Envoy kept it, and a node connecting later must not get the rejected one.

        Live endpoints are kept for the ``kubernetes`` clusters whose Service (name, namespace,
        port) is the same in the new gateway; the others are dropped (a new Service's
        endpoints come from its own watch through :meth:`set_endpoints`). ``endpoints``
        (the new gateway's ``kubernetes`` clusters, e.g. from a source already synced on the
        new gateway) are served with it, over the kept ones: no 503 window for a new Service.

        Raises:
            ValueError: the current weights name a route or cluster the new gateway lacks, or
                ``endpoints`` a cluster that is not one of its ``kubernetes`` clusters; nothing
                changes then.
        """
        async with self._lock:
            old_gateway, old, old_endpoints = self._gateway, self._cache.snapshot, self._endpoints
            kept = kept_endpoints(old_gateway, gateway, self._endpoints)
            kept.update((c, tuple(e)) for c, e in (endpoints or {}).items())
            snapshot = build_snapshot(
                gateway,
                self._weights,
                label=f"gateway {gateway.metadata.name}",
                options=self._options,
                endpoints=kept,
            )
            self._gateway = gateway
            self._endpoints = kept
            self._cache.set_snapshot(snapshot)
            generation = self._cache.generation
            changed = [t for t in typeurls.PUSH_ORDER if snapshot.version(t) != old.version(t)]
            # Registered before any stream runs: no ACK can be missed.
            waiters = [
                self._cache.watch(t, snapshot.version(t) or "", None, generation) for t in changed
            ]
        results = await asyncio.gather(*(self._cache.wait(w, timeout_s) for w in waiters))
        acks = dict(zip(changed, results, strict=True))
        reverted = False
        if any(r.outcome == "nacked" for r in results):
            async with self._lock:
                if self._gateway is gateway:
                    # Endpoints that changed meanwhile are newer than the old ones.
                    endpoints = {
                        **old_endpoints,
                        **kept_endpoints(gateway, old_gateway, self._endpoints),
                    }
                    try:
                        previous = build_snapshot(
                            old_gateway,
                            self._weights,
                            label="gateway reverted",
                            options=self._options,
                            endpoints=endpoints,
                        )
                    except ValueError:
                        # Weights set meanwhile need the new gateway: keep serving it.
                        log.exception("cannot go back to the previous gateway")
                    else:
                        self._gateway = old_gateway
                        self._endpoints = endpoints
                        self._cache.set_snapshot(previous)
                        reverted = True
        return GatewayChange(acks=acks, reverted=reverted)

    async def set_weights(
        self,
        route: str,
        weights: Mapping[str, int] | None,
        *,
        options: RouteOptions | None = None,
        nodes: Collection[str] | None = None,
        timeout_s: float = 10.0,
    ) -> WeightChange:
        """Serve new weights for ``route`` and wait for the nodes to ACK them.

        Args:
            route: a route name of the gateway.
            weights: cluster → relative weight (>= 0, sum > 0); clusters must be declared.
                None drops the override: the route serves the gateway file's weights again.
            options: the rollout options to serve on the route with these weights (forcing
                header, sticky hashing); None serves none.
            nodes: node ids that must ACK; None means every node connected now that
                subscribes to routes.
            timeout_s: seconds to wait for the ACKs.

        Returns:
            A :class:`WeightChange`; its ``ack.outcome`` is ``acked`` only when every target
            ACKed. A NACK or timeout is reported as such. After a NACK of this change the
            route's last weights every target ACKed are served again (unless another change
            came meanwhile): Envoy kept them, and an Envoy connecting later must not get the
            rejected configuration.

        Raises:
            ValueError: unknown route or cluster, negative weights, or weights summing to 0.
            PersistError: the weights could not be saved; nothing changed.
        """
        if route not in self._gateway.routes():
            raise ValueError(f"unknown route {route!r}")
        asked = None if weights is None else dict(weights)
        async with self._lock:
            snapshot = await self._serve(route, asked, options)
            generation = self._cache.generation
            version = snapshot.version(typeurls.ROUTE)
            assert version is not None
            # Registered before any stream runs: no ACK can be missed.
            waiter = self._cache.watch(typeurls.ROUTE, version, nodes, generation)
            earlier = self._route_waiters.get(route)
            if earlier is not None:
                earlier.supersede(generation)  # what Envoys ACK from now on is not that change
            self._route_waiters[route] = waiter
        try:
            ack = await self._cache.wait(waiter, timeout_s)
        finally:
            if self._route_waiters.get(route) is waiter:
                del self._route_waiters[route]
        reverted = False
        current = (self._weights.get(route), self._options.get(route))
        if ack.outcome == "acked" and current == (asked, options):
            self._last_good[route] = current
        elif ack.outcome == "nacked":
            async with self._lock:
                # No later change to keep:
                if (self._weights.get(route), self._options.get(route)) == (asked, options):
                    try:
                        await self._serve(route, *self._last_good.get(route, (None, None)))
                        reverted = True
                    except (PersistError, ValueError):
                        log.exception("could not go back to the last good weights of %s", route)
        return WeightChange(route=route, weights=dict(asked or {}), ack=ack, reverted=reverted)

    async def _serve(
        self, route: str, weights: dict[str, int] | None, options: RouteOptions | None
    ) -> Snapshot:
        """Persist, then serve ``weights`` and ``options`` for ``route`` (None: the gateway's
        own weights, no options). Holds the lock (callers take it)."""
        proposed = {r: w for r, w in self._weights.items() if r != route}
        if weights is not None:
            proposed[route] = weights
        proposed_options = {r: o for r, o in self._options.items() if r != route}
        if options is not None:
            proposed_options[route] = options
        label = f"{route}=" + (
            "/".join(f"{c}:{w}" for c, w in weights.items()) if weights else "gateway"
        )
        snapshot = self._build(self._gateway, proposed, proposed_options, label)
        if self._persist is not None:
            try:
                await asyncio.to_thread(self._persist, route, weights)
            except Exception as exc:
                # Serving weights a restart would forget is how a controller ends up moving
                # traffic back on its own: refuse the change instead.
                raise PersistError(f"could not save the weights of {route!r}: {exc}") from exc
        self._weights = proposed
        self._options = proposed_options
        self._cache.set_snapshot(snapshot)
        return snapshot

    async def set_endpoints(
        self, cluster: str, endpoints: Collection[Endpoint], timeout_s: float = 10.0
    ) -> AckResult:
        """Serve ``cluster``'s live endpoints and wait for the nodes to ACK the EDS version.

        Only the EDS (``ClusterLoadAssignment``) version moves: clusters, listeners, route
        tables and weights stay as they are. An unchanged set serves the same bytes and
        version (nothing is pushed; the ACK is immediate when the nodes hold it).

        Args:
            cluster: a ``kubernetes`` cluster of the gateway.
            endpoints: its ready endpoints, in the order to serve (see
                :func:`controller.k8s.endpointslices.ready_endpoints`); empty is allowed: an
                empty assignment, answered 503 by Envoy.
            timeout_s: seconds to wait for the ACKs of every node connected now that
                subscribes to EDS.

        Returns:
            The :class:`AckResult` of the EDS version; ``superseded`` when a later change of
            the same cluster came before every node answered. No revert on a NACK: Envoy
            keeps its last good assignment, and the next change is served as usual.

        Raises:
            ValueError: ``cluster`` is not a cluster of the gateway, or its endpoints are
                static (``endpoints`` in the gateway file).
        """
        async with self._lock:
            followed = self._gateway.kubernetes_clusters()
            if cluster not in followed:
                kind = "static" if cluster in self._gateway.cluster_names() else "unknown"
                raise ValueError(
                    f"cannot set the endpoints of {kind} cluster {cluster!r}: only kubernetes"
                    f" clusters take live endpoints ({', '.join(sorted(followed)) or 'none'})"
                )
            proposed = {**self._endpoints, cluster: tuple(endpoints)}
            label = f"{cluster} endpoints={len(proposed[cluster])}"
            snapshot = self._build(self._gateway, self._weights, self._options, label, proposed)
            self._endpoints = proposed
            self._cache.set_snapshot(snapshot)
            generation = self._cache.generation
            version = snapshot.version(typeurls.ENDPOINT)
            assert version is not None
            # Registered before any stream runs: no ACK can be missed.
            waiter = self._cache.watch(typeurls.ENDPOINT, version, None, generation)
            earlier = self._endpoint_waiters.get(cluster)
            if earlier is not None:
                earlier.supersede(generation)
            self._endpoint_waiters[cluster] = waiter
        try:
            return await self._cache.wait(waiter, timeout_s)
        finally:
            if self._endpoint_waiters.get(cluster) is waiter:
                del self._endpoint_waiters[cluster]

    def _build(
        self,
        gateway: Gateway,
        weights: RouteWeights,
        options: RouteOptionsByRoute,
        label: str,
        endpoints: EndpointsByCluster | None = None,
    ) -> Snapshot:
        return build_snapshot(
            gateway,
            weights,
            label=label,
            options=options,
            endpoints=self._endpoints if endpoints is None else endpoints,
        )
