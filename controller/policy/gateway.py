"""The gateway file: what Envoy serves besides the weights under rollout.

Listeners, their virtual hosts and routes, and the upstream clusters, whose endpoints are
static (``endpoints``) or the ready endpoints of a Kubernetes Service (``kubernetes``).
Each model maps onto one Envoy v3 message (named in its docstring); ``controller.xds.resources``
does the translation. Field names are camelCase in YAML (Kubernetes style) and snake_case here.

Shape (YAML)::

    apiVersion: sluice.dev/v1alpha1
    kind: Gateway
    metadata: {name: demo}
    spec:
      listeners:
        - name: http
          address: 127.0.0.1
          port: 10000
          virtualHosts:
            - name: api
              domains: ["*"]
              routes:
                - name: comments
                  match: {prefix: /api/comments}
                  weightedClusters:
                    - {cluster: comments-python, weight: 100}
                    - {cluster: comments-go, weight: 0}
      clusters:
        - name: comments-python
          endpoints: [{address: 127.0.0.1, port: 8001}]
        - name: comments-go
          kubernetes: {service: comments-go, namespace: shop, port: http}
"""

from __future__ import annotations

from datetime import timedelta
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

from controller.policy.gateway_kubernetes import KubernetesService
from controller.policy.units import Duration

NAME_PATTERN = r"^[a-z0-9]([a-z0-9._-]{0,251}[a-z0-9])?$"
"""Names of listeners, routes, virtual hosts and clusters: DNS-label-like, lower case."""


class _Model(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )


class HeaderMatch(_Model):
    """One request header condition: ``envoy.config.route.v3.HeaderMatcher``.

    Exactly one of ``exact``, ``prefix``, ``regex`` (RE2, ``safe_regex``) or ``present``.
    ``invert`` negates the match (``invert_match``).
    """

    name: str = Field(
        min_length=1,
        pattern=r"^[A-Za-z0-9!#$%&'*+.^_`|~:-]+$",
        description="The header's name, case-insensitive; pseudo-headers such as `:authority` too.",
    )
    exact: str | None = Field(default=None, description="The header's value equals this.")
    prefix: str | None = Field(default=None, description="The header's value starts with this.")
    regex: str | None = Field(
        default=None, description="The header's value matches this RE2 regular expression."
    )
    present: bool | None = Field(
        default=None,
        description="`true`: the header is present (any value); `false`: it is absent.",
    )
    invert: bool = Field(default=False, description="Negate the match (`invert_match`).")

    @model_validator(mode="after")
    def _one_kind(self) -> HeaderMatch:
        kinds = [k for k in ("exact", "prefix", "regex", "present") if getattr(self, k) is not None]
        if len(kinds) != 1:
            raise ValueError(
                f"header match {self.name!r} needs exactly one of exact, prefix, regex, present"
                f" (got {', '.join(kinds) or 'none'})"
            )
        return self


class RouteMatch(_Model):
    """Which requests a route takes: ``envoy.config.route.v3.RouteMatch``.

    Exactly one of ``prefix`` (path prefix) or ``path`` (exact path), plus optional headers that
    must all match.
    """

    prefix: str | None = Field(
        default=None, pattern=r"^/", description="The request path starts with this."
    )
    path: str | None = Field(
        default=None, pattern=r"^/", description="The request path (without the query) is this."
    )
    headers: tuple[HeaderMatch, ...] = Field(
        default=(), description="Header conditions that must all hold. Omitted: none."
    )

    @model_validator(mode="after")
    def _one_path_kind(self) -> RouteMatch:
        if (self.prefix is None) == (self.path is None):
            raise ValueError("a route match needs exactly one of prefix or path")
        return self


RetryOn = Literal[
    "5xx",
    "gateway-error",
    "reset",
    "reset-before-request",
    "connect-failure",
    "envoy-ratelimited",
    "retriable-4xx",
    "refused-stream",
    "retriable-status-codes",
    "retriable-headers",
    "http3-post-connect-failure",
    # gRPC status conditions (x-envoy-retry-grpc-on), for gRPC upstreams.
    "cancelled",
    "deadline-exceeded",
    "internal",
    "resource-exhausted",
    "unavailable",
]


class RetryPolicy(_Model):
    """``envoy.config.route.v3.RetryPolicy``: when and how often Envoy retries a request.

    ``retryOn`` lists Envoy's ``x-envoy-retry-on`` conditions; ``perTryTimeout`` bounds each try.
    """

    retry_on: tuple[RetryOn, ...] = Field(
        min_length=1,
        description="The conditions that make Envoy retry (`x-envoy-retry-on`; the gRPC ones"
        " from `x-envoy-retry-grpc-on`).",
    )
    num_retries: int = Field(
        default=1, ge=0, le=10, description="Retries at most, a count (the first try excluded)."
    )
    per_try_timeout: Duration | None = Field(
        default=None,
        description="The time limit of each try. Omitted: only the route's `timeout` applies.",
    )


class ClusterWeight(_Model):
    """One entry of ``weighted_clusters``: ``envoy.config.route.v3.WeightedCluster.ClusterWeight``.

    ``weight`` is relative: Envoy sends a request to a cluster with probability
    weight / sum(weights). Sluice writes percentages, so weights normally sum to 100.
    """

    cluster: str = Field(pattern=NAME_PATTERN, description="A cluster of `spec.clusters`.")
    weight: int = Field(
        ge=0,
        le=10_000,
        description="A relative weight, unitless: the cluster's share is weight / sum of the"
        " route's weights (normally written to sum to 100, i.e. percent).",
    )


class Route(_Model):
    """One route: ``envoy.config.route.v3.Route`` with a ``RouteAction``.

    Exactly one of ``cluster`` (a single upstream) or ``weightedClusters``. ``name`` is unique
    across the gateway: rollouts and ``sluice xds set-weights`` address routes by it.
    ``timeout`` is the whole-request timeout (Envoy's default is 15s; ``0s`` disables it).
    """

    name: str = Field(
        pattern=NAME_PATTERN,
        description="The route's name, unique in the gateway: policies and `sluice xds"
        " set-weights` address the route by it.",
    )
    match: RouteMatch = Field(description="Which requests the route takes.")
    cluster: str | None = Field(
        default=None,
        pattern=NAME_PATTERN,
        description="The one cluster every request goes to (or use `weightedClusters`).",
    )
    weighted_clusters: tuple[ClusterWeight, ...] | None = Field(
        default=None,
        min_length=1,
        description="Clusters sharing the requests by weight (or use `cluster`); each cluster"
        " at most once, weights summing to more than 0. A rollout moves these weights.",
    )
    timeout: Duration | None = Field(
        default=None,
        description="The whole request's time limit. Omitted: Envoy's default, 15s; `0s`"
        " disables it.",
    )
    retry_policy: RetryPolicy | None = Field(
        default=None, description="When Envoy retries. Omitted: no retries."
    )

    @model_validator(mode="after")
    def _one_action(self) -> Route:
        if (self.cluster is None) == (self.weighted_clusters is None):
            raise ValueError(
                f"route {self.name!r} needs exactly one of cluster or weightedClusters"
            )
        if self.weighted_clusters is not None:
            names = [w.cluster for w in self.weighted_clusters]
            if len(set(names)) != len(names):
                raise ValueError(f"route {self.name!r} lists a cluster twice in weightedClusters")
            if sum(w.weight for w in self.weighted_clusters) <= 0:
                raise ValueError(f"route {self.name!r}: weightedClusters weights sum to 0")
        return self

    def referenced_clusters(self) -> tuple[str, ...]:
        """The clusters this route can send requests to, in file order."""
        if self.weighted_clusters is not None:
            return tuple(w.cluster for w in self.weighted_clusters)
        assert self.cluster is not None
        return (self.cluster,)


class VirtualHost(_Model):
    """``envoy.config.route.v3.VirtualHost``: a set of domains and their ordered routes."""

    name: str = Field(pattern=NAME_PATTERN, description="The virtual host's name.")
    domains: tuple[str, ...] = Field(
        default=("*",),
        min_length=1,
        description="Host (`:authority`) values served, with an optional `*` wildcard prefix or"
        " suffix; `*` alone matches any host.",
    )
    routes: tuple[Route, ...] = Field(
        min_length=1, description="The routes, tried in order: the first match takes the request."
    )


class Listener(_Model):
    """An HTTP listener: ``envoy.config.listener.v3.Listener`` with an HTTP connection manager.

    Its route table is served over RDS under the route configuration name ``<listener name>``.
    ``port: 0`` lets the kernel pick a port (read it back from Envoy's admin ``/listeners``).
    """

    name: str = Field(
        pattern=NAME_PATTERN,
        description="The listener's name, also the name of its route configuration (RDS).",
    )
    address: str = Field(default="0.0.0.0", description="The IP address Envoy listens on.")
    port: int = Field(
        ge=0, le=65535, description="The TCP port Envoy listens on; 0: the kernel picks one."
    )
    virtual_hosts: tuple[VirtualHost, ...] = Field(
        min_length=1, description="The virtual hosts, chosen by the request's host."
    )
    stat_prefix: str | None = Field(
        default=None,
        description="The HTTP connection manager's `stat_prefix` (its statistics'"
        " `http.<prefix>.` names). Omitted: the listener's name.",
    )


class Endpoint(_Model):
    """A static upstream address: ``envoy.config.endpoint.v3.LbEndpoint``."""

    address: str = Field(
        min_length=1,
        description="The upstream's IP address (served over EDS, which takes no host names).",
    )
    port: int = Field(ge=1, le=65535, description="The upstream's TCP port.")
    weight: int | None = Field(
        default=None,
        ge=1,
        le=128,
        description="The endpoint's relative load-balancing weight, unitless"
        " (`load_balancing_weight`). Omitted: all endpoints alike.",
    )


class Cluster(_Model):
    """An upstream cluster: ``envoy.config.cluster.v3.Cluster`` of type EDS.

    Sluice serves its endpoints over EDS (``ClusterLoadAssignment``): exactly one of
    ``endpoints`` (static addresses) or ``kubernetes`` (the ready endpoints of a Service, which
    the controller follows; none known yet is an empty assignment, answered 503 by Envoy).
    ``protocol: http2`` speaks HTTP/2 to the upstream
    (``HttpProtocolOptions.explicit_http_config``).
    """

    name: str = Field(
        pattern=NAME_PATTERN,
        description="The cluster's name, unique in the gateway: routes and policies name it.",
    )
    connect_timeout: Duration = Field(
        default=timedelta(seconds=1),
        description="The time limit to open a connection to one of its endpoints.",
    )
    protocol: Literal["http1", "http2"] = Field(
        default="http1", description="The HTTP version spoken to the upstream."
    )
    lb_policy: Literal["round_robin", "least_request", "random"] = Field(
        default="round_robin",
        description="How Envoy picks an endpoint (`Cluster.lb_policy`).",
    )
    endpoints: tuple[Endpoint, ...] = Field(
        default=(),
        min_length=1,
        description="Static upstream addresses (or use `kubernetes`).",
    )
    kubernetes: KubernetesService | None = Field(
        default=None,
        description="Follow the ready endpoints of a Kubernetes Service (or use `endpoints`);"
        " needs `sluice serve --kubernetes`.",
    )

    @model_validator(mode="after")
    def _one_source(self) -> Cluster:
        static = "endpoints" in self.model_fields_set
        if static == (self.kubernetes is not None):
            got = "both" if static else "neither"
            raise ValueError(
                f"cluster {self.name!r} needs exactly one of endpoints (static addresses) or"
                f" kubernetes (a Service's EndpointSlices), got {got}"
            )
        return self


class GatewaySpec(_Model):
    """What Envoy serves: listeners (with their routes) and clusters."""

    listeners: tuple[Listener, ...] = Field(
        min_length=1, description="Where Envoy accepts requests, and how it routes them."
    )
    clusters: tuple[Cluster, ...] = Field(
        min_length=1, description="The upstreams routes send requests to."
    )


class Metadata(_Model):
    """Kubernetes-style object metadata (only the name is used)."""

    name: str = Field(
        pattern=NAME_PATTERN,
        description="The object's name: lower-case letters, digits, `.`, `_` and `-`.",
    )


class Gateway(_Model):
    """A gateway file: ``apiVersion: sluice.dev/v1alpha1``, ``kind: Gateway``.

    Cross-references (unique names, routes naming known clusters) are checked by
    :func:`controller.policy.gateway_checks.check_gateway`, which reports field paths.
    """

    api_version: Literal["sluice.dev/v1alpha1"] = Field(description="The file format's version.")
    kind: Literal["Gateway"] = Field(description="What the file holds.")
    metadata: Metadata = Field(description="The gateway's name.")
    spec: GatewaySpec = Field(description="What Envoy serves.")

    def routes(self) -> dict[str, Route]:
        """All routes by name (names are unique once the gateway passed its checks)."""
        return {
            route.name: route
            for listener in self.spec.listeners
            for vhost in listener.virtual_hosts
            for route in vhost.routes
        }

    def cluster_names(self) -> frozenset[str]:
        """Names of all declared clusters."""
        return frozenset(c.name for c in self.spec.clusters)

    def kubernetes_clusters(self) -> dict[str, KubernetesService]:
        """Clusters whose endpoints come from Kubernetes, by name, with their Service."""
        return {c.name: c.kubernetes for c in self.spec.clusters if c.kubernetes is not None}
