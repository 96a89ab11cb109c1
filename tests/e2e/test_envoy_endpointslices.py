"""End to end: a real Envoy follows a cluster's EndpointSlices.

The pieces are the product's: the ADS server and ``WeightController`` (run in-process on an
event loop thread), ``EndpointsSource`` watching the fake API server (tests/fakekube) through
the official client, and ``forward_to`` handing its reports to ``set_endpoints``. Upstreams are
real HTTP servers (one "pod" each, on its own port: one slice per pod, as the EndpointSlice
controller makes when a named port maps to different numbers), Envoy is the real binary.

What must hold: before any slice Envoy answers 503 (an empty assignment); once a pod's slice
is ready, traffic reaches it; adding a pod under load costs no 5xx and the new pod gets
traffic; once a pod turns not ready and Envoy has dropped it, it gets no request, while its
process still runs (a terminating pod keeps serving: nothing fails).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import kubernetes.client
import pytest
from fakekube import FakeKube

from controller.k8s.endpoints_source import EndpointsSource, forward_to
from controller.k8s.endpointslices import SERVICE_NAME_LABEL
from controller.policy.gateway import Gateway
from controller.xds.cache import SnapshotCache
from controller.xds.resources import build_snapshot
from controller.xds.server import start_server
from controller.xds.weights import WeightController

from .harness import LISTENER, ROUTE, ROUTE_PREFIX, Envoy, LoadGenerator, Upstream, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

NAMESPACE = "shop"
SERVICE = "comments"
CLUSTER = "comments-k8s"


def _gateway() -> Gateway:
    return Gateway.model_validate(
        {
            "apiVersion": "sluice.dev/v1alpha1",
            "kind": "Gateway",
            "metadata": {"name": "e2e-eds"},
            "spec": {
                "listeners": [
                    {
                        "name": LISTENER,
                        "address": "127.0.0.1",
                        "port": 0,
                        "virtualHosts": [
                            {
                                "name": "api",
                                "routes": [
                                    {
                                        "name": ROUTE,
                                        "match": {"prefix": ROUTE_PREFIX},
                                        "cluster": CLUSTER,
                                        "timeout": "5s",
                                    }
                                ],
                            }
                        ],
                    }
                ],
                "clusters": [
                    {
                        "name": CLUSTER,
                        "connectTimeout": "1s",
                        "kubernetes": {"service": SERVICE, "port": "http"},
                    }
                ],
            },
        }
    )


def _pod_slice(pod: str, port: int, ready: bool = True) -> Any:
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": f"{SERVICE}-{pod}", "labels": {SERVICE_NAME_LABEL: SERVICE}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": port, "protocol": "TCP"}],
        "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": ready}}],
    }


class Controlplane:
    """The ADS server and WeightController on an event loop in a thread, fed by an
    EndpointsSource watching the fake API server."""

    def __init__(self, kube: FakeKube) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        gateway = _gateway()
        # As a controller starts: the source synced first, the weights from what it knows.
        self.source = EndpointsSource(kube.api_client(), gateway, NAMESPACE, None).start()
        if not self.source.wait_synced(10):
            self.source.stop()
            self.loop.call_soon_threadsafe(self.loop.stop)
            raise AssertionError("the EndpointSlices were not listed within 10 s")
        self.cache = SnapshotCache(build_snapshot(gateway, {}, label="e2e"))
        self.weights = WeightController(gateway, self.cache, endpoints=self.source.endpoints())
        self.source.forward(forward_to(self.weights, self.loop))
        self.server, self.port = self._run(start_server(self.cache, "127.0.0.1:0"))

    def _run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=30)

    def stop(self) -> None:
        self.source.stop()
        self._run(self.server.stop(None))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        self.loop.close()


@pytest.fixture
def pods(tmp_path: Path) -> Iterator[dict[str, Upstream]]:
    started: dict[str, Upstream] = {}
    try:
        for name in ("pod-a", "pod-b"):
            started[name] = Upstream.start(name, tmp_path / "upstreams")
        yield started
    finally:
        for upstream in started.values():
            upstream.stop()


def _envoy_hosts(envoy: Envoy) -> set[int]:
    """Ports of the hosts Envoy has in the cluster now (admin ``/clusters``)."""
    data = envoy.http.get("/clusters", params={"format": "json"}).json()
    for status in data.get("cluster_statuses", []):
        if status.get("name") == CLUSTER:
            return {
                int(h["address"]["socket_address"]["port_value"])
                for h in status.get("host_statuses", [])
            }
    return set()


def test_envoy_follows_the_endpointslices(
    kube: FakeKube, pods: dict[str, Upstream], tmp_path: Path
) -> None:
    slices = kubernetes.client.DiscoveryV1Api(kube.api_client())
    plane = Controlplane(kube)
    envoy = None
    try:
        envoy = Envoy.start(tmp_path, node_id="eds-e2e", xds_port=plane.port, protocol="sotw")
        envoy.wait_live()
        url = f"http://127.0.0.1:{envoy.listener_port()}{ROUTE_PREFIX}/1"
        with httpx.Client(timeout=5.0) as client:
            # Nothing ready yet: an empty assignment, Envoy has no host to send to.
            assert client.get(url).status_code == 503

            slices.create_namespaced_endpoint_slice(NAMESPACE, _pod_slice("a", pods["pod-a"].port))
            wait_until(
                lambda: client.get(url).headers.get("x-upstream") == "pod-a",
                timeout=20,
                what="traffic to pod-a",
                diagnostics=envoy.logs,
            )

        load = LoadGenerator(f"http://127.0.0.1:{envoy.listener_port()}", concurrency=4)
        with load:
            load.start("a-only", duration=90)
            load.wait_phase("a-only", min_requests=50, min_seconds=0.3, timeout=30)

            # A pod joins: it gets traffic, nobody sees an error.
            load.set_phase("adding")
            slices.create_namespaced_endpoint_slice(NAMESPACE, _pod_slice("b", pods["pod-b"].port))
            wait_until(
                lambda: _envoy_hosts(envoy) == {pods["pod-a"].port, pods["pod-b"].port},
                timeout=20,
                what="Envoy to hold both pods",
                diagnostics=envoy.logs,
            )
            load.set_phase("both")
            load.wait_phase("both", min_requests=200, min_seconds=0.5, timeout=30)

            # pod-a turns not ready (terminating, still serving): once Envoy dropped it, it
            # gets nothing.
            load.set_phase("removing")
            slices.replace_namespaced_endpoint_slice(
                f"{SERVICE}-a", NAMESPACE, _pod_slice("a", pods["pod-a"].port, ready=False)
            )
            wait_until(
                lambda: _envoy_hosts(envoy) == {pods["pod-b"].port},
                timeout=20,
                what="Envoy to drop pod-a",
                diagnostics=envoy.logs,
            )
            load.set_phase("b-only")
            load.wait_phase("b-only", min_requests=200, min_seconds=0.5, timeout=30)
            load.stop()

        everything = load.summary()
        assert everything.server_errors == 0, everything.describe()
        assert not everything.errors, everything.describe()
        both = load.summary("both")
        assert both.count("pod-b") > 0, both.describe()
        assert both.count("pod-a") > 0, both.describe()
        after = load.summary("b-only")
        assert after.count("pod-a") == 0, after.describe()
        assert after.count("pod-b") == after.total, after.describe()
    finally:
        if envoy is not None:
            envoy.stop()
        plane.stop()
