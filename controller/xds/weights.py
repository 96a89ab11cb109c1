"""The weight primitive: set one route's ``weighted_clusters`` and await the ACK.

This is what the rollout engine moves traffic with. A change is persisted (through the
``persist`` hook) before it is served, so a restarted controller serves the weights Envoy may
already have, never a default.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass

from controller.policy.gateway import Gateway
from controller.xds import typeurls
from controller.xds.acks import AckResult, AckWaiter
from controller.xds.cache import SnapshotCache
from controller.xds.resources import (
    RouteOptions,
    RouteOptionsByRoute,
    RouteWeights,
    build_snapshot,
    effective_weights,
)
from controller.xds.snapshot import Snapshot

log = logging.getLogger(__name__)

PersistHook = Callable[[str, Mapping[str, int] | None], None]
"""Called with (route name, weights) before a change is served, or (route name, None) when the
route goes back to the gateway's own weights; raising aborts the change. Called in a worker
thread (it may block on a disk), one call at a time."""


_Served = tuple[dict[str, int] | None, RouteOptions | None]
"""A route's weight override and options (None, None: the gateway file's own)."""


class PersistError(RuntimeError):
    """The new weights could not be saved durably; nothing was served."""


@dataclass(frozen=True)
class WeightChange:
    """The result of :meth:`WeightController.set_weights`.

    Attributes:
        route: the route whose weights changed.
        weights: cluster → relative weight, as asked.
        ack: how the connected nodes took the new RDS version (``ack.ok`` is success).
        reverted: True when a NACK made the controller serve the route's last weights that
            every target ACKed (the last good configuration), so that Envoys connecting later
            do not get the rejected one.
    """

    route: str
    weights: dict[str, int]
    ack: AckResult
    reverted: bool = False


@dataclass(frozen=True)
class GatewayChange:
    """The result of :meth:`WeightController.replace_gateway`.

    Attributes:
        acks: per changed type URL, how the connected nodes took its new version.
        reverted: True when a NACK made the controller serve the previous gateway again.
    """

    acks: dict[str, AckResult]
    reverted: bool

    @property
    def nacks(self) -> dict[str, str]:
        """node id → NACK message, over every changed type."""
        return {n: m for ack in self.acks.values() for n, m in ack.nacked.items()}


class WeightController:
    """Owns the gateway and the current weight overrides, and builds snapshots from them.

    Args:
        gateway: the checked gateway.
        cache: the snapshot cache the ADS server serves from.
        weights: persisted overrides to start from (route → cluster → weight).
        persist: hook saving a route's weights durably before they are served.
        options: rollout options to start with, by route (forcing header, sticky hashing).
            They are not persisted here: the rollout store is their source.

    Raises:
        ValueError: ``weights`` or ``options`` name unknown routes or clusters (see
            ``build_snapshot``).
    """

    def __init__(
        self,
        gateway: Gateway,
        cache: SnapshotCache,
        weights: RouteWeights | None = None,
        persist: PersistHook | None = None,
        options: RouteOptionsByRoute | None = None,
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
        self._route_waiters: dict[str, AckWaiter] = {}  # the latest change of each route
        self._persist = persist
        self._lock = asyncio.Lock()
        cache.set_snapshot(
            build_snapshot(gateway, self._weights, label="start", options=self._options)
        )

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

    def current(self) -> dict[str, dict[str, int]]:
        """Every route's served weights (routes with weighted clusters or an override)."""
        out: dict[str, dict[str, int]] = {}
        for name, route in self._gateway.routes().items():
            eff = effective_weights(route, self._weights.get(name))
            if eff is not None:
                out[name] = {w.cluster: w.weight for w in eff}
        return out

    async def replace_gateway(self, gateway: Gateway, timeout_s: float = 10.0) -> GatewayChange:
        """Serve another gateway with the current weights (a gateway file reload) and wait for
        the connected nodes to ACK every type it changes.

        When a node NACKs, the previous gateway is served again (unless something else changed
        meanwhile): Envoy kept it, and a node connecting later must not get the rejected one.

        Raises:
            ValueError: the current weights name a route or cluster the new gateway lacks;
                nothing changes then.
        """
        async with self._lock:
            old_gateway, old = self._gateway, self._cache.snapshot
            snapshot = build_snapshot(
                gateway,
                self._weights,
                label=f"gateway {gateway.metadata.name}",
                options=self._options,
            )
            self._gateway = gateway
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
                    try:
                        previous = build_snapshot(
                            old_gateway,
                            self._weights,
                            label="gateway reverted",
                            options=self._options,
                        )
                    except ValueError:
                        # Weights set meanwhile need the new gateway: keep serving it.
                        log.exception("cannot go back to the previous gateway")
                    else:
                        self._gateway = old_gateway
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
        snapshot = build_snapshot(self._gateway, proposed, label=label, options=proposed_options)
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
