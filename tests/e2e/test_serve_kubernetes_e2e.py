"""End to end: ``sluice serve --kubernetes`` serves a cluster from its Service's EndpointSlices.

A real controller process on the fake API server (tests/fakekube), a real Envoy, a real
upstream standing for the candidate's pod. The candidate cluster of the gateway file names a
Service instead of static endpoints; its EndpointSlice is created, then turned not ready, in
the API server. Assertions are on what clients receive through Envoy.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import kubernetes.client
import pytest
import yaml
from fakekube import FakeKube

from controller.k8s.endpointslices import SERVICE_NAME_LABEL

from .harness import (
    BASELINE,
    CANDIDATE,
    ROUTE,
    ROUTE_PREFIX,
    Controller,
    Envoy,
    Upstream,
    gateway_document,
    wait_until,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

NAMESPACE = "sluice"
SERVICE = "comments-go"


def candidate_slice(port: int, ready: bool) -> Any:
    """An EndpointSlice body (Any: the client's stubs want a V1EndpointSlice; it takes dicts)."""
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": f"{SERVICE}-abcde", "labels": {SERVICE_NAME_LABEL: SERVICE}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": port, "protocol": "TCP"}],
        "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": ready}}],
    }


def test_a_cluster_follows_its_services_endpoint_slices(tmp_path: Path, kube: FakeKube) -> None:
    pod = Upstream.start(CANDIDATE, tmp_path)
    controller: Controller | None = None
    envoy: Envoy | None = None
    try:
        discovery = kubernetes.client.DiscoveryV1Api(kube.api_client())
        discovery.create_namespaced_endpoint_slice(NAMESPACE, candidate_slice(pod.port, True))
        document = gateway_document(9, 9)  # the baseline is never reached: weights 0/100
        for cluster in document["spec"]["clusters"]:
            if cluster["name"] == CANDIDATE:
                del cluster["endpoints"]
                cluster["kubernetes"] = {"service": SERVICE, "port": "http"}
        gateway = tmp_path / "gateway.yaml"
        gateway.write_text(yaml.safe_dump(document))
        kubeconfig = kube.kubeconfig(tmp_path / "kubeconfig", namespace=NAMESPACE)
        controller = Controller.start(
            tmp_path,
            gateway,
            tmp_path / "state.db",
            extra=("--kubeconfig", str(kubeconfig), "--identity", "only"),
        )
        envoy = Envoy.start(tmp_path, node_id="edge", xds_port=controller.xds_port, protocol="sotw")
        controller.wait_node_synced(envoy.node_id, timeout=20, diag=envoy.logs)
        envoy.wait_live()
        controller.set_weights(ROUTE, {BASELINE: 0, CANDIDATE: 100})
        url = f"http://127.0.0.1:{envoy.listener_port()}{ROUTE_PREFIX}/42"

        def answered_by() -> tuple[int, str | None]:
            response = httpx.get(url, timeout=5)
            return response.status_code, response.headers.get("x-upstream")

        # The Service's ready endpoint was served from the first snapshot on.
        assert {answered_by() for _ in range(20)} == {(200, CANDIDATE)}

        # The pod turns not ready: Envoy loses its only endpoint (503), weights unchanged.
        discovery.replace_namespaced_endpoint_slice(
            f"{SERVICE}-abcde", NAMESPACE, candidate_slice(pod.port, False)
        )
        wait_until(lambda: answered_by()[0] == 503, timeout=15, what="Envoy to drop the pod")
        assert envoy.applied_weights() == {BASELINE: 0, CANDIDATE: 100}
        # Ready again: served again.
        discovery.replace_namespaced_endpoint_slice(
            f"{SERVICE}-abcde", NAMESPACE, candidate_slice(pod.port, True)
        )
        wait_until(lambda: answered_by() == (200, CANDIDATE), timeout=15, what="the pod back")
    finally:
        if envoy is not None:
            envoy.stop()
        if controller is not None:
            controller.stop()
        pod.stop()
