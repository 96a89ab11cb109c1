"""Route tables encoded from memoized parts: :func:`encoded_route_configuration`.

Route tables are not serialized whole: betterproto2 spends ~0.35 ms per message (it validates
every message with pydantic before encoding it), ~4 ms for a weighted route. A protobuf message
is the concatenation of its fields, and a repeated or sub-message field is its tag, its length
and the element's own encoding, so a ``RouteConfiguration`` is assembled from memoized
encodings of its parts: the fields that do not depend on the weights (route name and match, the
action's timeout, retries and hash policy, virtual host and table headers) and one encoded
``ClusterWeight`` per (cluster, weight). A weight change costs at most one betterproto2 encoding
per new (cluster, weight) pair, and the bytes are those of
:func:`~controller.xds.route_builders.route_configuration` serialized whole (tests compare them),
in betterproto2's field order. :data:`ENCODING_MEMOS` lists the memos (tests and benchmarks
count their misses).

Proto sources: envoy/config/route/v3 (route_components.proto, route.proto); the protobuf wire
format (protobuf.dev/programming-guides/encoding).
"""

from __future__ import annotations

import functools

from envoy_data_plane.envoy.config.route.v3 import (
    Route as EnvoyRoute,
)
from envoy_data_plane.envoy.config.route.v3 import (
    RouteAction,
    RouteConfiguration,
    WeightedCluster,
    WeightedClusterClusterWeight,
)
from envoy_data_plane.envoy.config.route.v3 import (
    VirtualHost as EnvoyVirtualHost,
)

from controller.policy.gateway import ClusterWeight, Listener, Route
from controller.policy.gateway import VirtualHost as VirtualHostSpec
from controller.xds import wire
from controller.xds.mirror import MIRROR_ROUTE_SUFFIX, Mirror, method_matcher, mirror_policy
from controller.xds.route_builders import (
    RouteOptions,
    RouteOptionsByRoute,
    RouteWeights,
    _finish,
    _hash_policy,
    _match,
    _own_mirror,
    effective_weights,
    forced_routes,
    mirror_route,
    route,
)

__all__ = ["ENCODING_MEMOS", "encoded_route_configuration"]

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
