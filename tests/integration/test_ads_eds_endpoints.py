"""Live endpoints over a real ADS stream: ``set_endpoints`` pushes EDS only, its ACK is
awaited, and a later change of the same cluster supersedes an unanswered one."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import yaml

from controller.policy.gateway import Endpoint, Gateway
from controller.xds.typeurls import CLUSTER as CDS
from controller.xds.typeurls import ENDPOINT as EDS
from controller.xds.typeurls import ROUTE as RDS
from controller.xds.weights import WeightController

A = (Endpoint(address="10.0.0.1", port=8080),)
AB = (*A, Endpoint(address="10.0.0.2", port=8080))


GATEWAY_YAML = """
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
              match: {prefix: /api/comments}
              weightedClusters:
                - {cluster: comments-python, weight: 100}
                - {cluster: comments-go, weight: 0}
    - name: admin
      address: 127.0.0.1
      port: 10001
      virtualHosts:
        - name: ops
          routes:
            - name: health
              match: {prefix: /}
              cluster: static
  clusters:
    - name: comments-python
      endpoints: [{address: 127.0.0.1, port: 8001}]
    - name: comments-go
      kubernetes: {service: comments-go, port: http}
    - name: static
      endpoints: [{address: 127.0.0.1, port: 8003}]
"""
"""The integration gateway (same listener and cluster names as the ``ads`` helper's), with
``comments-go`` sourced from Kubernetes."""


@pytest.fixture
def gateway() -> Gateway:
    """Overrides the integration ``gateway`` fixture (``cache`` and ``weights`` use it)."""
    return Gateway.model_validate(yaml.safe_load(GATEWAY_YAML))


def _hosts(ads: Any, resp: Any, cluster: str) -> list[tuple[str, int]]:
    cla = ads.decode(resp)[cluster]
    return [
        (lb.endpoint.address.socket_address.address, lb.endpoint.address.socket_address.port_value)
        for locality in cla.endpoints
        for lb in locality.lb_endpoints
    ]


async def _synced(ads: Any) -> Any:
    client = ads.sotw("gw")
    await client.subscribe(CDS)
    await client.ack(await client.recv())
    await client.subscribe(EDS, ads.CLUSTERS)
    eds = await client.recv()
    assert _hosts(ads, eds, "comments-go") == []  # nothing known yet: an empty assignment
    await client.ack(eds)
    await client.subscribe(RDS, ads.LISTENERS)
    await client.ack(await client.recv())
    await client.barrier()
    return client


async def test_set_endpoints_pushes_eds_only_and_waits_for_the_ack(
    ads: Any, weights: WeightController
) -> None:
    client = await _synced(ads)
    push = asyncio.create_task(weights.set_endpoints("comments-go", AB, timeout_s=2))
    resp = await client.recv()
    assert resp.type_url == EDS
    assert _hosts(ads, resp, "comments-go") == [("10.0.0.1", 8080), ("10.0.0.2", 8080)]
    await client.ack(resp)
    result = await push
    assert result.outcome == "acked"
    await client.expect_silence()  # no CDS, LDS or RDS push

    # The same set again: nothing to push, acked at once.
    assert (await weights.set_endpoints("comments-go", AB, timeout_s=2)).outcome == "acked"
    await client.expect_silence()


async def test_a_later_change_of_the_cluster_supersedes_an_unanswered_one(
    ads: Any, weights: WeightController
) -> None:
    client = await _synced(ads)
    first = asyncio.create_task(weights.set_endpoints("comments-go", AB, timeout_s=2))
    await client.recv()  # not answered
    second = asyncio.create_task(weights.set_endpoints("comments-go", A, timeout_s=2))
    assert (await first).outcome == "superseded"
    resp = await client.recv()
    assert _hosts(ads, resp, "comments-go") == [("10.0.0.1", 8080)]
    await client.ack(resp)
    assert (await second).outcome == "acked"


async def test_a_nacked_reload_restores_the_previous_endpoints(
    ads: Any, weights: WeightController, gateway: Gateway
) -> None:
    client = await _synced(ads)
    push = asyncio.create_task(weights.set_endpoints("comments-go", AB, timeout_s=2))
    good = await client.recv()
    await client.ack(good)
    assert (await push).outcome == "acked"

    data = yaml.safe_load(GATEWAY_YAML)
    data["spec"]["clusters"][1]["kubernetes"]["service"] = "comments-go-v2"
    v2 = Gateway.model_validate(data)
    reload = asyncio.create_task(
        weights.replace_gateway(v2, timeout_s=2, endpoints={"comments-go": A})
    )
    resp = await client.recv()
    assert resp.type_url == EDS  # the Service changed, the Cluster message did not
    assert _hosts(ads, resp, "comments-go") == [("10.0.0.1", 8080)]
    await client.nack(resp, "rejected for the test", last_good=good.version_info)
    change = await reload
    assert change.reverted
    assert weights.gateway is gateway
    assert weights.endpoints() == {"comments-go": AB}
