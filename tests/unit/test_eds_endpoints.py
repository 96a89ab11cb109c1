"""Live endpoints of ``kubernetes`` clusters: only the EDS version moves, weights stay, and a
gateway reload keeps what Kubernetes reported."""

from __future__ import annotations

import pytest
import yaml
from envoy_data_plane.envoy.config.endpoint.v3 import ClusterLoadAssignment
from envoy_data_plane.google.protobuf import Any as ProtoAny

from controller.policy.gateway import Endpoint, Gateway
from controller.xds import typeurls
from controller.xds.cache import SnapshotCache
from controller.xds.resources import build_snapshot
from controller.xds.snapshot import Snapshot
from controller.xds.weights import WeightController

GATEWAY = """
apiVersion: sluice.dev/v1alpha1
kind: Gateway
metadata: {name: demo}
spec:
  listeners:
    - name: public
      address: 127.0.0.1
      port: 10000
      virtualHosts:
        - name: api
          routes:
            - name: comments
              match: {prefix: /}
              weightedClusters:
                - {cluster: comments-python, weight: 100}
                - {cluster: comments-go, weight: 0}
  clusters:
    - name: comments-python
      endpoints: [{address: 127.0.0.1, port: 8001}]
    - name: comments-go
      kubernetes: {service: comments-go, port: http}
"""
OTHER_TYPES = (typeurls.CLUSTER, typeurls.LISTENER, typeurls.ROUTE)
A = (Endpoint(address="10.0.0.1", port=8080),)
AB = (*A, Endpoint(address="10.0.0.2", port=8080))
HALF = {"comments-python": 50, "comments-go": 50}


def _gateway(go: dict[str, object] | None = None, name: str = "demo") -> Gateway:
    data = yaml.safe_load(GATEWAY)
    data["metadata"]["name"] = name
    if go is not None:
        data["spec"]["clusters"][1] = {"name": "comments-go", **go}
    return Gateway.model_validate(data)


def _hosts(snapshot: Snapshot, cluster: str) -> list[tuple[str, int]]:
    eds = snapshot.get(typeurls.ENDPOINT)
    assert eds is not None
    cla = ClusterLoadAssignment.parse(ProtoAny.parse(eds.resources[cluster].any_bytes).value)
    assert cla.cluster_name == cluster
    out = []
    for locality in cla.endpoints:
        for lb in locality.lb_endpoints:
            assert lb.endpoint is not None
            assert lb.endpoint.address is not None
            sock = lb.endpoint.address.socket_address
            assert sock is not None
            out.append((sock.address, sock.port_value or 0))
    return out


def _versions(snapshot: Snapshot) -> dict[str, str | None]:
    return {t: snapshot.version(t) for t in OTHER_TYPES}


# --- build_snapshot --------------------------------------------------------------------------


def test_a_kubernetes_cluster_without_endpoints_is_an_empty_assignment() -> None:
    snapshot = build_snapshot(_gateway(), {})
    assert _hosts(snapshot, "comments-go") == []
    assert _hosts(snapshot, "comments-python") == [("127.0.0.1", 8001)]


def test_live_endpoints_move_only_the_eds_version() -> None:
    gw = _gateway()
    empty = build_snapshot(gw, {})
    live = build_snapshot(gw, {}, endpoints={"comments-go": AB})
    assert _hosts(live, "comments-go") == [("10.0.0.1", 8080), ("10.0.0.2", 8080)]
    assert live.version(typeurls.ENDPOINT) != empty.version(typeurls.ENDPOINT)
    assert _versions(live) == _versions(empty)
    # The static cluster's resource is untouched.
    eds_live, eds_empty = live.get(typeurls.ENDPOINT), empty.get(typeurls.ENDPOINT)
    assert eds_live is not None
    assert eds_empty is not None
    assert eds_live.resources["comments-python"] == eds_empty.resources["comments-python"]
    # Same set, same bytes and version.
    again = build_snapshot(gw, {}, endpoints={"comments-go": tuple(AB)})
    assert again.version(typeurls.ENDPOINT) == live.version(typeurls.ENDPOINT)


@pytest.mark.parametrize(
    ("cluster", "words"),
    [("comments-python", "not kubernetes clusters"), ("nowhere", "not kubernetes clusters")],
)
def test_endpoints_for_static_or_unknown_clusters_are_refused(cluster: str, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        build_snapshot(_gateway(), {}, endpoints={cluster: A})


# --- WeightController.set_endpoints ----------------------------------------------------------


def _controller(gw: Gateway | None = None) -> tuple[WeightController, SnapshotCache]:
    gw = gw or _gateway()
    cache = SnapshotCache(build_snapshot(gw, {}, label="test"))
    return WeightController(gw, cache), cache


async def test_set_endpoints_keeps_weights_and_other_versions() -> None:
    ctl, cache = _controller()
    await ctl.set_weights("comments", HALF, timeout_s=0.1)
    before = cache.snapshot
    result = await ctl.set_endpoints("comments-go", AB, timeout_s=0.1)
    assert result.outcome == "no_nodes"  # nobody connected in this test
    after = cache.snapshot
    assert after.version(typeurls.ENDPOINT) != before.version(typeurls.ENDPOINT)
    assert _versions(after) == _versions(before)
    assert ctl.current() == {"comments": HALF}
    assert _hosts(after, "comments-go") == [("10.0.0.1", 8080), ("10.0.0.2", 8080)]
    assert ctl.endpoints() == {"comments-go": AB}

    # A weight change afterwards keeps the endpoints.
    await ctl.set_weights("comments", {"comments-python": 10, "comments-go": 90}, timeout_s=0.1)
    assert _hosts(cache.snapshot, "comments-go") == [("10.0.0.1", 8080), ("10.0.0.2", 8080)]
    assert cache.snapshot.version(typeurls.ENDPOINT) == after.version(typeurls.ENDPOINT)


async def test_zero_endpoints_is_an_empty_assignment() -> None:
    ctl, cache = _controller()
    await ctl.set_endpoints("comments-go", A, timeout_s=0.1)
    await ctl.set_endpoints("comments-go", (), timeout_s=0.1)
    assert _hosts(cache.snapshot, "comments-go") == []
    assert ctl.endpoints() == {"comments-go": ()}


async def test_an_unchanged_set_serves_the_same_version() -> None:
    ctl, cache = _controller()
    await ctl.set_endpoints("comments-go", AB, timeout_s=0.1)
    version = cache.snapshot.version(typeurls.ENDPOINT)
    await ctl.set_endpoints("comments-go", list(AB), timeout_s=0.1)
    assert cache.snapshot.version(typeurls.ENDPOINT) == version


@pytest.mark.parametrize(("cluster", "kind"), [("comments-python", "static"), ("x", "unknown")])
async def test_set_endpoints_refuses_static_and_unknown_clusters(cluster: str, kind: str) -> None:
    ctl, cache = _controller()
    before = cache.snapshot
    with pytest.raises(ValueError, match=f"{kind} cluster '{cluster}'"):
        await ctl.set_endpoints(cluster, A)
    assert cache.snapshot is before


async def test_a_reload_keeps_the_live_endpoints_of_the_same_service() -> None:
    ctl, cache = _controller()
    await ctl.set_weights("comments", HALF, timeout_s=0.1)
    await ctl.set_endpoints("comments-go", AB, timeout_s=0.1)
    eds = cache.snapshot.version(typeurls.ENDPOINT)
    change = await ctl.replace_gateway(_gateway(name="renamed"), timeout_s=0.1)
    assert not change.reverted
    assert _hosts(cache.snapshot, "comments-go") == [("10.0.0.1", 8080), ("10.0.0.2", 8080)]
    assert cache.snapshot.version(typeurls.ENDPOINT) == eds
    assert ctl.current() == {"comments": HALF}


async def test_a_reload_drops_endpoints_of_another_service_or_a_static_cluster() -> None:
    ctl, cache = _controller()
    await ctl.set_endpoints("comments-go", AB, timeout_s=0.1)
    await ctl.replace_gateway(
        _gateway({"kubernetes": {"service": "comments-go-v2", "port": "http"}}), timeout_s=0.1
    )
    assert _hosts(cache.snapshot, "comments-go") == []
    assert ctl.endpoints() == {}

    await ctl.set_endpoints("comments-go", A, timeout_s=0.1)
    static = _gateway({"endpoints": [{"address": "127.0.0.1", "port": 8002}]})
    await ctl.replace_gateway(static, timeout_s=0.1)
    assert _hosts(cache.snapshot, "comments-go") == [("127.0.0.1", 8002)]
    assert ctl.endpoints() == {}
    with pytest.raises(ValueError, match="static cluster"):
        await ctl.set_endpoints("comments-go", A)


async def test_a_controller_starts_from_given_endpoints() -> None:
    gw = _gateway()
    cache = SnapshotCache(build_snapshot(gw, {}, label="test"))
    WeightController(gw, cache, endpoints={"comments-go": A})
    assert _hosts(cache.snapshot, "comments-go") == [("10.0.0.1", 8080)]


async def test_a_reload_may_bring_the_endpoints_of_its_new_services() -> None:
    ctl, cache = _controller()
    await ctl.set_endpoints("comments-go", AB, timeout_s=0.1)
    v2 = _gateway({"kubernetes": {"service": "comments-go-v2", "port": "http"}})
    await ctl.replace_gateway(v2, timeout_s=0.1, endpoints={"comments-go": A})
    assert _hosts(cache.snapshot, "comments-go") == [("10.0.0.1", 8080)]
    assert ctl.endpoints() == {"comments-go": A}

    before = cache.snapshot
    with pytest.raises(ValueError, match="not kubernetes clusters"):
        await ctl.replace_gateway(_gateway(), timeout_s=0.1, endpoints={"comments-python": A})
    assert cache.snapshot is before
    assert ctl.gateway is v2
