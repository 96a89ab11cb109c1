"""Tap-compare in the route tables: ``RouteOptions.mirror`` becomes Envoy's
``RouteAction.request_mirror_policies``, on a ``<route>.mirror`` copy of the route for some
methods only, or on the route itself for every method; and the route tables assembled from
memoized parts stay byte-identical to :func:`resources.route_configuration` encoded whole."""

from __future__ import annotations

import pytest
import yaml
from envoy_data_plane.envoy.config.core.v3 import HeaderValueOptionHeaderAppendAction
from envoy_data_plane.envoy.config.route.v3 import Route as EnvoyRoute
from envoy_data_plane.envoy.config.route.v3 import RouteConfiguration
from envoy_data_plane.envoy.type.v3 import FractionalPercentDenominatorType
from envoy_data_plane.google.protobuf import Any as ProtoAny
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controller.policy.gateway import Gateway
from controller.xds import resources, typeurls, wire
from controller.xds.mirror import ROUTE_HEADER, Mirror
from controller.xds.resources import RouteOptions, build_snapshot
from controller.xds.snapshot import Snapshot, content_version

GATEWAY = """
apiVersion: sluice.dev/v1alpha1
kind: Gateway
metadata: {name: mirror}
spec:
  listeners:
    - name: public
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
              timeout: 1s
        - name: www
          routes:
            - {name: www-default, match: {prefix: /}, cluster: monolith}
  clusters:
    - {name: monolith, endpoints: [{address: 10.0.0.1, port: 8000}]}
    - {name: comments-python, endpoints: [{address: 10.0.0.3, port: 8000}]}
    - {name: comments-go, endpoints: [{address: 10.0.0.4, port: 9000}]}
    - {name: sluice-parity, endpoints: [{address: 10.0.0.9, port: 8095}]}
"""

SAFE = Mirror(
    cluster="sluice-parity", fraction_per_million=100_000, route="comments", methods=("GET", "HEAD")
)
EVERY = Mirror(
    cluster="sluice-parity",
    fraction_per_million=1_000_000,
    route="comments",
    methods=None,
    shadow_suffix=False,
)
FORCE = (("candidate", "comments-go"), ("baseline", "comments-python"))
WEIGHTS = {"comments": {"comments-python": 9900, "comments-go": 100}}


@pytest.fixture
def gateway() -> Gateway:
    return Gateway.model_validate(yaml.safe_load(GATEWAY))


def _table(snap: Snapshot, name: str = "public") -> bytes:
    routes = snap.get(typeurls.ROUTE)
    assert routes is not None
    message = ProtoAny.parse(routes.resources[name].any_bytes)
    assert message.type_url == typeurls.ROUTE
    return message.value


def _routes(snap: Snapshot) -> list[EnvoyRoute]:
    return RouteConfiguration.parse(_table(snap)).virtual_hosts[0].routes


def _assert_whole(
    gateway: Gateway,
    snap: Snapshot,
    weights: dict[str, dict[str, int]],
    options: dict[str, RouteOptions],
) -> None:
    """Both build paths give the same bytes: the memoized assembly of build_snapshot and
    route_configuration() encoded whole by betterproto2."""
    routes = snap.get(typeurls.ROUTE)
    assert routes is not None
    for spec in gateway.spec.listeners:
        whole = bytes(resources.route_configuration(spec, weights, options))
        served = routes.resources[spec.name]
        assert _table(snap, spec.name) == whole
        assert served.any_bytes == wire.encode_any(typeurls.ROUTE, whole)
        assert served.version == content_version(whole)


def test_safe_methods_are_mirrored_by_a_copy_of_the_route_after_the_forcing_routes(
    gateway: Gateway,
) -> None:
    options = RouteOptions(force_header="x-sluice-target", force=FORCE, mirror=SAFE)
    snap = build_snapshot(gateway, WEIGHTS, options={"comments": options})
    routes = _routes(snap)
    assert [r.name for r in routes] == [
        "comments.force-comments-go",
        "comments.force-comments-python",
        "comments.mirror",
        "comments",
        "health",
    ]
    to_go, to_python, copy, own, _ = routes
    # Forced requests (testers) and the route itself mirror nothing.
    for route in (to_go, to_python, own):
        assert not route.route.request_mirror_policies
    # The copy: the route's match plus :method, the route's whole action plus the mirror.
    assert copy.match.prefix == "/api/comments"
    *same, method = copy.match.headers
    assert [(h.name, h.invert_match) for h in same] == [("x-canary", False), ("x-debug", True)]
    assert method.name == ":method"
    assert method.string_match.safe_regex.regex == "^(?:GET|HEAD)$"
    assert not method.invert_match
    assert copy.route.weighted_clusters == own.route.weighted_clusters
    assert [(c.name, c.weight) for c in copy.route.weighted_clusters.clusters] == [
        ("comments-python", 9900),
        ("comments-go", 100),
    ]
    assert copy.route.timeout == own.route.timeout
    assert copy.route.retry_policy == own.route.retry_policy
    assert copy.route.retry_policy.num_retries == 3
    (policy,) = copy.route.request_mirror_policies
    assert policy.cluster == "sluice-parity"
    fraction = policy.runtime_fraction.default_value
    assert (fraction.numerator, fraction.denominator) == (
        100_000,
        FractionalPercentDenominatorType.MILLION,
    )
    assert policy.runtime_fraction.runtime_key == ""
    assert policy.disable_shadow_host_suffix_append is False
    (mutation,) = policy.request_headers_mutations
    assert (mutation.append.header.key, mutation.append.header.value) == (ROUTE_HEADER, "comments")
    assert (
        mutation.append.append_action
        == HeaderValueOptionHeaderAppendAction.OVERWRITE_IF_EXISTS_OR_ADD
    )
    _assert_whole(gateway, snap, WEIGHTS, {"comments": options})


def test_every_method_is_mirrored_by_the_route_itself(gateway: Gateway) -> None:
    options = RouteOptions(hash_header="x-user-id", mirror=EVERY)
    snap = build_snapshot(gateway, WEIGHTS, options={"comments": options})
    routes = _routes(snap)
    assert [r.name for r in routes] == ["comments", "health"]
    (policy,) = routes[0].route.request_mirror_policies
    assert policy.cluster == "sluice-parity"
    assert policy.runtime_fraction.default_value.numerator == 1_000_000
    assert policy.disable_shadow_host_suffix_append is True  # shadowSuffix: false
    # Sticky hashing stays, and no method condition was added.
    assert routes[0].route.weighted_clusters.use_hash_policy is True
    assert [h.name for h in routes[0].match.headers] == ["x-canary", "x-debug"]
    _assert_whole(gateway, snap, WEIGHTS, {"comments": options})


def test_a_single_cluster_route_can_be_mirrored(gateway: Gateway) -> None:
    options = {"health": RouteOptions(mirror=SAFE)}
    snap = build_snapshot(gateway, {}, options=options)
    names = [r.name for r in _routes(snap)]
    assert names == ["comments", "health.mirror", "health"]
    copy = _routes(snap)[1]
    assert copy.route.cluster == "monolith"
    assert copy.match.path == "/healthz"
    assert copy.route.request_mirror_policies[0].cluster == "sluice-parity"
    _assert_whole(gateway, snap, {}, options)


def test_without_a_mirror_the_tables_are_unchanged(gateway: Gateway) -> None:
    plain = build_snapshot(gateway, WEIGHTS)
    mirrored = build_snapshot(gateway, WEIGHTS, options={"comments": RouteOptions(mirror=SAFE)})
    assert plain.version(typeurls.ROUTE) != mirrored.version(typeurls.ROUTE)
    assert all(not r.route.request_mirror_policies for r in _routes(plain))
    again = build_snapshot(gateway, WEIGHTS, options={"comments": RouteOptions()})
    assert _table(again) == _table(plain)


def test_the_mirror_cluster_is_checked_and_named_as_a_dependency(gateway: Gateway) -> None:
    nowhere = Mirror(cluster="parity-x", fraction_per_million=1, route="comments", methods=None)
    with pytest.raises(ValueError, match=r"the mirror names unknown clusters \['parity-x'\]"):
        build_snapshot(gateway, WEIGHTS, options={"comments": RouteOptions(mirror=nowhere)})
    snap = build_snapshot(gateway, WEIGHTS, options={"comments": RouteOptions(mirror=SAFE)})
    routes = snap.get(typeurls.ROUTE)
    assert routes is not None
    # The server holds the table back until a stream has this cluster (make-before-break).
    assert "sluice-parity" in routes.resources["public"].clusters
    assert RouteOptions(force=FORCE, mirror=SAFE).clusters() == (
        "comments-go",
        "comments-python",
        "sluice-parity",
    )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"fraction_per_million": 0}, "1 to 1000000 per million, got 0"),
        ({"fraction_per_million": 1_000_001}, "got 1000001"),
        ({"methods": ()}, "at least one method"),
        ({"methods": ("GET", "get|.*")}, "upper-case tokens"),
    ],
)
def test_a_mirror_refuses_what_envoy_could_not_mean(
    kwargs: dict[str, object], message: str
) -> None:
    fields: dict[str, object] = {
        "cluster": "sluice-parity",
        "fraction_per_million": 10,
        "route": "comments",
        "methods": ("GET",),
        **kwargs,
    }
    with pytest.raises(ValueError, match=message):
        Mirror(**fields)  # type: ignore[arg-type]


MIRRORS = [SAFE, EVERY, Mirror("sluice-parity", 1, "comments", ("GET",), shadow_suffix=False)]
OPTION_CASES: list[dict[str, RouteOptions]] = [
    {"comments": RouteOptions(mirror=SAFE)},
    {"comments": RouteOptions(mirror=EVERY)},
    {"comments": RouteOptions(force_header="x-t", force=FORCE, hash_cookie="s", mirror=SAFE)},
    {"comments": RouteOptions(force_header="x-t", force=FORCE, hash_header="u", mirror=EVERY)},
    {"health": RouteOptions(mirror=EVERY), "comments": RouteOptions(mirror=MIRRORS[2])},
    {"health": RouteOptions(force_header="x-t", force=FORCE, mirror=SAFE)},
]
WEIGHT_CASES: list[dict[str, dict[str, int]]] = [
    {},
    WEIGHTS,
    {"comments": {"comments-python": 10_000, "comments-go": 0}},  # a shadow stage
    {"health": {"monolith": 80, "comments-go": 20}},
]


@pytest.mark.parametrize("options", OPTION_CASES)
@pytest.mark.parametrize("weights", WEIGHT_CASES)
def test_both_build_paths_give_the_same_bytes(
    gateway: Gateway, weights: dict[str, dict[str, int]], options: dict[str, RouteOptions]
) -> None:
    _assert_whole(gateway, build_snapshot(gateway, weights, options=options), weights, options)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    candidate=st.integers(0, 10_000),
    route=st.sampled_from(["comments", "health"]),
    force=st.booleans(),
    sticky=st.sampled_from([(None, None), ("x-user-id", None), (None, "session")]),
    fraction=st.integers(1, 1_000_000),
    methods=st.sampled_from([None, ("GET",), ("GET", "HEAD"), ("GET", "HEAD", "OPTIONS")]),
    suffix=st.booleans(),
)
def test_both_build_paths_give_the_same_bytes_property(
    gateway: Gateway,
    candidate: int,
    route: str,
    force: bool,
    sticky: tuple[str | None, str | None],
    fraction: int,
    methods: tuple[str, ...] | None,
    suffix: bool,
) -> None:
    mirror = Mirror("sluice-parity", fraction, route, methods, shadow_suffix=suffix)
    option = RouteOptions(
        force_header="x-t" if force else None,
        force=FORCE if force else (),
        hash_header=sticky[0],
        hash_cookie=sticky[1],
        mirror=mirror,
    )
    weights = {route: {"comments-python": 10_000 - candidate, "comments-go": candidate}}
    if candidate == 10_000 and route == "health":
        weights = {}  # the single-cluster route as the gateway declares it
    options = {route: option}
    _assert_whole(gateway, build_snapshot(gateway, weights, options=options), weights, options)


def _encodings() -> int:
    return sum(f.cache_info().misses for f in resources.ENCODING_MEMOS)


def test_a_weight_change_under_a_mirror_encodes_only_its_new_cluster_weights(
    gateway: Gateway,
) -> None:
    for memo in resources.ENCODING_MEMOS:  # other tests may have met these weights already
        memo.cache_clear()
    options = {"comments": RouteOptions(force_header="x-t", force=FORCE, mirror=SAFE)}
    # Weights no other test uses: test_resources counts its own encodings of 97/3 and 96/4.
    build_snapshot(
        gateway, {"comments": {"comments-python": 9123, "comments-go": 877}}, "", options
    )
    before = _encodings()
    build_snapshot(
        gateway, {"comments": {"comments-python": 9122, "comments-go": 878}}, "", options
    )
    # Two ClusterWeight messages, shared by the mirroring copy and the route.
    assert _encodings() - before == 2
