"""A replica cut off from the Kubernetes API fences itself (issue 6; controller.runtime.fencing).

A real ``sluice serve --kubernetes`` process follows another replica's Lease (or leads, alone)
against the fake API server (tests/fakekube); a real gRPC ADS stream is connected to it. When
every request to the API fails (and the watches are cut), the replica, within its renew
deadline and a check, ends the stream with UNAVAILABLE, answers ``/readyz`` 503 naming why
(``/healthz`` stays 200) and exports ``sluice_store_stale 1`` (a leader has lost the Lease by
then); it still accepts a new stream and serves it the last weights it knew; once the API
answers again it is ready again.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
import yaml
from e2e.harness import BASELINE, CANDIDATE, LISTENER, gateway_document
from envoy_data_plane.envoy.config.core.v3 import Node
from envoy_data_plane.envoy.config.route.v3 import RouteConfiguration
from envoy_data_plane.envoy.service.discovery.v3 import DiscoveryRequest, DiscoveryResponse
from fakekube import FakeKube
from kubernetes import client as k8s_client

from controller.k8s.crd import rollout_crd
from controller.k8s.store import KubernetesRolloutStore
from controller.policy.loading import load_policy
from controller.rollout.inputs import Tick
from controller.rollout.machine import start
from controller.store.rollouts import PolicySource
from controller.store.transitions import apply_input
from controller.xds.server import SOTW_METHOD
from controller.xds.typeurls import ROUTE

NS = "sluice"
PY, GO = BASELINE, CANDIDATE
GATEWAY = gateway_document(9, 9)  # port 9 (discard): no request reaches an upstream here
POLICY = f"""apiVersion: sluice.dev/v1alpha1
kind: RolloutPolicy
metadata: {{name: comments}}
spec:
  route: comments
  baseline: {{cluster: {PY}}}
  candidate: {{cluster: {GO}}}
  stages: [{{weight: 30%, bake: 1h}}, {{weight: 100%, bake: 1s}}]
  analysis: {{interval: 1s, slos: []}}
"""
SOURCE = PolicySource(path=None, git_commit=None, git_dirty=False, text="")
THIRTY = {PY: 7_000, GO: 3_000}
"""The route's weights (parts of 10,000) while the rollout serves 30%."""
WAIT_S = 30.0
"""How long the test waits for anything it expects (generous: 2 CPUs shared)."""


def hold_the_lease_elsewhere(kube: FakeKube) -> None:
    """Another replica leads, with a Lease valid for an hour: the served one only follows."""
    now = "2026-01-01T00:00:00.000000Z"
    body = {
        "metadata": {"name": "sluice-controller", "namespace": NS},
        "spec": {
            "holderIdentity": "elsewhere",
            "leaseDurationSeconds": 3600,
            "acquireTime": now,
            "renewTime": now,
            "leaseTransitions": 0,
        },
    }
    k8s_client.CoordinationV1Api(kube.api_client()).create_namespaced_lease(NS, body)


def rollout_at_thirty_percent(kube: FakeKube) -> None:
    """What the leader decided: rollout ``comments`` pushing its first stage (30%)."""
    store = KubernetesRolloutStore(kube.api_client(), NS, identity="elsewhere")
    try:
        policy = load_policy(POLICY, "policy.yaml")
        state, event = start(policy, 100.0, "test")
        store.create("comments", policy, SOURCE, state, event)
        apply_input(store, "comments", Tick(101.0))
        assert store.get("comments").state.served_weight == pytest.approx(30.0)
    finally:
        store.close()


@pytest.fixture(params=["follower", "leader"])
def replica(
    request: pytest.FixtureRequest, tmp_path: Path, kube: FakeKube
) -> Iterator[dict[str, str]]:
    """``sluice serve`` (renew deadline 2 s, lease 3 s) following another replica's Lease, or
    leading (alone: it takes the Lease); its ready line, with ``role``."""
    kube.install_crd(rollout_crd())
    if request.param == "follower":
        hold_the_lease_elsewhere(kube)
    rollout_at_thirty_percent(kube)
    gateway = tmp_path / "gateway.yaml"
    gateway.write_text(yaml.safe_dump(GATEWAY))
    kubeconfig = kube.kubeconfig(tmp_path / "kubeconfig", namespace=NS)
    argv = [
        *(sys.executable, "-m", "controller", "serve", "--gateway", str(gateway)),
        *("--xds-address", "127.0.0.1:0", "--admin-address", "127.0.0.1:0"),
        *("--state", str(tmp_path / "state.db"), "--kubeconfig", str(kubeconfig)),
        *("--identity", request.param, "--lease-duration", "3s", "--renew-deadline", "2s"),
        *("--retry-period", "500ms"),
    ]
    log = (tmp_path / "serve.log").open("w")
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=log, text=True, cwd=tmp_path)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line, (tmp_path / "serve.log").read_text()
        ready = json.loads(line)
        assert ready["event"] == "ready"
        yield {**ready, "role": request.param}
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        print((tmp_path / "serve.log").read_text()[-4000:])  # shown when the test fails


class RouteStream:
    """A real SotW ADS stream subscribed to the ``public`` route configuration."""

    def __init__(self, channel: grpc.aio.Channel, node_id: str) -> None:
        self.call: Any = channel.stream_stream(
            SOTW_METHOD, request_serializer=bytes, response_deserializer=DiscoveryResponse.parse
        )()
        self.node_id = node_id

    async def weights(self) -> dict[str, int]:
        """Subscribe, ACK the first response; the ``comments`` route's weights in it."""
        node = Node(id=self.node_id, cluster="gateways")
        ask = DiscoveryRequest(node=node, type_url=ROUTE, resource_names=[LISTENER])
        await self.call.write(ask)
        resp = await asyncio.wait_for(self.call.read(), WAIT_S)
        assert isinstance(resp, DiscoveryResponse)
        ack = DiscoveryRequest(
            type_url=ROUTE,
            resource_names=[LISTENER],
            version_info=resp.version_info,
            response_nonce=resp.nonce,
        )
        await self.call.write(ack)
        config = RouteConfiguration.parse(resp.resources[0].value)
        route = config.virtual_hosts[0].routes[0]
        assert route.route is not None
        assert route.route.weighted_clusters is not None
        return {c.name: c.weight for c in route.route.weighted_clusters.clusters}

    async def ended(self) -> tuple[grpc.StatusCode, str]:
        """Read until the server ends the stream: its status code and details."""
        while True:
            try:
                item = await asyncio.wait_for(self.call.read(), WAIT_S)
            except grpc.aio.AioRpcError as exc:
                return exc.code(), exc.details() or ""
            if item is grpc.aio.EOF:
                return await self.call.code(), await self.call.details()


@pytest.fixture
async def channel(replica: dict[str, str]) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(replica["xds"]) as chan:
        yield chan


async def stale_gauge(admin: httpx.AsyncClient) -> float:
    text = (await admin.get("/metrics")).text
    values = [ln.split()[1] for ln in text.splitlines() if ln.startswith("sluice_store_stale ")]
    assert len(values) == 1, text
    return float(values[0])


async def until(check: Callable[[], Awaitable[bool]], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not await check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def test_a_replica_cut_off_from_the_api_fences_itself_and_comes_back(
    kube: FakeKube, replica: dict[str, str], channel: grpc.aio.Channel
) -> None:
    async with httpx.AsyncClient(base_url=f"http://{replica['admin']}", timeout=10.0) as admin:

        async def serves(weights: dict[str, int]) -> bool:
            routes = (await admin.get("/v1/routes")).json()["routes"]
            return bool(routes.get("comments") == weights)

        async def ready() -> bool:
            return (await admin.get("/readyz")).status_code == 200

        async def leads() -> bool:
            text = (await admin.get("/metrics")).text
            return "sluice_leader 1.0" in text.splitlines()

        await until(lambda: serves(THIRTY), "the replica to serve the rollout's 30%")
        if replica["role"] == "leader":
            await until(leads, "the replica to lead")
        else:
            assert not await leads()
        assert await ready()
        assert await stale_gauge(admin) == 0
        envoy = RouteStream(channel, "envoy-1")
        assert await envoy.weights() == THIRTY

        cut_at = time.monotonic()
        kube.fail_next("*", "", 503, times=1_000_000)  # every request: a partition
        kube.close_watches(abrupt=True)
        code, details = await envoy.ended()
        closed_s = time.monotonic() - cut_at
        assert code == grpc.StatusCode.UNAVAILABLE
        assert "stale" in details
        answer = await admin.get("/readyz")
        unready_s = time.monotonic() - cut_at
        assert answer.status_code == 503
        body = answer.json()
        assert body["status"] == "stale"
        assert "no successful report renewal" in body["reason"]
        assert "503" in body["reason"]  # the API's answer, as the client raised it
        assert (await admin.get("/healthz")).status_code == 200
        assert await stale_gauge(admin) == 1
        assert not await leads()  # a leader cut off lost the Lease at its renew deadline
        print(
            f"measured ({replica['role']}): stream closed {closed_s:.2f} s and /readyz 503 "
            f"{unready_s:.2f} s after the API server began failing (renew deadline 2 s, "
            "checked every 1 s)"
        )

        # An Envoy that still reaches it is served the last weights it knew, not nothing.
        late = RouteStream(channel, "envoy-2")
        assert await late.weights() == THIRTY

        kube.fail_next("*", "", 503, times=0)  # the API server answers again
        recovered_at = time.monotonic()
        await until(ready, "readiness again")
        print(f"measured: /readyz 200 {time.monotonic() - recovered_at:.2f} s after recovery")
        assert (await admin.get("/readyz")).json() == {"status": "ok"}
        assert await stale_gauge(admin) == 0
        assert await serves(THIRTY)
