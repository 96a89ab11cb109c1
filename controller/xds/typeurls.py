"""xDS resource type URLs and the make-before-break push order.

Source: the xDS protocol, "Resource types" and "Eventual consistency considerations"
(envoyproxy.io/docs/envoy/latest/api-docs/xds_protocol): clusters before their endpoints,
before the listeners, before the route tables that name the clusters.
"""

from __future__ import annotations

from typing import Final

CLUSTER: Final = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
ENDPOINT: Final = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
LISTENER: Final = "type.googleapis.com/envoy.config.listener.v3.Listener"
ROUTE: Final = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"

PUSH_ORDER: Final[tuple[str, ...]] = (CLUSTER, ENDPOINT, LISTENER, ROUTE)
"""Make-before-break: CDS → EDS → LDS → RDS."""

WILDCARD_TYPES: Final = frozenset({CLUSTER, LISTENER})
"""Types Envoy subscribes to as a whole (an empty name list means "all")."""

SHORT_NAMES: Final = {CLUSTER: "CDS", ENDPOINT: "EDS", LISTENER: "LDS", ROUTE: "RDS"}


def short_name(type_url: str) -> str:
    """``"RDS"`` for the route type URL; the URL's last segment for any other type."""
    return SHORT_NAMES.get(type_url, type_url.rsplit("/", 1)[-1])
