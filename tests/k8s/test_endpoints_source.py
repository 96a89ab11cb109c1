"""EndpointsSource against the fake API server: slices created, changed and deleted become
callbacks with each cluster's ready set; the watch resumes; reports reach a WeightController."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import kubernetes.client
import pytest
import yaml
from fakekube import FakeKube

from controller.k8s.endpoints_source import EndpointsSource, forward_to, service_selector
from controller.k8s.endpointslices import SERVICE_NAME_LABEL
from controller.policy.gateway import Endpoint, Gateway
from controller.xds import typeurls
from controller.xds.cache import SnapshotCache
from controller.xds.resources import build_snapshot
from controller.xds.weights import WeightController

WAIT_S = 10.0
"""How long a test waits for something it expects (a bound, not a measured time)."""

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
                - {cluster: search, weight: 0}
  clusters:
    - name: comments-python
      endpoints: [{address: 127.0.0.1, port: 8001}]
    - name: comments-go
      kubernetes: {service: comments-go, port: http}
    - name: search
      kubernetes: {service: search, namespace: search, port: 50051}
"""
GATEWAY_GW = Gateway.model_validate(yaml.safe_load(GATEWAY))


def _slice(
    name: str,
    service: str,
    addresses: dict[str, bool | None],
    ports: list[dict[str, Any]] | None = None,
) -> Any:
    """An EndpointSlice body (a dict: the client takes it as it takes a V1EndpointSlice)."""
    endpoints = []
    for address, ready in addresses.items():
        ep: dict[str, Any] = {"addresses": [address]}
        if ready is not None:
            ep["conditions"] = {"ready": ready}
        endpoints.append(ep)
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": name, "labels": {SERVICE_NAME_LABEL: service}},
        "addressType": "IPv4",
        "ports": ports if ports is not None else [{"name": "http", "port": 8080}],
        "endpoints": endpoints,
    }


def _eps(*addresses: str, port: int = 8080) -> tuple[Endpoint, ...]:
    return tuple(Endpoint(address=a, port=port) for a in addresses)


class Reports:
    """Collects callbacks (from the source's worker thread) and waits for them."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Endpoint, ...]]] = []
        self._cond = threading.Condition()

    def __call__(self, cluster: str, endpoints: tuple[Endpoint, ...]) -> None:
        with self._cond:
            self.calls.append((cluster, endpoints))
            self._cond.notify_all()

    def of(self, cluster: str) -> list[tuple[Endpoint, ...]]:
        with self._cond:
            return [eps for c, eps in self.calls if c == cluster]

    def wait(self, check: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + WAIT_S
        with self._cond:
            while not check():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"not within {WAIT_S}s: {what}; calls: {self.calls}")
                self._cond.wait(remaining)

    def wait_for(self, cluster: str, endpoints: tuple[Endpoint, ...]) -> None:
        self.wait(
            lambda: bool(self.of(cluster)) and self.of(cluster)[-1] == endpoints,
            f"{cluster} reported {endpoints}",
        )


@pytest.fixture
def slices(kube: FakeKube) -> kubernetes.client.DiscoveryV1Api:
    return kubernetes.client.DiscoveryV1Api(kube.api_client())


@pytest.fixture
def source_for(kube: FakeKube) -> Iterator[Callable[..., tuple[EndpointsSource, Reports]]]:
    started: list[EndpointsSource] = []

    def start(gateway: Gateway = GATEWAY_GW, **kwargs: Any) -> tuple[EndpointsSource, Reports]:
        reports = Reports()
        kwargs.setdefault("retry_s", 0.1)
        source = EndpointsSource(kube.api_client(), gateway, "shop", reports, **kwargs)
        started.append(source.start())
        return source, reports

    yield start
    for source in started:
        source.stop()


def test_selector_names_the_services() -> None:
    assert service_selector({"b", "a"}) == f"{SERVICE_NAME_LABEL} in (a,b)"


def test_every_cluster_is_reported_once_synced_even_empty(
    kube: FakeKube, slices: kubernetes.client.DiscoveryV1Api, source_for: Any
) -> None:
    slices.create_namespaced_endpoint_slice(
        "shop", _slice("go-1", "comments-go", {"10.0.0.1": True})
    )
    source, reports = source_for()
    assert source.namespaces() == ["search", "shop"]
    assert source.wait_synced(WAIT_S)
    assert reports.of("comments-go") == [_eps("10.0.0.1")]
    assert reports.of("search") == [()]
    assert "comments-python" not in {c for c, _ in reports.calls}
    assert source.endpoints() == {"comments-go": _eps("10.0.0.1"), "search": ()}
    # One list (then watch) per namespace, selecting the gateway's services by label.
    lists = {p: q for m, p, q in kube.requests if "endpointslices" in p and "watch=" not in q}
    prefix = "/apis/discovery.k8s.io/v1/namespaces"
    assert set(lists) == {f"{prefix}/shop/endpointslices", f"{prefix}/search/endpointslices"}
    selector = "labelSelector=kubernetes.io/service-name%20in%20%28{}%29"
    assert selector.format("comments-go") in lists[f"{prefix}/shop/endpointslices"]
    assert selector.format("search") in lists[f"{prefix}/search/endpointslices"]


def test_created_changed_and_deleted_slices(
    slices: kubernetes.client.DiscoveryV1Api, source_for: Any
) -> None:
    source, reports = source_for()
    assert source.wait_synced(WAIT_S)
    reports.wait_for("comments-go", ())

    slices.create_namespaced_endpoint_slice(
        "shop", _slice("go-1", "comments-go", {"10.0.0.2": True, "10.0.0.1": None})
    )
    reports.wait_for("comments-go", _eps("10.0.0.1", "10.0.0.2"))

    # A second slice of the same Service joins the set.
    slices.create_namespaced_endpoint_slice(
        "shop", _slice("go-2", "comments-go", {"10.0.0.3": True})
    )
    reports.wait_for("comments-go", _eps("10.0.0.1", "10.0.0.2", "10.0.0.3"))

    # An endpoint turns not ready.
    slices.patch_namespaced_endpoint_slice(
        "go-1",
        "shop",
        {
            "endpoints": [
                {"addresses": ["10.0.0.1"]},
                {"addresses": ["10.0.0.2"], "conditions": {"ready": False}},
            ]
        },
    )
    reports.wait_for("comments-go", _eps("10.0.0.1", "10.0.0.3"))

    slices.delete_namespaced_endpoint_slice("go-1", "shop")
    reports.wait_for("comments-go", _eps("10.0.0.3"))
    slices.delete_namespaced_endpoint_slice("go-2", "shop")
    reports.wait_for("comments-go", ())

    # Numeric port and another namespace.
    slices.create_namespaced_endpoint_slice(
        "search",
        _slice("s-1", "search", {"10.1.0.1": True}, [{"name": "grpc", "port": 50051}]),
    )
    reports.wait_for("search", _eps("10.1.0.1", port=50051))


def test_changes_that_keep_the_ready_set_are_not_reported(
    slices: kubernetes.client.DiscoveryV1Api, source_for: Any
) -> None:
    slices.create_namespaced_endpoint_slice(
        "shop", _slice("go-1", "comments-go", {"10.0.0.1": True})
    )
    source, reports = source_for()
    assert source.wait_synced(WAIT_S)
    # Not a change of the ready set: a label edit, a not-ready endpoint, another Service's
    # slice (filtered out by the label selector) and a slice for another port.
    slices.patch_namespaced_endpoint_slice("go-1", "shop", {"metadata": {"labels": {"x": "y"}}})
    slices.create_namespaced_endpoint_slice(
        "shop", _slice("go-2", "comments-go", {"10.0.0.9": False})
    )
    slices.create_namespaced_endpoint_slice("shop", _slice("other", "monolith", {"10.0.0.7": True}))
    slices.create_namespaced_endpoint_slice(
        "shop", _slice("go-3", "comments-go", {"10.0.0.8": True}, [{"name": "admin", "port": 9}])
    )
    # Then a real change: it is the very next report.
    slices.create_namespaced_endpoint_slice(
        "shop", _slice("go-4", "comments-go", {"10.0.0.4": True})
    )
    reports.wait_for("comments-go", _eps("10.0.0.1", "10.0.0.4"))
    assert reports.of("comments-go") == [_eps("10.0.0.1"), _eps("10.0.0.1", "10.0.0.4")]


def test_a_burst_is_reported_once(
    slices: kubernetes.client.DiscoveryV1Api, source_for: Any
) -> None:
    # A long debounce so that the burst below surely falls in one window.
    source, reports = source_for(debounce_s=2.0)
    assert source.wait_synced(WAIT_S)
    for i in range(1, 4):
        slices.create_namespaced_endpoint_slice(
            "shop", _slice(f"go-{i}", "comments-go", {f"10.0.0.{i}": True})
        )
    reports.wait_for("comments-go", _eps("10.0.0.1", "10.0.0.2", "10.0.0.3"))
    assert reports.of("comments-go") == [(), _eps("10.0.0.1", "10.0.0.2", "10.0.0.3")]


def test_changes_while_the_watch_was_down_are_reported(
    kube: FakeKube, slices: kubernetes.client.DiscoveryV1Api, source_for: Any
) -> None:
    source, reports = source_for()
    assert source.wait_synced(WAIT_S)
    kube.fail_next("GET", "endpointslices", 503, times=3)
    kube.close_watches(abrupt=True)
    slices.create_namespaced_endpoint_slice(
        "shop", _slice("go-1", "comments-go", {"10.0.0.1": True})
    )
    reports.wait_for("comments-go", _eps("10.0.0.1"))
    # History forgotten: the watch re-lists and reports the deletion it missed.
    kube.compact()
    kube.close_watches()
    slices.delete_namespaced_endpoint_slice("go-1", "shop")
    reports.wait_for("comments-go", ())


def test_a_gateway_without_kubernetes_clusters_watches_nothing(
    kube: FakeKube, source_for: Any
) -> None:
    data = yaml.safe_load(GATEWAY)
    data["spec"]["clusters"] = data["spec"]["clusters"][:1]
    data["spec"]["listeners"][0]["virtualHosts"][0]["routes"][0] = {
        "name": "comments",
        "match": {"prefix": "/"},
        "cluster": "comments-python",
    }
    source, reports = source_for(Gateway.model_validate(data))
    assert source.wait_synced(WAIT_S)
    assert source.namespaces() == []
    assert reports.calls == []
    assert not [r for r in kube.requests if "endpointslices" in r[1]]


def test_without_a_callback_then_forward_replays_the_current_sets(
    kube: FakeKube, slices: kubernetes.client.DiscoveryV1Api
) -> None:
    slices.create_namespaced_endpoint_slice(
        "shop", _slice("go-1", "comments-go", {"10.0.0.1": True})
    )
    source = EndpointsSource(kube.api_client(), GATEWAY_GW, "shop", None, retry_s=0.1).start()
    try:
        assert source.wait_synced(WAIT_S)
        assert source.endpoints() == {"comments-go": _eps("10.0.0.1"), "search": ()}
        # A change before anyone listens is not lost: forward replays the current sets.
        slices.create_namespaced_endpoint_slice(
            "shop", _slice("go-2", "comments-go", {"10.0.0.2": True})
        )
        reports = Reports()
        source.forward(reports)
        reports.wait_for("comments-go", _eps("10.0.0.1", "10.0.0.2"))
        reports.wait_for("search", ())
    finally:
        source.stop()


async def test_forward_to_serves_reports_through_the_weight_controller(
    slices: kubernetes.client.DiscoveryV1Api, kube: FakeKube
) -> None:
    """The wiring a controller uses: sync first, start the WeightController from what the
    source knows (no empty assignment served for known endpoints), then forward."""
    await asyncio.to_thread(
        slices.create_namespaced_endpoint_slice,
        "shop",
        _slice("go-1", "comments-go", {"10.0.0.1": True}),
    )
    source = EndpointsSource(kube.api_client(), GATEWAY_GW, "shop", None).start()
    try:
        assert await asyncio.to_thread(source.wait_synced, WAIT_S)
        cache = SnapshotCache(build_snapshot(GATEWAY_GW, {}, label="test"))
        weights = WeightController(GATEWAY_GW, cache, endpoints=source.endpoints())
        assert weights.endpoints() == {"comments-go": _eps("10.0.0.1"), "search": ()}
        rds = cache.snapshot.version(typeurls.ROUTE)
        source.forward(forward_to(weights, asyncio.get_running_loop()))
        await asyncio.to_thread(
            slices.create_namespaced_endpoint_slice,
            "shop",
            _slice("go-2", "comments-go", {"10.0.0.2": True}),
        )
        deadline = time.monotonic() + WAIT_S
        while weights.endpoints().get("comments-go") != _eps("10.0.0.1", "10.0.0.2"):
            assert time.monotonic() < deadline, f"not served: {weights.endpoints()}"
            await asyncio.sleep(0.02)
        assert cache.snapshot.version(typeurls.ROUTE) == rds
    finally:
        await asyncio.to_thread(source.stop)
