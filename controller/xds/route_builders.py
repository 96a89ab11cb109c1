"""Route table message builders: a gateway route plus its weights and rollout options → Envoy
v3 ``Route`` messages, and :func:`route_configuration`, the whole ``RouteConfiguration``.

Holds :class:`RouteOptions` (what a rollout adds to a route besides the weights: forcing routes,
where a header picks a side; sticky hashing; a mirror to the comparator, tap-compare, see
:mod:`controller.xds.mirror`, whose :class:`~controller.xds.mirror.Mirror` is re-exported here),
the ``Route`` / ``RouteAction`` builders, the mirroring copy of a route and the forcing routes.

These return envoy-data-plane (betterproto2) messages. The snapshot path does not serialize
:func:`route_configuration` whole: :mod:`controller.xds.route_encoding` assembles the same bytes
from memoized encodings of these builders' parts, and tests compare the two.

Proto sources: envoy/config/route/v3 (route_components.proto, route.proto).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

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
from envoy_data_plane.envoy.type.matcher.v3 import RegexMatcher, StringMatcher

from controller.policy.gateway import (
    ClusterWeight,
    HeaderMatch,
    Listener,
    RetryPolicy,
    Route,
)
from controller.xds.mirror import MIRROR_ROUTE_SUFFIX, Mirror, method_matcher, mirror_policy

__all__ = [
    "Mirror",
    "RouteOptions",
    "RouteOptionsByRoute",
    "RouteWeights",
    "effective_weights",
    "forced_routes",
    "mirror_route",
    "route",
    "route_configuration",
]

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
