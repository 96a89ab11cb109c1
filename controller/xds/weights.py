"""The weight primitive: set one route's ``weighted_clusters`` and await the ACK.

This is what the rollout engine moves traffic with. A change is persisted (through the
``persist`` hook) before it is served, so a restarted controller serves the weights Envoy may
already have, never a default.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass

from controller.policy.gateway import Gateway
from controller.xds import typeurls
from controller.xds.acks import AckResult
from controller.xds.cache import SnapshotCache
from controller.xds.resources import RouteWeights, build_snapshot, effective_weights

PersistHook = Callable[[str, Mapping[str, int]], None]
"""Called with (route name, weights) before a change is served; raising aborts the change."""


class PersistError(RuntimeError):
    """The new weights could not be saved durably; nothing was served."""


@dataclass(frozen=True)
class WeightChange:
    """The result of :meth:`WeightController.set_weights`.

    Attributes:
        route: the route whose weights changed.
        weights: cluster → relative weight, as now served.
        ack: how the connected nodes took the new RDS version (``ack.ok`` is success).
    """

    route: str
    weights: dict[str, int]
    ack: AckResult


class WeightController:
    """Owns the gateway and the current weight overrides, and builds snapshots from them.

    Args:
        gateway: the checked gateway.
        cache: the snapshot cache the ADS server serves from.
        weights: persisted overrides to start from (route → cluster → weight).
        persist: hook saving a route's weights durably before they are served.

    Raises:
        ValueError: ``weights`` name unknown routes or clusters (see ``build_snapshot``).
    """

    def __init__(
        self,
        gateway: Gateway,
        cache: SnapshotCache,
        weights: RouteWeights | None = None,
        persist: PersistHook | None = None,
    ) -> None:
        self._gateway = gateway
        self._cache = cache
        self._weights: dict[str, dict[str, int]] = {r: dict(w) for r, w in (weights or {}).items()}
        self._persist = persist
        self._lock = asyncio.Lock()
        cache.set_snapshot(build_snapshot(gateway, self._weights, label="start"))

    @property
    def gateway(self) -> Gateway:
        """The gateway being served."""
        return self._gateway

    def current(self) -> dict[str, dict[str, int]]:
        """Every route's served weights (routes with weighted clusters or an override)."""
        out: dict[str, dict[str, int]] = {}
        for name, route in self._gateway.routes().items():
            eff = effective_weights(route, self._weights.get(name))
            if eff is not None:
                out[name] = {w.cluster: w.weight for w in eff}
        return out

    def replace_gateway(self, gateway: Gateway) -> None:
        """Serve another gateway with the current weights (a gateway file reload).

        Raises:
            ValueError: the current weights name a route or cluster the new gateway lacks;
                nothing changes then.
        """
        snapshot = build_snapshot(gateway, self._weights, label=f"gateway {gateway.metadata.name}")
        self._gateway = gateway
        self._cache.set_snapshot(snapshot)

    async def set_weights(
        self,
        route: str,
        weights: Mapping[str, int],
        *,
        nodes: Collection[str] | None = None,
        timeout_s: float = 10.0,
    ) -> WeightChange:
        """Serve new weights for ``route`` and wait for the nodes to ACK them.

        Args:
            route: a route name of the gateway.
            weights: cluster → relative weight (>= 0, sum > 0); clusters must be declared.
            nodes: node ids that must ACK; None means every node connected now that
                subscribes to routes.
            timeout_s: seconds to wait for the ACKs.

        Returns:
            A :class:`WeightChange`; its ``ack.outcome`` is ``acked`` only when every target
            ACKed. A NACK or timeout is reported as such; the weights stay served (Envoy keeps
            its last good config after a NACK).

        Raises:
            ValueError: unknown route or cluster, negative weights, or weights summing to 0.
            PersistError: the weights could not be saved; nothing changed.
        """
        async with self._lock:
            proposed = {**self._weights, route: dict(weights)}
            snapshot = build_snapshot(
                self._gateway,
                proposed,
                label=f"{route}=" + "/".join(f"{c}:{w}" for c, w in weights.items()),
            )
            if self._persist is not None:
                try:
                    self._persist(route, dict(weights))
                except Exception as exc:
                    # Serving weights a restart would forget is how a controller ends up
                    # moving traffic back on its own: refuse the change instead.
                    raise PersistError(f"could not save the weights of {route!r}: {exc}") from exc
            self._weights = proposed
            self._cache.set_snapshot(snapshot)
        version = snapshot.version(typeurls.ROUTE)
        assert version is not None
        ack = await self._cache.wait_for_version(typeurls.ROUTE, version, nodes, timeout_s)
        return WeightChange(route=route, weights=dict(weights), ack=ack)
