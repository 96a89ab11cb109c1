"""Pure builders: a gateway plus the current route weights → Envoy v3 resources.

Each builder returns envoy-data-plane (betterproto2) messages; :func:`build_snapshot` serializes
them once into a :class:`~controller.xds.snapshot.Snapshot`. Builders are memoized on their
(immutable, hashable) inputs so a weight change on one route re-serializes only the route table
that holds it.

Route tables are not serialized whole: betterproto2 spends ~0.35 ms per message (it validates
every message with pydantic before encoding it), ~4 ms for a weighted route. A protobuf message
is the concatenation of its fields, and a repeated or sub-message field is its tag, its length
and the element's own encoding, so a ``RouteConfiguration`` is assembled from memoized
encodings of its parts: the fields that do not depend on the weights (route name and match, the
action's timeout, retries and hash policy, virtual host and table headers) and one encoded
``ClusterWeight`` per (cluster, weight). A weight change costs at most one betterproto2 encoding
per new (cluster, weight) pair, and the bytes are those of :func:`route_configuration` serialized
whole (tests compare them), in betterproto2's field order.

A route under rollout may also carry forcing routes (a header picks a side), sticky hashing and
a mirror to the comparator (tap-compare, :mod:`controller.xds.mirror`): see :class:`RouteOptions`.

Proto sources: envoy/config/{cluster,endpoint,listener,route}/v3,
envoy/extensions/filters/network/http_connection_manager/v3, envoy/extensions/upstreams/http/v3.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass

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
from envoy_data_plane.envoy.config.route.v3 import (
    HeaderMatcher,
    RouteAction,
    RouteActionHashPolicy,
    RouteActionHashPolicyCookie,
    RouteActionHashPolicyHeader,
    RouteConfiguration,
    WeightedCluster,
    WeightedClusterClusterWeight,
)
from envoy_data_plane.envoy.config.route.v3 import (
    RetryPolicy as EnvoyRetryPolicy,
)
from envoy_data_plane.envoy.config.route.v3 import (
    Route as EnvoyRoute,
)
from envoy_data_plane.envoy.config.route.v3 import (
    RouteMatch as EnvoyRouteMatch,
)
from envoy_data_plane.envoy.config.route.v3 import (
    VirtualHost as EnvoyVirtualHost,
)
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
from envoy_data_plane.envoy.type.matcher.v3 import RegexMatcher, StringMatcher
from envoy_data_plane.google.protobuf import Any as ProtoAny

from controller.policy.gateway import (
    Cluster,
    ClusterWeight,
    Gateway,
    HeaderMatch,
    Listener,
    RetryPolicy,
    Route,
)
from controller.policy.gateway import VirtualHost as VirtualHostSpec
from controller.xds import typeurls, wire
from controller.xds.mirror import MIRROR_ROUTE_SUFFIX, Mirror, method_matcher, mirror_policy
from controller.xds.snapshot import Resource, Snapshot

__all__ = ["Mirror", "RouteOptions", "build_snapshot", "route_configuration"]

RouteWeights = Mapping[str, Mapping[str, int]]
"""Weight overrides: route name → cluster name → relative weight (Sluice writes percents)."""


@dataclass(frozen=True)
class RouteOptions:
    """What a rollout adds to its route besides the weights.

    Attributes:
        force_header: a request header whose value forces a cluster (testers reach one side
            whatever the weights): for each ``(value, cluster)`` of ``force``, a route with the
            same match plus ``force_header: value`` (exact) is placed right before the route,
            sending to that cluster alone. Envoy matches routes in order, so these win.
        force: ``(header value, cluster)`` pairs.
        hash_header: sticky selection: ``RouteAction.hash_policy`` hashes this header, and
            ``WeightedCluster.use_hash_policy`` picks the weighted cluster from that hash, so
            one header value always lands on the same side (for given weights).
        hash_cookie: the same, hashing a cookie (no ``ttl``: Envoy never generates one).
        mirror: tap-compare: a share of the route's requests is mirrored to the comparator
            (``RouteAction.request_mirror_policies``). With ``mirror.methods``, a copy of the
            route named ``<route>.mirror``, matching ``:method`` too and carrying the mirror,
            is placed right before the route (after the forcing routes: a tester forcing a
            side is not mirrored), and the route itself mirrors nothing, so other methods
            never are. Without ``methods``, the route itself mirrors every method.
    """

    force_header: str | None = None
    force: tuple[tuple[str, str], ...] = ()
    hash_header: str | None = None
    hash_cookie: str | None = None
    mirror: Mirror | None = None

    def clusters(self) -> tuple[str, ...]:
        """The clusters the forcing routes send to, then the mirror's cluster (if any)."""
        forced = tuple(cluster for _, cluster in self.force)
        return forced if self.mirror is None else (*forced, self.mirror.cluster)


RouteOptionsByRoute = Mapping[str, RouteOptions]
"""Route name → the rollout's options for it."""

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


def load_assignment(spec: Cluster) -> ClusterLoadAssignment:
    """``ClusterLoadAssignment`` with the cluster's static endpoints in one locality."""
    return ClusterLoadAssignment(
        cluster_name=spec.name,
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
                    for ep in spec.endpoints
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


def _header(match: HeaderMatch) -> HeaderMatcher:
    if match.present is not None:
        return HeaderMatcher(
            name=match.name, present_match=match.present, invert_match=match.invert
        )
    if match.exact is not None:
        string = StringMatcher(exact=match.exact)
    elif match.prefix is not None:
        string = StringMatcher(prefix=match.prefix)
    else:
        string = StringMatcher(safe_regex=RegexMatcher(regex=match.regex or ""))
    return HeaderMatcher(name=match.name, string_match=string, invert_match=match.invert)


def _retry(policy: RetryPolicy) -> EnvoyRetryPolicy:
    return EnvoyRetryPolicy(
        retry_on=",".join(policy.retry_on),
        num_retries=policy.num_retries,
        per_try_timeout=policy.per_try_timeout,
    )


def effective_weights(
    route: Route, override: Mapping[str, int] | None
) -> tuple[ClusterWeight, ...] | None:
    """The weighted clusters a route serves: the override if any, else the gateway's.

    Clusters keep the gateway's order, then the override's others in name order, so moving
    weights never reorders Envoy's list. Returns None for a single-cluster route without override.
    """
    if override is None:
        return route.weighted_clusters
    declared = [w.cluster for w in route.weighted_clusters or ()] or (
        [route.cluster] if route.cluster else []
    )
    order = [c for c in declared if c in override] + sorted(
        c for c in override if c not in declared
    )
    return tuple(ClusterWeight(cluster=c, weight=override[c]) for c in order)


def _match(spec: Route, extra: HeaderMatcher | None = None) -> EnvoyRouteMatch:
    headers = [_header(h) for h in spec.match.headers]
    if extra is not None:
        headers.append(extra)
    return EnvoyRouteMatch(prefix=spec.match.prefix, path=spec.match.path, headers=headers)


def _finish(spec: Route, action: RouteAction) -> RouteAction:
    action.timeout = spec.timeout
    if spec.retry_policy is not None:
        action.retry_policy = _retry(spec.retry_policy)
    return action


def _hash_policy(options: RouteOptions) -> list[RouteActionHashPolicy]:
    if options.hash_header is not None:
        return [
            RouteActionHashPolicy(
                header=RouteActionHashPolicyHeader(header_name=options.hash_header)
            )
        ]
    if options.hash_cookie is not None:
        return [RouteActionHashPolicy(cookie=RouteActionHashPolicyCookie(name=options.hash_cookie))]
    return []


def _action(
    spec: Route,
    weights: tuple[ClusterWeight, ...] | None,
    options: RouteOptions | None,
    mirror: Mirror | None,
) -> RouteAction:
    if weights is not None:
        hashing = _hash_policy(options) if options is not None else []
        action = RouteAction(
            weighted_clusters=WeightedCluster(
                clusters=[
                    WeightedClusterClusterWeight(name=w.cluster, weight=w.weight) for w in weights
                ],
                use_hash_policy=True if hashing else None,
            ),
            hash_policy=hashing,
        )
    else:
        action = RouteAction(cluster=spec.cluster)
    if mirror is not None:
        action.request_mirror_policies = [mirror_policy(mirror)]
    return _finish(spec, action)


def _own_mirror(options: RouteOptions | None) -> Mirror | None:
    """The mirror the route itself carries: one for every method (none when a copy of the
    route mirrors some methods only)."""
    if options is None or options.mirror is None or options.mirror.methods is not None:
        return None
    return options.mirror


def route(
    spec: Route, override: Mapping[str, int] | None = None, options: RouteOptions | None = None
) -> EnvoyRoute:
    """``Route`` with a ``RouteAction`` to one cluster or to ``weighted_clusters``; with
    ``options.hash_*``, the weighted cluster is picked from the request's hash
    (``WeightedCluster.use_hash_policy`` and ``RouteAction.hash_policy``); with an
    ``options.mirror`` for every method (``methods`` None), ``request_mirror_policies``."""
    weights = effective_weights(spec, override)
    action = _action(spec, weights, options, _own_mirror(options))
    return EnvoyRoute(name=spec.name, match=_match(spec), route=action)


def mirror_route(
    spec: Route, override: Mapping[str, int] | None, options: RouteOptions | None
) -> EnvoyRoute | None:
    """The copy of ``spec`` that mirrors some methods only, placed right before it: named
    ``<route>.mirror``, the route's match plus ``:method`` against ``options.mirror.methods``,
    the route's action (weights, timeout, retries, hashing) plus the mirror policy. None when
    ``options`` has no mirror, or one for every method (the route itself carries it)."""
    if options is None or options.mirror is None or options.mirror.methods is None:
        return None
    weights = effective_weights(spec, override)
    return EnvoyRoute(
        name=spec.name + MIRROR_ROUTE_SUFFIX,
        match=_match(spec, method_matcher(options.mirror.methods)),
        route=_action(spec, weights, options, options.mirror),
    )


def forced_routes(spec: Route, options: RouteOptions) -> list[EnvoyRoute]:
    """The routes placed before ``spec`` that send a request carrying
    ``options.force_header: value`` to the value's cluster (named ``<route>.force-<cluster>``)."""
    if options.force_header is None:
        return []
    return [
        EnvoyRoute(
            name=f"{spec.name}.force-{cluster}",
            match=_match(
                spec,
                HeaderMatcher(name=options.force_header, string_match=StringMatcher(exact=value)),
            ),
            route=_finish(spec, RouteAction(cluster=cluster)),
        )
        for value, cluster in options.force
    ]


def route_configuration(
    spec: Listener, weights: RouteWeights, options: RouteOptionsByRoute | None = None
) -> RouteConfiguration:
    """``RouteConfiguration`` named after the listener, with its virtual hosts and routes (and,
    for routes with options, their forcing routes then their mirroring copy right before them:
    Envoy takes the first route that matches, so a forced request is never mirrored, and a
    mirrored method never reaches the route itself)."""
    opts = options or {}
    vhosts = []
    for vh in spec.virtual_hosts:
        routes: list[EnvoyRoute] = []
        for r in vh.routes:
            own = opts.get(r.name)
            if own is not None:
                routes += forced_routes(r, own)
                copy = mirror_route(r, weights.get(r.name), own)
                if copy is not None:
                    routes.append(copy)
            routes.append(route(r, weights.get(r.name), own))
        vhosts.append(EnvoyVirtualHost(name=vh.name, domains=list(vh.domains), routes=routes))
    return RouteConfiguration(name=spec.name, virtual_hosts=vhosts)


@functools.lru_cache(maxsize=4096)
def _cluster_resources(spec: Cluster) -> tuple[Resource, Resource]:
    return (
        Resource.from_message_bytes(spec.name, typeurls.CLUSTER, bytes(cluster(spec))),
        Resource.from_message_bytes(spec.name, typeurls.ENDPOINT, bytes(load_assignment(spec))),
    )


@functools.lru_cache(maxsize=4096)
def _listener_resource(spec: Listener) -> Resource:
    return Resource.from_message_bytes(spec.name, typeurls.LISTENER, bytes(listener(spec)))


# --- route tables assembled from memoized encodings ---------------------------------------
#
# Each _encoded_* function returns betterproto2's encoding of part of a message; a miss is one
# betterproto2 encoding. The assembly relies on betterproto2 writing the fields of a message in
# their declaration order in the .proto file (not field-number order), skipping unset ones:
#
#   RouteConfiguration: name(1), virtual_hosts(2), ...       we set name and virtual_hosts
#   VirtualHost:        name(1), domains(2), routes(3), ...  we set these three
#   Route:              name(14), match(1), route(2), ...    we set these three
#   RouteAction:        cluster(1), cluster_header(2), weighted_clusters(3), ..., then the rest
#                       (timeout(8), retry_policy(9), request_mirror_policies(30),
#                       hash_policy(15), ...)
#   WeightedCluster:    clusters(1), ..., use_hash_policy(5)
#
# so the encoding of a message with the fields before X set, plus X's elements, plus the
# encoding of a message with only the fields after X set, is the whole message's encoding.
# tests/unit/test_resources.py compares the result with route_configuration() encoded whole.

_VHOSTS = 2  # RouteConfiguration.virtual_hosts
_ROUTES = 3  # VirtualHost.routes
_ROUTE_ACTION = 2  # Route.route
_WEIGHTED_CLUSTERS = 3  # RouteAction.weighted_clusters
_CLUSTER_WEIGHTS = 1  # WeightedCluster.clusters


@functools.lru_cache(maxsize=4096)
def _encoded_table_head(name: str) -> bytes:
    """``RouteConfiguration`` fields before ``virtual_hosts``."""
    return bytes(RouteConfiguration(name=name))


@functools.lru_cache(maxsize=4096)
def _encoded_vhost_head(vh: VirtualHostSpec) -> bytes:
    """``VirtualHost`` fields before ``routes``."""
    return bytes(EnvoyVirtualHost(name=vh.name, domains=list(vh.domains)))


@functools.lru_cache(maxsize=4096)
def _encoded_plain_routes(spec: Route, mirror: Mirror | None) -> bytes:
    """A single-cluster route without override, whole, and its mirroring copy before it (if
    any), as ``VirtualHost.routes`` elements."""
    options = None if mirror is None else RouteOptions(mirror=mirror)
    copy = mirror_route(spec, None, options)
    first = b"" if copy is None else wire.len_field(_ROUTES, bytes(copy))
    return first + wire.len_field(_ROUTES, bytes(route(spec, None, options)))


@functools.lru_cache(maxsize=4096)
def _encoded_forced_routes(spec: Route, header: str, force: tuple[tuple[str, str], ...]) -> bytes:
    """The forcing routes placed before ``spec``, as ``VirtualHost.routes`` elements."""
    options = RouteOptions(force_header=header, force=force)
    return b"".join(wire.len_field(_ROUTES, bytes(r)) for r in forced_routes(spec, options))


@functools.lru_cache(maxsize=4096)
def _encoded_route_head(spec: Route) -> bytes:
    """``Route`` fields before ``route`` (name, match)."""
    return bytes(EnvoyRoute(name=spec.name, match=_match(spec)))


@functools.lru_cache(maxsize=4096)
def _encoded_mirror_head(spec: Route, methods: tuple[str, ...]) -> bytes:
    """``Route`` fields before ``route`` (name, match) of the mirroring copy of ``spec``."""
    return bytes(
        EnvoyRoute(
            name=spec.name + MIRROR_ROUTE_SUFFIX, match=_match(spec, method_matcher(methods))
        )
    )


@functools.lru_cache(maxsize=4096)
def _encoded_action_tails(
    spec: Route, hash_header: str | None, hash_cookie: str | None, mirror: Mirror | None
) -> tuple[bytes, bytes]:
    """``WeightedCluster`` fields after ``clusters``, and ``RouteAction`` fields after
    ``weighted_clusters`` (a weighted route has no other cluster specifier)."""
    hashing = _hash_policy(RouteOptions(hash_header=hash_header, hash_cookie=hash_cookie))
    action = RouteAction(hash_policy=hashing)
    if mirror is not None:
        action.request_mirror_policies = [mirror_policy(mirror)]
    return (
        bytes(WeightedCluster(use_hash_policy=True if hashing else None)),
        bytes(_finish(spec, action)),
    )


@functools.lru_cache(maxsize=4096)
def _encoded_cluster_weight(cluster: str, weight: int) -> bytes:
    """One ``WeightedCluster.clusters`` element, as a field."""
    return wire.len_field(
        _CLUSTER_WEIGHTS, bytes(WeightedClusterClusterWeight(name=cluster, weight=weight))
    )


def _encoded_weighted_route(
    spec: Route,
    head: bytes,
    weights: tuple[ClusterWeight, ...],
    options: RouteOptions | None,
    mirror: Mirror | None,
) -> bytes:
    """A weighted route (``head``: its name and match) encoded, from the memoized parts."""
    if options is None:
        wc_tail, action_tail = _encoded_action_tails(spec, None, None, mirror)
    else:
        wc_tail, action_tail = _encoded_action_tails(
            spec, options.hash_header, options.hash_cookie, mirror
        )
    clusters = b"".join([_encoded_cluster_weight(w.cluster, w.weight) for w in weights])
    action = wire.len_field(_WEIGHTED_CLUSTERS, clusters + wc_tail) + action_tail
    return head + wire.len_field(_ROUTE_ACTION, action)


def _encoded_routes(
    spec: Route, weights: tuple[ClusterWeight, ...] | None, options: RouteOptions | None
) -> bytes:
    """:func:`mirror_route` (if any) and :func:`route` encoded as ``VirtualHost.routes``
    elements, from the memoized parts."""
    mirror = None if options is None else options.mirror
    if weights is None:
        return _encoded_plain_routes(spec, mirror)
    copy = b""
    if mirror is not None and mirror.methods is not None:
        head = _encoded_mirror_head(spec, mirror.methods)
        copy = wire.len_field(
            _ROUTES, _encoded_weighted_route(spec, head, weights, options, mirror)
        )
    own = _encoded_weighted_route(
        spec, _encoded_route_head(spec), weights, options, _own_mirror(options)
    )
    return copy + wire.len_field(_ROUTES, own)


ENCODING_MEMOS = (
    _encoded_table_head,
    _encoded_vhost_head,
    _encoded_plain_routes,
    _encoded_forced_routes,
    _encoded_route_head,
    _encoded_mirror_head,
    _encoded_action_tails,
    _encoded_cluster_weight,
)
"""Memoized betterproto2 encodings of route table parts: a miss is one encoding."""


def encoded_route_configuration(
    spec: Listener, weights: RouteWeights, options: RouteOptionsByRoute | None = None
) -> tuple[bytes, frozenset[str]]:
    """:func:`route_configuration` encoded, assembled from memoized encodings of its parts, and
    the clusters its routes can send traffic to (forcing routes and mirrors included: the
    server holds the table back until the stream has them, make-before-break)."""
    opts = options or {}
    clusters: set[str] = set()
    vhosts = []
    for vh in spec.virtual_hosts:
        entries = [_encoded_vhost_head(vh)]
        for r in vh.routes:
            own = opts.get(r.name)
            if own is not None:
                clusters.update(own.clusters())
                if own.force_header is not None:
                    entries.append(_encoded_forced_routes(r, own.force_header, own.force))
            eff = effective_weights(r, weights.get(r.name))
            if eff is not None:
                clusters.update(w.cluster for w in eff)
            elif r.cluster is not None:
                clusters.add(r.cluster)
            entries.append(_encoded_routes(r, eff, own))
        vhosts.append(wire.len_field(_VHOSTS, b"".join(entries)))
    return _encoded_table_head(spec.name) + b"".join(vhosts), frozenset(clusters)


@functools.lru_cache(maxsize=4096)
def _route_resource(
    spec: Listener,
    weights: tuple[tuple[str, tuple[tuple[str, int], ...]], ...],
    options: tuple[tuple[str, RouteOptions], ...] = (),
) -> Resource:
    by_route = {name: dict(cw) for name, cw in weights}
    config, clusters = encoded_route_configuration(spec, by_route, dict(options))
    return Resource.from_message_bytes(spec.name, typeurls.ROUTE, config, clusters)


RESOURCE_MEMOS = (_cluster_resources, _listener_resource, _route_resource)
"""Memoized resources: a miss is one resource (two for a cluster: CDS and EDS) built."""


def build_snapshot(
    gateway: Gateway,
    weights: RouteWeights,
    label: str = "",
    options: RouteOptionsByRoute | None = None,
) -> Snapshot:
    """Translate a gateway and weight overrides into a snapshot of CDS, EDS, LDS and RDS.

    Args:
        gateway: a gateway that passed its checks (unique names, known clusters).
        weights: overrides by route name; each maps cluster → relative weight.
        label: a note for logs and status (what changed).
        options: rollout options by route name (forcing header, sticky hashing, mirror).

    Raises:
        ValueError: an override or option (forcing header, mirror) names a route or cluster
            the gateway does not declare, or weights sum to 0 (Envoy would NACK it).
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
    clusters = [_cluster_resources(c) for c in gateway.spec.clusters]
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
            typeurls.CLUSTER: [c for c, _ in clusters],
            typeurls.ENDPOINT: [e for _, e in clusters],
            typeurls.LISTENER: [_listener_resource(spec) for spec in gateway.spec.listeners],
            typeurls.ROUTE: route_resources,
        },
        label=label,
    )
