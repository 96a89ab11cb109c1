"""Pure builders: a gateway plus the current route weights → Envoy v3 resources.

Each builder returns envoy-data-plane (betterproto2) messages; :func:`build_snapshot` serializes
them once into a :class:`~controller.xds.snapshot.Snapshot`. Builders are memoized on their
(immutable, hashable) inputs so a weight change on one route re-serializes only the route table
that holds it.

This module holds the cluster, endpoint and listener builders, the resource memos
(:data:`RESOURCE_MEMOS`) and :func:`build_snapshot`. Route tables live in two modules whose
public names are re-exported here:

- :mod:`controller.xds.route_builders`: the ``Route`` / ``RouteAction`` messages,
  :class:`RouteOptions` (forcing routes, sticky hashing, a mirror to the comparator), and
  :func:`route_configuration`, the table built whole;
- :mod:`controller.xds.route_encoding`: the same table's bytes assembled from memoized
  encodings of its parts (:func:`encoded_route_configuration`, :data:`ENCODING_MEMOS`), which
  is what :func:`build_snapshot` serves.

Proto sources: envoy/config/{cluster,endpoint,listener,route}/v3,
envoy/extensions/filters/network/http_connection_manager/v3, envoy/extensions/upstreams/http/v3.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping

from envoy_data_plane.envoy.config.cluster.v3 import (
    Cluster as EnvoyCluster,
)
from envoy_data_plane.envoy.config.cluster.v3 import (
    ClusterDiscoveryType,
    ClusterEdsClusterConfig,
    ClusterLbPolicy,
)
from envoy_data_plane.envoy.config.core.v3 import (
    Address,
    AggregatedConfigSource,
    ApiVersion,
    ConfigSource,
    Http2ProtocolOptions,
    SocketAddress,
)
from envoy_data_plane.envoy.config.endpoint.v3 import (
    ClusterLoadAssignment,
    LbEndpoint,
    LocalityLbEndpoints,
)
from envoy_data_plane.envoy.config.endpoint.v3 import (
    Endpoint as EnvoyEndpoint,
)
from envoy_data_plane.envoy.config.listener.v3 import Filter, FilterChain
from envoy_data_plane.envoy.config.listener.v3 import Listener as EnvoyListener
from envoy_data_plane.envoy.extensions.filters.http.router.v3 import Router
from envoy_data_plane.envoy.extensions.filters.network.http_connection_manager.v3 import (
    HttpConnectionManager,
    HttpFilter,
    Rds,
)
from envoy_data_plane.envoy.extensions.upstreams.http.v3 import (
    HttpProtocolOptions,
    HttpProtocolOptionsExplicitHttpConfig,
)
from envoy_data_plane.google.protobuf import Any as ProtoAny

from controller.policy.gateway import Cluster, Endpoint, Gateway, Listener
from controller.xds import typeurls
from controller.xds.route_builders import (
    Mirror,
    RouteOptions,
    RouteOptionsByRoute,
    RouteWeights,
    effective_weights,
    forced_routes,
    mirror_route,
    route,
    route_configuration,
)
from controller.xds.route_encoding import ENCODING_MEMOS, encoded_route_configuration
from controller.xds.snapshot import Resource, Snapshot

__all__ = [
    "ENCODING_MEMOS",
    "RESOURCE_MEMOS",
    "EndpointsByCluster",
    "Mirror",
    "RouteOptions",
    "RouteOptionsByRoute",
    "RouteWeights",
    "build_snapshot",
    "cluster",
    "effective_weights",
    "encoded_route_configuration",
    "forced_routes",
    "listener",
    "load_assignment",
    "mirror_route",
    "route",
    "route_configuration",
]

_HCM_TYPE = (
    "type.googleapis.com/"
    "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
)
_ROUTER_TYPE = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
_HTTP_OPTIONS_KEY = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
_HTTP_OPTIONS_TYPE = "type.googleapis.com/" + _HTTP_OPTIONS_KEY
_LB = {
    "round_robin": ClusterLbPolicy.ROUND_ROBIN,
    "least_request": ClusterLbPolicy.LEAST_REQUEST,
    "random": ClusterLbPolicy.RANDOM,
}


def _ads() -> ConfigSource:
    return ConfigSource(ads=AggregatedConfigSource(), resource_api_version=ApiVersion.V3)


def _any(type_url: str, message: object) -> ProtoAny:
    return ProtoAny(type_url=type_url, value=bytes(message))  # type: ignore[call-overload]


def cluster(spec: Cluster) -> EnvoyCluster:
    """``Cluster`` of type EDS whose endpoints come over ADS (EDS resource name = cluster name)."""
    options: dict[str, ProtoAny] = {}
    if spec.protocol == "http2":
        options[_HTTP_OPTIONS_KEY] = _any(
            _HTTP_OPTIONS_TYPE,
            HttpProtocolOptions(
                explicit_http_config=HttpProtocolOptionsExplicitHttpConfig(
                    http2_protocol_options=Http2ProtocolOptions()
                )
            ),
        )
    return EnvoyCluster(
        name=spec.name,
        type=ClusterDiscoveryType.EDS,
        eds_cluster_config=ClusterEdsClusterConfig(eds_config=_ads()),
        connect_timeout=spec.connect_timeout,
        lb_policy=_LB[spec.lb_policy],
        typed_extension_protocol_options=options,
    )


def load_assignment(
    spec: Cluster, endpoints: tuple[Endpoint, ...] | None = None
) -> ClusterLoadAssignment:
    """``ClusterLoadAssignment`` with ``endpoints`` (default: the cluster's static ones) in one
    locality. No endpoints is a valid assignment: Envoy answers 503 (no healthy upstream)."""
    return _assignment(spec.name, spec.endpoints if endpoints is None else endpoints)


def _assignment(name: str, endpoints: tuple[Endpoint, ...]) -> ClusterLoadAssignment:
    return ClusterLoadAssignment(
        cluster_name=name,
        endpoints=[
            LocalityLbEndpoints(
                lb_endpoints=[
                    LbEndpoint(
                        endpoint=EnvoyEndpoint(
                            address=Address(
                                socket_address=SocketAddress(address=ep.address, port_value=ep.port)
                            )
                        ),
                        load_balancing_weight=ep.weight,
                    )
                    for ep in endpoints
                ]
            )
        ],
    )


def listener(spec: Listener) -> EnvoyListener:
    """``Listener`` with one HTTP connection manager whose routes come over RDS.

    The route configuration name is the listener name.
    """
    hcm = HttpConnectionManager(
        stat_prefix=spec.stat_prefix or spec.name,
        rds=Rds(config_source=_ads(), route_config_name=spec.name),
        http_filters=[
            HttpFilter(name="envoy.filters.http.router", typed_config=_any(_ROUTER_TYPE, Router()))
        ],
    )
    return EnvoyListener(
        name=spec.name,
        address=Address(socket_address=SocketAddress(address=spec.address, port_value=spec.port)),
        filter_chains=[
            FilterChain(
                filters=[
                    Filter(
                        name="envoy.filters.network.http_connection_manager",
                        typed_config=_any(_HCM_TYPE, hcm),
                    )
                ]
            )
        ],
    )


@functools.lru_cache(maxsize=4096)
def _cluster_resource(spec: Cluster) -> Resource:
    return Resource.from_message_bytes(spec.name, typeurls.CLUSTER, bytes(cluster(spec)))


@functools.lru_cache(maxsize=4096)
def _assignment_resource(name: str, endpoints: tuple[Endpoint, ...]) -> Resource:
    return Resource.from_message_bytes(name, typeurls.ENDPOINT, bytes(_assignment(name, endpoints)))


@functools.lru_cache(maxsize=4096)
def _listener_resource(spec: Listener) -> Resource:
    return Resource.from_message_bytes(spec.name, typeurls.LISTENER, bytes(listener(spec)))


@functools.lru_cache(maxsize=4096)
def _route_resource(
    spec: Listener,
    weights: tuple[tuple[str, tuple[tuple[str, int], ...]], ...],
    options: tuple[tuple[str, RouteOptions], ...] = (),
) -> Resource:
    by_route = {name: dict(cw) for name, cw in weights}
    config, clusters = encoded_route_configuration(spec, by_route, dict(options))
    return Resource.from_message_bytes(spec.name, typeurls.ROUTE, config, clusters)


RESOURCE_MEMOS = (_cluster_resource, _assignment_resource, _listener_resource, _route_resource)
"""Memoized resources: a miss is one resource built."""

EndpointsByCluster = Mapping[str, tuple[Endpoint, ...]]
"""Live endpoints by cluster name (what Kubernetes reports for a ``kubernetes`` cluster)."""


def build_snapshot(
    gateway: Gateway,
    weights: RouteWeights,
    label: str = "",
    options: RouteOptionsByRoute | None = None,
    endpoints: EndpointsByCluster | None = None,
) -> Snapshot:
    """Translate a gateway and weight overrides into a snapshot of CDS, EDS, LDS and RDS.

    Args:
        gateway: a gateway that passed its checks (unique names, known clusters).
        weights: overrides by route name; each maps cluster → relative weight.
        label: a note for logs and status (what changed).
        options: rollout options by route name (forcing header, sticky hashing, mirror).
        endpoints: the live endpoints of ``kubernetes`` clusters, by cluster name; such a
            cluster missing here gets an empty assignment (Envoy answers 503 until endpoints
            arrive). Endpoints are served in the order given.

    Raises:
        ValueError: an override or option (forcing header, mirror) names a route or cluster
            the gateway does not declare, or weights sum to 0 (Envoy would NACK it);
            ``endpoints`` names a cluster that is not a declared ``kubernetes`` cluster.
    """
    routes = gateway.routes()
    known = gateway.cluster_names()
    for name, override in weights.items():
        if name not in routes:
            raise ValueError(f"weights for unknown route {name!r}")
        unknown = sorted(set(override) - known)
        if unknown:
            raise ValueError(f"route {name!r}: weights name unknown clusters {unknown}")
        if any(w < 0 for w in override.values()) or sum(override.values()) <= 0:
            raise ValueError(f"route {name!r}: weights must be >= 0 and sum to more than 0")
    opts = options or {}
    for name, extra in opts.items():
        if name not in routes:
            raise ValueError(f"options for unknown route {name!r}")
        unknown = sorted({cluster for _, cluster in extra.force} - known)
        if unknown:
            raise ValueError(f"route {name!r}: forcing header names unknown clusters {unknown}")
        if extra.mirror is not None and extra.mirror.cluster not in known:
            raise ValueError(
                f"route {name!r}: the mirror names unknown clusters {[extra.mirror.cluster]}"
                " (declare the comparator's cluster in the gateway)"
            )
    live = endpoints or {}
    followed = gateway.kubernetes_clusters()
    strays = sorted(set(live) - set(followed))
    if strays:
        raise ValueError(f"endpoints for clusters that are not kubernetes clusters: {strays}")
    assignments = [
        _assignment_resource(
            c.name, tuple(live.get(c.name, ())) if c.name in followed else c.endpoints
        )
        for c in gateway.spec.clusters
    ]
    route_resources = []
    for spec in gateway.spec.listeners:
        own = tuple(
            sorted(
                (r.name, tuple(sorted(weights[r.name].items())))
                for vh in spec.virtual_hosts
                for r in vh.routes
                if r.name in weights
            )
        )
        own_options = tuple(
            (r.name, opts[r.name]) for vh in spec.virtual_hosts for r in vh.routes if r.name in opts
        )
        route_resources.append(_route_resource(spec, own, own_options))
    return Snapshot.build(
        {
            typeurls.CLUSTER: [_cluster_resource(c) for c in gateway.spec.clusters],
            typeurls.ENDPOINT: assignments,
            typeurls.LISTENER: [_listener_resource(spec) for spec in gateway.spec.listeners],
            typeurls.ROUTE: route_resources,
        },
        label=label,
    )
