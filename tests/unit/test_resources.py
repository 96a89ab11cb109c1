"""Pure resource builders: what a gateway and weights become in Envoy's v3 messages."""

from __future__ import annotations

import pytest
import yaml
from envoy_data_plane.envoy.config.cluster.v3 import Cluster as EnvoyCluster
from envoy_data_plane.envoy.config.endpoint.v3 import ClusterLoadAssignment
from envoy_data_plane.envoy.config.listener.v3 import Listener as EnvoyListener
from envoy_data_plane.envoy.config.route.v3 import RouteConfiguration
from envoy_data_plane.envoy.service.discovery.v3 import DiscoveryResponse
from envoy_data_plane.google.protobuf import Any as ProtoAny
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controller.policy.gateway import Gateway
from controller.xds import resources, typeurls, wire
from controller.xds.resources import build_snapshot
from controller.xds.snapshot import Snapshot, content_version

GATEWAY = """
apiVersion: sluice.dev/v1alpha1
kind: Gateway
metadata: {name: t}
spec:
  listeners:
    - name: public
      address: 127.0.0.1
      port: 10000
      virtualHosts:
        - name: api
          domains: [api.example.com]
          routes:
            - name: comments
              match:
                prefix: /api/comments
                headers:
                  - {name: x-canary, exact: "1"}
                  - {name: x-debug, present: true, invert: true}
              weightedClusters:
                - {cluster: comments-python, weight: 100}
                - {cluster: comments-go, weight: 0}
              timeout: 2.5s
              retryPolicy: {retryOn: [5xx, reset], numRetries: 3, perTryTimeout: 500ms}
            - name: health
              match: {path: /healthz}
              cluster: monolith
    - name: internal
      port: 10001
      virtualHosts:
        - name: all
          routes:
            - {name: internal-default, match: {prefix: /}, cluster: monolith}
  clusters:
    - name: monolith
      endpoints: [{address: 10.0.0.1, port: 8000}, {address: 10.0.0.2, port: 8000}]
    - {name: comments-python, connectTimeout: 250ms, endpoints: [{address: 10.0.0.3, port: 8000}]}
    - name: comments-go
      protocol: http2
      lbPolicy: least_request
      endpoints: [{address: 10.0.0.4, port: 9000, weight: 3}]
"""


@pytest.fixture
def gateway() -> Gateway:
    return Gateway.model_validate(yaml.safe_load(GATEWAY))


def _decode(snapshot: Snapshot, type_url: str, name: str) -> bytes:
    type_snapshot = snapshot.get(type_url)
    assert type_snapshot is not None
    message = ProtoAny.parse(type_snapshot.resources[name].any_bytes)
    assert message.type_url == type_url
    return message.value


def test_routes_carry_weights_matches_timeouts_and_retries(gateway: Gateway) -> None:
    snap = build_snapshot(gateway, {"comments": {"comments-python": 90, "comments-go": 10}})
    config = RouteConfiguration.parse(_decode(snap, typeurls.ROUTE, "public"))
    assert config.name == "public"
    (vhost,) = config.virtual_hosts
    assert vhost.domains == ["api.example.com"]
    comments, health = vhost.routes
    weighted = comments.route.weighted_clusters
    assert [(c.name, c.weight) for c in weighted.clusters] == [
        ("comments-python", 90),
        ("comments-go", 10),
    ]
    assert comments.match.prefix == "/api/comments"
    canary, debug = comments.match.headers
    assert (canary.name, canary.string_match.exact) == ("x-canary", "1")
    assert (debug.present_match, debug.invert_match) == (True, True)
    assert comments.route.timeout.total_seconds() == 2.5
    retry = comments.route.retry_policy
    assert (retry.retry_on, retry.num_retries) == ("5xx,reset", 3)
    assert retry.per_try_timeout.total_seconds() == 0.5
    assert health.match.path == "/healthz"
    assert health.route.cluster == "monolith"


def test_clusters_are_eds_over_ads_with_protocol_and_lb(gateway: Gateway) -> None:
    snap = build_snapshot(gateway, {})
    go = EnvoyCluster.parse(_decode(snap, typeurls.CLUSTER, "comments-go"))
    assert go.eds_cluster_config.eds_config.ads is not None
    assert "envoy.extensions.upstreams.http.v3.HttpProtocolOptions" in (
        go.typed_extension_protocol_options
    )
    assert go.lb_policy.name == "LEAST_REQUEST"
    py = EnvoyCluster.parse(_decode(snap, typeurls.CLUSTER, "comments-python"))
    assert py.connect_timeout.total_seconds() == 0.25
    assert not py.typed_extension_protocol_options
    cla = ClusterLoadAssignment.parse(_decode(snap, typeurls.ENDPOINT, "monolith"))
    addresses = [
        (e.endpoint.address.socket_address.address, e.endpoint.address.socket_address.port_value)
        for e in cla.endpoints[0].lb_endpoints
    ]
    assert addresses == [("10.0.0.1", 8000), ("10.0.0.2", 8000)]


def test_listener_uses_rds_named_after_itself(gateway: Gateway) -> None:
    snap = build_snapshot(gateway, {})
    listener = EnvoyListener.parse(_decode(snap, typeurls.LISTENER, "internal"))
    assert listener.address.socket_address.port_value == 10001
    assert listener.address.socket_address.address == "0.0.0.0"
    assert (
        listener.filter_chains[0].filters[0].name == "envoy.filters.network.http_connection_manager"
    )


def test_versions_are_content_hashes(gateway: Gateway) -> None:
    a = build_snapshot(gateway, {"comments": {"comments-python": 90, "comments-go": 10}})
    b = build_snapshot(gateway, {"comments": {"comments-python": 50, "comments-go": 50}})
    c = build_snapshot(gateway, {"comments": {"comments-python": 90, "comments-go": 10}})
    assert a.version(typeurls.ROUTE) != b.version(typeurls.ROUTE)
    assert a.version(typeurls.ROUTE) == c.version(typeurls.ROUTE)
    for type_url in (typeurls.CLUSTER, typeurls.ENDPOINT, typeurls.LISTENER):
        assert a.version(type_url) == b.version(type_url)
    route_a, route_b = a.get(typeurls.ROUTE), b.get(typeurls.ROUTE)
    assert route_a is not None
    assert route_b is not None
    # Only the route table holding the changed route has a new version.
    assert route_a.resources["internal"].version == route_b.resources["internal"].version
    assert route_a.resources["public"].version != route_b.resources["public"].version


def test_weight_change_serializes_only_the_changed_route_table(gateway: Gateway) -> None:
    build_snapshot(gateway, {})
    before = resources._route_resource.cache_info()
    build_snapshot(gateway, {"comments": {"comments-python": 1, "comments-go": 99}})
    after = resources._route_resource.cache_info()
    assert after.misses - before.misses == 1  # "public" rebuilt
    assert after.hits - before.hits == 1  # "internal" reused


def test_route_tables_name_the_clusters_they_depend_on(gateway: Gateway) -> None:
    snap = build_snapshot(gateway, {})
    routes = snap.get(typeurls.ROUTE)
    assert routes is not None
    assert routes.resources["public"].clusters == {"comments-python", "comments-go", "monolith"}
    assert routes.resources["internal"].clusters == {"monolith"}


def test_override_of_a_single_cluster_route_becomes_weighted(gateway: Gateway) -> None:
    snap = build_snapshot(gateway, {"health": {"monolith": 80, "comments-go": 20}})
    config = RouteConfiguration.parse(_decode(snap, typeurls.ROUTE, "public"))
    health = config.virtual_hosts[0].routes[1]
    assert [(c.name, c.weight) for c in health.route.weighted_clusters.clusters] == [
        ("monolith", 80),
        ("comments-go", 20),
    ]


@pytest.mark.parametrize(
    ("weights", "message"),
    [
        ({"nope": {"monolith": 1}}, "unknown route"),
        ({"comments": {"comments-rust": 10, "comments-python": 90}}, "unknown clusters"),
        ({"comments": {"comments-python": 0, "comments-go": 0}}, "sum to more than 0"),
        ({"comments": {"comments-python": -1, "comments-go": 2}}, ">= 0"),
    ],
)
def test_bad_weights_are_refused(
    gateway: Gateway, weights: dict[str, dict[str, int]], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        build_snapshot(gateway, weights)


def test_sotw_body_parses_as_discovery_response(gateway: Gateway) -> None:
    snap = build_snapshot(gateway, {})
    clusters = snap.get(typeurls.CLUSTER)
    assert clusters is not None
    body = clusters.sotw_body(None)
    response = DiscoveryResponse.parse(body + b"\x2a\x03n-1")  # field 5 (nonce) = "n-1"
    assert response.version_info == clusters.version
    assert response.type_url == typeurls.CLUSTER
    assert response.nonce == "n-1"
    assert sorted(EnvoyCluster.parse(r.value).name for r in response.resources) == [
        "comments-go",
        "comments-python",
        "monolith",
    ]
    assert clusters.sotw_body(None) is body  # memoized: one encoding per subscription


ROLLOUT_OPTIONS = resources.RouteOptions(
    force_header="x-sluice-target",
    force=(("candidate", "comments-go"), ("baseline", "comments-python")),
    hash_header="x-user-id",
)


def test_forcing_routes_come_first_with_the_same_match_plus_the_header(gateway: Gateway) -> None:
    snap = build_snapshot(
        gateway,
        {"comments": {"comments-python": 9900, "comments-go": 100}},
        options={"comments": ROLLOUT_OPTIONS},
    )
    config = RouteConfiguration.parse(_decode(snap, typeurls.ROUTE, "public"))
    names = [r.name for r in config.virtual_hosts[0].routes]
    assert names == [
        "comments.force-comments-go",
        "comments.force-comments-python",
        "comments",
        "health",
    ]
    to_go, to_python, weighted, _ = config.virtual_hosts[0].routes
    for forced, value, cluster in (
        (to_go, "candidate", "comments-go"),
        (to_python, "baseline", "comments-python"),
    ):
        assert forced.route.cluster == cluster
        assert forced.match.prefix == "/api/comments"
        *same, extra = forced.match.headers
        assert [h.name for h in same] == ["x-canary", "x-debug"]  # the route's own conditions
        assert (extra.name, extra.string_match.exact) == ("x-sluice-target", value)
        assert forced.route.timeout.total_seconds() == 2.5  # the route's timeout and retries
        assert forced.route.retry_policy.num_retries == 3
    # Sticky: the weighted cluster is picked from the hash of x-user-id.
    assert weighted.route.weighted_clusters.use_hash_policy is True
    (policy,) = weighted.route.hash_policy
    assert policy.header.header_name == "x-user-id"


def test_sticky_cookie_and_no_options(gateway: Gateway) -> None:
    weights = {"comments": {"comments-python": 50, "comments-go": 50}}
    cookie = resources.RouteOptions(hash_cookie="session")
    snap = build_snapshot(gateway, weights, options={"comments": cookie})
    routes = RouteConfiguration.parse(_decode(snap, typeurls.ROUTE, "public")).virtual_hosts[0]
    (policy,) = routes.routes[0].route.hash_policy
    assert policy.cookie.name == "session"
    assert [r.name for r in routes.routes] == ["comments", "health"]  # no forcing header
    plain = build_snapshot(gateway, weights)
    bare = RouteConfiguration.parse(_decode(plain, typeurls.ROUTE, "public")).virtual_hosts[0]
    assert not bare.routes[0].route.hash_policy
    assert not bare.routes[0].route.weighted_clusters.use_hash_policy
    assert plain.version(typeurls.ROUTE) != snap.version(typeurls.ROUTE)


def test_options_are_checked(gateway: Gateway) -> None:
    with pytest.raises(ValueError, match="unknown route"):
        build_snapshot(gateway, {}, options={"nope": ROLLOUT_OPTIONS})
    rust = resources.RouteOptions(force_header="x-t", force=(("candidate", "comments-rust"),))
    with pytest.raises(ValueError, match="unknown clusters"):
        build_snapshot(gateway, {}, options={"comments": rust})


# --- route tables assembled from memoized encodings ------------------------------------------

RICH_GATEWAY = """
apiVersion: sluice.dev/v1alpha1
kind: Gateway
metadata: {name: rich}
spec:
  listeners:
    - name: public
      port: 10000
      virtualHosts:
        - name: api
          domains: [api.example.com, "api.example.com:10000"]
          routes:
            - name: comments
              match:
                prefix: /api/comments
                headers:
                  - {name: x-canary, exact: "1"}
                  - {name: x-debug, present: true, invert: true}
                  - {name: x-tenant, prefix: acme-}
                  - {name: x-trace, regex: "^[0-9a-f]{16}$"}
              weightedClusters:
                - {cluster: comments-python, weight: 100}
                - {cluster: comments-go, weight: 0}
              timeout: 2.5s
              retryPolicy: {retryOn: [5xx, reset], numRetries: 3, perTryTimeout: 500ms}
            - name: search
              match: {path: /api/search}
              weightedClusters:
                - {cluster: monolith, weight: 7000}
                - {cluster: comments-go, weight: 3000}
              timeout: 0s
              retryPolicy: {retryOn: [connect-failure]}
            - name: health
              match: {path: /healthz}
              cluster: monolith
        - name: www
          routes:
            - {name: www-default, match: {prefix: /}, cluster: monolith, timeout: 30s}
    - name: internal
      port: 10001
      virtualHosts:
        - name: all
          routes:
            - {name: internal-default, match: {prefix: /}, cluster: monolith}
  clusters:
    - {name: monolith, endpoints: [{address: 10.0.0.1, port: 8000}]}
    - {name: comments-python, endpoints: [{address: 10.0.0.3, port: 8000}]}
    - {name: comments-go, endpoints: [{address: 10.0.0.4, port: 9000}]}
"""

STICKY_FORCED = resources.RouteOptions(
    force_header="x-sluice-target",
    force=(("candidate", "comments-go"), ("baseline", "comments-python")),
    hash_header="x-user-id",
)
OPTION_CASES: list[dict[str, resources.RouteOptions]] = [
    {},
    {"comments": STICKY_FORCED},
    {"comments": resources.RouteOptions(hash_cookie="session")},
    {"comments": resources.RouteOptions(force_header="x-t", force=(("c", "comments-go"),))},
    {  # forcing routes before a single-cluster route; sticky options on a route without override
        "health": resources.RouteOptions(force_header="x-t", force=(("c", "comments-go"),)),
        "search": resources.RouteOptions(hash_header="x-user-id"),
    },
]
WEIGHT_CASES: list[dict[str, dict[str, int]]] = [
    {},
    {"comments": {"comments-python": 90, "comments-go": 10}},
    {"comments": {"comments-python": 0, "comments-go": 100}},
    {"comments": {"comments-go": 10_000, "monolith": 1}},  # another cluster, in name order
    {"health": {"monolith": 80, "comments-go": 20}, "search": {"monolith": 128, "comments-go": 0}},
]


@pytest.fixture
def rich() -> Gateway:
    return Gateway.model_validate(yaml.safe_load(RICH_GATEWAY))


def _assert_tables_are_whole_encodings(
    gateway: Gateway,
    snap: Snapshot,
    weights: dict[str, dict[str, int]],
    options: dict[str, resources.RouteOptions],
) -> None:
    """Every route table's bytes are those of route_configuration() serialized by betterproto2."""
    routes = snap.get(typeurls.ROUTE)
    assert routes is not None
    for spec in gateway.spec.listeners:
        whole = bytes(resources.route_configuration(spec, weights, options))
        served = routes.resources[spec.name]
        assert _decode(snap, typeurls.ROUTE, spec.name) == whole
        assert served.any_bytes == wire.encode_any(typeurls.ROUTE, whole)
        assert served.version == content_version(whole)


@pytest.mark.parametrize("options", OPTION_CASES)
@pytest.mark.parametrize("weights", WEIGHT_CASES)
def test_route_tables_assembled_from_parts_are_byte_identical(
    rich: Gateway, weights: dict[str, dict[str, int]], options: dict[str, resources.RouteOptions]
) -> None:
    snap = build_snapshot(rich, weights, options=options)
    _assert_tables_are_whole_encodings(rich, snap, weights, options)


def test_route_tables_stay_byte_identical_across_weight_changes(rich: Gateway) -> None:
    """A rollout's steps, each reusing the memoized parts of the previous ones, then back."""
    steps = [0, 1, 5, 25, 50, 100, 50, 1, 0]
    for i, step in enumerate(steps):
        weights = {"comments": {"comments-python": 100 - step, "comments-go": step}}
        options = {"comments": STICKY_FORCED} if 0 < i < len(steps) - 1 else {}
        snap = build_snapshot(rich, weights, options=options)
        _assert_tables_are_whole_encodings(rich, snap, weights, options)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    comments=st.one_of(
        st.none(),
        st.dictionaries(
            st.sampled_from(["comments-python", "comments-go", "monolith"]),
            st.integers(0, 10_000),
            min_size=1,
        ).filter(lambda w: sum(w.values()) > 0),
    ),
    force=st.lists(
        st.tuples(st.sampled_from(["a", "b", "candidate"]), st.sampled_from(["comments-go"])),
        max_size=2,
    ),
    sticky=st.sampled_from([(None, None), ("x-user-id", None), (None, "session")]),
)
def test_assembled_route_tables_match_whole_encodings_property(
    rich: Gateway,
    comments: dict[str, int] | None,
    force: list[tuple[str, str]],
    sticky: tuple[str | None, str | None],
) -> None:
    weights = {} if comments is None else {"comments": comments}
    option = resources.RouteOptions(
        force_header="x-t" if force else None,
        force=tuple(force),
        hash_header=sticky[0],
        hash_cookie=sticky[1],
    )
    options = {} if option == resources.RouteOptions() else {"comments": option}
    snap = build_snapshot(rich, weights, options=options)
    _assert_tables_are_whole_encodings(rich, snap, weights, options)


def _encodings() -> int:
    return sum(f.cache_info().misses for f in resources.ENCODING_MEMOS)


def test_a_weight_change_encodes_only_its_new_cluster_weights(rich: Gateway) -> None:
    # Other tests may have encoded these very weights already (the memos live as long as the
    # process): start from empty memos so that the count does not depend on test order.
    for memo in resources.ENCODING_MEMOS:
        memo.cache_clear()
    build_snapshot(rich, {"comments": {"comments-python": 97, "comments-go": 3}})
    before = _encodings()
    build_snapshot(rich, {"comments": {"comments-python": 96, "comments-go": 4}})
    assert _encodings() - before == 2  # two ClusterWeight messages; nothing else re-encoded
    before = _encodings()
    build_snapshot(rich, {"comments": {"comments-python": 97, "comments-go": 3}})
    build_snapshot(rich, {"comments": {"comments-python": 96, "comments-go": 3}})
    assert _encodings() == before  # every part known already
