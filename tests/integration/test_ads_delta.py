"""Incremental ADS (``DeltaAggregatedResources``) against real client streams."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest
from envoy_data_plane.envoy.config.core.v3 import Node
from envoy_data_plane.envoy.service.discovery.v3 import DeltaDiscoveryRequest

from controller.xds import resources, wire
from controller.xds.cache import SnapshotCache
from controller.xds.resources import build_snapshot
from controller.xds.server import DELTA_METHOD
from controller.xds.typeurls import CLUSTER as CDS
from controller.xds.typeurls import ENDPOINT as EDS
from controller.xds.typeurls import LISTENER as LDS
from controller.xds.typeurls import ROUTE as RDS
from controller.xds.weights import WeightController


def _versions(cache: SnapshotCache, type_url: str) -> dict[str, str]:
    """name → version of every resource of a type in the served snapshot."""
    ts = cache.snapshot.get(type_url)
    assert ts is not None
    return {name: res.version for name, res in ts.resources.items()}


async def _synced(ads, cache: SnapshotCache, node_id: str) -> tuple[Any, str]:
    """A stream subscribed to both route configurations that ACKed the current RDS version."""
    client = ads.delta(node_id)
    await client.send(RDS, ads.LISTENERS)
    resp = await client.recv()
    await client.ack(resp)
    result = await cache.wait_for_version(RDS, resp.system_version_info, [node_id], timeout_s=2)
    assert result.outcome == "acked"
    return client, resp.system_version_info


# --- first request, ACK --------------------------------------------------------------------


async def test_wildcard_cds_gets_all_clusters_and_ack_is_recorded(
    ads, cache: SnapshotCache
) -> None:
    client = ads.delta("envoy-a")
    await client.send(CDS)  # no names on the first request: wildcard
    resp = await client.recv()

    assert resp.type_url == CDS
    assert resp.system_version_info == cache.snapshot.version(CDS)
    assert resp.nonce
    assert list(resp.removed_resources) == []
    clusters = ads.decode(resp)
    assert sorted(clusters) == sorted(ads.CLUSTERS)
    assert {r.name: r.version for r in resp.resources} == _versions(cache, CDS)
    assert ads.node("envoy-a").types[CDS].acked_version is None

    await client.ack(resp)
    result = await cache.wait_for_version(CDS, resp.system_version_info, ["envoy-a"], timeout_s=2)
    assert result.outcome == "acked"
    status = ads.node("envoy-a")
    assert status.protocol == "delta"
    assert status.types[CDS].acked_version == resp.system_version_info
    assert status.types[CDS].last_nack is None
    await client.expect_silence()


async def test_named_rds_gets_the_named_route_configurations(ads, cache: SnapshotCache) -> None:
    client = ads.delta("envoy-a")
    await client.send(RDS, ["public"])
    resp = await client.recv()
    configs = ads.decode(resp)
    assert list(configs) == ["public"]
    assert ads.route_weights(configs["public"], "comments") == {
        "comments-python": 100,
        "comments-go": 0,
    }
    await client.ack(resp)
    await client.send(RDS, ["admin"])  # adds a name to the subscription
    resp = await client.recv()
    assert list(ads.decode(resp)) == ["admin"]
    assert ads.route_weights(ads.decode(resp)["admin"], "health") == {"static": 1}


# --- NACK ------------------------------------------------------------------------------------


async def test_nack_keeps_last_good_version_is_not_resent_then_a_fix_is_acked(
    ads, cache: SnapshotCache, weights: WeightController
) -> None:
    client, good = await _synced(ads, cache, "envoy-a")

    push = asyncio.create_task(
        weights.set_weights("comments", {"comments-python": 50, "comments-go": 50}, timeout_s=2)
    )
    bad = await client.recv()
    assert bad.system_version_info != good
    assert list(ads.decode(bad)) == ["public"]  # only the changed route configuration
    await client.nack(bad, "weights rejected: test")
    change = await push
    assert change.ack.outcome == "nacked"
    assert not change.ack.ok
    assert change.ack.nacked == {"envoy-a": "weights rejected: test"}

    rds = ads.node("envoy-a").types[RDS]
    assert rds.acked_version == good
    assert rds.last_nack is not None
    assert rds.last_nack.version == bad.system_version_info
    assert rds.last_nack.message == "weights rejected: test"
    await client.expect_silence()  # the rejected version is not sent again

    push = asyncio.create_task(
        weights.set_weights("comments", {"comments-python": 90, "comments-go": 10}, timeout_s=2)
    )
    fixed = await client.recv()
    assert fixed.system_version_info not in (good, bad.system_version_info)
    configs = ads.decode(fixed)
    assert list(configs) == ["public"]
    assert ads.route_weights(configs["public"], "comments")["comments-go"] == 10
    await client.ack(fixed)
    change = await push
    assert change.ack.outcome == "acked"
    waited = await cache.wait_for_version(RDS, fixed.system_version_info, timeout_s=1)
    assert waited.outcome == "acked"
    rds = ads.node("envoy-a").types[RDS]
    assert rds.acked_version == fixed.system_version_info
    assert rds.last_nack is not None
    assert rds.last_nack.message == "weights rejected: test"


async def test_nack_is_reported_by_the_weight_primitive_never_as_success(
    ads, cache: SnapshotCache, weights: WeightController
) -> None:
    good_client, _ = await _synced(ads, cache, "envoy-a")
    bad_client, _ = await _synced(ads, cache, "envoy-b")

    push = asyncio.create_task(
        weights.set_weights("comments", {"comments-python": 70, "comments-go": 30}, timeout_s=2)
    )
    resp_a = await good_client.recv()
    resp_b = await bad_client.recv()
    await good_client.ack(resp_a)
    await bad_client.nack(resp_b, "unknown cluster comments-go")
    change = await push
    assert change.ack.outcome == "nacked"
    assert change.ack.ok is False
    assert change.ack.acked == ("envoy-a",)
    assert change.ack.nacked == {"envoy-b": "unknown cluster comments-go"}


async def test_no_connected_node_is_no_nodes(
    ads, cache: SnapshotCache, weights: WeightController
) -> None:
    change = await weights.set_weights("comments", {"comments-python": 80, "comments-go": 20})
    assert change.ack.outcome == "no_nodes"
    assert not change.ack.ok

    client = ads.delta("cds-only")
    await client.send(CDS)
    await client.ack(await client.recv())
    await client.barrier()
    change = await weights.set_weights("comments", {"comments-python": 81, "comments-go": 19})
    assert change.ack.outcome == "no_nodes"


# --- stale nonce ---------------------------------------------------------------------------


async def test_stale_or_unknown_nonce_is_ignored(ads, cache: SnapshotCache, gateway) -> None:
    client = ads.delta("envoy-a")
    await client.send(RDS, ads.LISTENERS)
    first = await client.recv()
    cache.set_snapshot(build_snapshot(gateway, {"comments": {"comments-go": 100}}))
    second = await client.recv()
    await client.ack(second)  # settles `first` too: Envoy answers in order
    result = await cache.wait_for_version(RDS, second.system_version_info, ["envoy-a"], 2)
    assert result.outcome == "acked"

    await client.nack(first, "stale complaint")
    await client.barrier()
    assert ads.node("envoy-a").types[RDS].last_nack is None
    await client.expect_silence()

    cache.set_snapshot(build_snapshot(gateway, {"comments": {"comments-python": 100}}))
    third = await client.recv()
    await client.send(RDS, nonce="999999-1")  # a nonce this stream never sent
    await client.send(RDS, nonce=first.nonce)  # an already answered one
    await client.barrier()
    rds = ads.node("envoy-a").types[RDS]
    assert rds.acked_version == second.system_version_info
    assert rds.sent_version == third.system_version_info
    await client.expect_silence()

    await client.ack(third)
    result = await cache.wait_for_version(RDS, third.system_version_info, ["envoy-a"], 2)
    assert result.outcome == "acked"


# --- reconnect -------------------------------------------------------------------------------


async def test_reconnect_holding_current_versions_gets_nothing_and_counts_as_acked(
    ads, cache: SnapshotCache, weights: WeightController
) -> None:
    client = ads.delta("envoy-a")
    await client.send(RDS, ads.LISTENERS, initial=_versions(cache, RDS))
    await client.send(CDS, initial=_versions(cache, CDS))
    await client.expect_silence()
    status = ads.node("envoy-a")
    assert status.types[RDS].acked_version == cache.snapshot.version(RDS)
    assert status.types[CDS].acked_version == cache.snapshot.version(CDS)

    push = asyncio.create_task(
        weights.set_weights("comments", {"comments-python": 60, "comments-go": 40}, timeout_s=2)
    )
    resp = await client.recv()
    assert resp.type_url == RDS
    assert list(ads.decode(resp)) == ["public"]
    await client.ack(resp)
    assert (await push).ack.outcome == "acked"


async def test_reconnect_with_a_differing_version_gets_only_the_changed_resource(
    ads, cache: SnapshotCache
) -> None:
    client = ads.delta("envoy-a")
    held = {**_versions(cache, RDS), "public": "0123456789abcdef"}
    await client.send(RDS, ads.LISTENERS, initial=held)
    resp = await client.recv()
    assert list(ads.decode(resp)) == ["public"]
    assert list(resp.removed_resources) == []
    assert ads.node("envoy-a").types[RDS].acked_version is None
    await client.ack(resp)
    result = await cache.wait_for_version(RDS, cache.snapshot.version(RDS), ["envoy-a"], 2)
    assert result.outcome == "acked"


async def test_reconnect_holding_a_deleted_cluster_gets_it_removed(
    ads, cache: SnapshotCache
) -> None:
    """Removed once the client's route tables are known not to name it (Envoy asks for
    clusters before routes: until then a reconnecting client may route to it)."""
    client = ads.delta("envoy-a")
    await client.send(CDS, initial={**_versions(cache, CDS), "search": "0123456789abcdef"})
    await client.expect_silence()
    await client.send(RDS, ads.LISTENERS, initial=_versions(cache, RDS))
    resp = await client.recv()
    assert resp.type_url == CDS
    assert list(resp.resources) == []
    assert list(resp.removed_resources) == ["search"]


async def test_reconnect_missing_a_subscribed_resource_is_not_acked_before_it_gets_it(
    ads, cache: SnapshotCache
) -> None:
    """The client holds ``admin`` but never had ``public``: it is not up to date yet."""
    client = ads.delta("envoy-a")
    admin_only = {"admin": _versions(cache, RDS)["admin"]}
    await client.send(RDS, ads.LISTENERS, initial=admin_only)
    resp = await client.recv()
    assert list(ads.decode(resp)) == ["public"]
    assert ads.node("envoy-a").types[RDS].acked_version is None, (
        "the RDS version counts as ACKed although the node has not got route config 'public'"
    )


# --- several nodes -------------------------------------------------------------------------


async def test_silent_node_times_out_and_named_nodes_are_awaited_alone(
    ads, cache: SnapshotCache, weights: WeightController
) -> None:
    client_a, _ = await _synced(ads, cache, "envoy-a")
    client_b, old = await _synced(ads, cache, "envoy-b")

    push = asyncio.create_task(
        weights.set_weights("comments", {"comments-python": 75, "comments-go": 25}, timeout_s=0.5)
    )
    resp_a = await client_a.recv()
    await client_b.recv()  # B got it and never answers
    await client_a.ack(resp_a)
    change = await push
    assert change.ack.outcome == "timeout"
    assert change.ack.acked == ("envoy-a",)
    assert change.ack.pending == ("envoy-b",)
    assert ads.node("envoy-b").types[RDS].acked_version == old

    push = asyncio.create_task(
        weights.set_weights(
            "comments", {"comments-python": 65, "comments-go": 35}, nodes=["envoy-a"], timeout_s=2
        )
    )
    resp_a = await client_a.recv()
    await client_a.ack(resp_a)
    change = await push
    assert change.ack.outcome == "acked"
    assert change.ack.acked == ("envoy-a",)


# --- unknown types, malformed requests -------------------------------------------------------


async def test_unknown_type_url_gets_no_response_and_stream_keeps_working(
    ads, cache: SnapshotCache
) -> None:
    client = ads.delta("envoy-a")
    await client.send(ads.SECRET, ["server-cert"])
    await client.expect_silence()
    assert ads.SECRET in ads.node("envoy-a").unsupported_types
    assert ads.SECRET not in ads.node("envoy-a").types

    await client.send(RDS, ["admin"])
    resp = await client.recv()
    assert resp.type_url == RDS
    assert list(ads.decode(resp)) == ["admin"]


async def test_malformed_request_ends_only_its_stream(
    ads, cache: SnapshotCache, weights: WeightController
) -> None:
    healthy, _ = await _synced(ads, cache, "envoy-a")

    garbage = ads.raw(DELTA_METHOD)
    await garbage.write(b"\x0b\x00")  # wire type 3 (start group)
    assert await garbage.ended_with() == grpc.StatusCode.INVALID_ARGUMENT
    assert "malformed" in (await garbage.call.details())

    push = asyncio.create_task(
        weights.set_weights("comments", {"comments-python": 55, "comments-go": 45}, timeout_s=2)
    )
    resp = await healthy.recv()
    assert ads.route_weights(ads.decode(resp)["public"], "comments")["comments-go"] == 45
    await healthy.ack(resp)
    assert (await push).ack.outcome == "acked"


async def test_invalid_utf8_after_a_good_request_ends_the_stream(ads, cache: SnapshotCache) -> None:
    stream = ads.raw(DELTA_METHOD)
    good = DeltaDiscoveryRequest(
        node=Node(id="envoy-raw"), type_url=RDS, resource_names_subscribe=["public"]
    )
    await stream.write(bytes(good))
    assert await stream.recv()
    await stream.write(b"\x12\x02\xc3\x28")  # type_url: invalid UTF-8
    assert await stream.ended_with() == grpc.StatusCode.INVALID_ARGUMENT
    await ads.eventually(lambda: ads.node("envoy-raw").streams == 0)


async def test_first_request_without_node_id_is_invalid_argument(ads) -> None:
    stream = ads.raw(DELTA_METHOD)
    await stream.write(bytes(DeltaDiscoveryRequest(type_url=RDS, node=Node(cluster="gateways"))))
    assert await stream.ended_with() == grpc.StatusCode.INVALID_ARGUMENT


async def test_empty_type_url_is_invalid_argument(ads) -> None:
    client = ads.delta("envoy-a")
    await client.send("", ["public"])
    assert await client.ended_with() == grpc.StatusCode.INVALID_ARGUMENT


# --- make-before-break -----------------------------------------------------------------------


async def _subscribe_all(ads, client: Any) -> None:
    await client.send(CDS)
    await client.send(EDS, ads.CLUSTERS)
    await client.send(LDS)
    await client.send(RDS, ads.LISTENERS)


async def test_new_stream_gets_cds_before_rds_and_rds_waits_for_cluster_acks(
    ads, cache: SnapshotCache
) -> None:
    client = ads.delta("envoy-a")
    await _subscribe_all(ads, client)
    first = await client.drain()
    assert [r.type_url for r in first] == [CDS, EDS, LDS]  # RDS held: no cluster ACKed yet
    cds, eds, lds = first
    assert sorted(ads.decode(eds)) == sorted(ads.CLUSTERS)

    await client.ack(cds)
    await client.expect_silence()  # endpoints not ACKed yet: clusters still warming
    await client.ack(eds)
    rds = await client.recv()
    assert rds.type_url == RDS
    assert sorted(ads.decode(rds)) == sorted(ads.LISTENERS)
    await client.ack(lds)
    await client.ack(rds)
    result = await cache.wait_for_version(RDS, rds.system_version_info, ["envoy-a"], 2)
    assert result.outcome == "acked"


async def test_route_to_a_new_cluster_is_held_until_the_cluster_is_acked(
    ads, cache: SnapshotCache
) -> None:
    client = ads.delta("envoy-a")
    await _subscribe_all(ads, client)
    for resp in await client.drain():
        await client.ack(resp)
    await client.ack(await client.recv())  # RDS, released by the CDS and EDS ACKs
    await client.barrier()

    cache.set_snapshot(build_snapshot(ads.gateway(extra_cluster="search"), {}))
    pushed = await client.drain()
    assert [r.type_url for r in pushed] == [CDS], "only the new cluster may go first"
    cds = pushed[0]
    assert list(ads.decode(cds)) == ["search"]  # only what changed

    await client.ack(cds)
    await client.expect_silence()  # the route still waits for the new cluster's endpoints

    await client.send(EDS, ["search"])  # Envoy asks for the new cluster's endpoints
    eds = await client.recv()
    assert eds.type_url == EDS
    assert list(ads.decode(eds)) == ["search"]
    await client.expect_silence()  # not before the new endpoints are ACKed
    await client.ack(eds)
    rds = await client.recv()
    assert rds.type_url == RDS
    configs = ads.decode(rds)
    assert list(configs) == ["public"]
    assert ads.route_weights(configs["public"], "extra") == {"search": 1}


async def test_cluster_is_removed_only_after_the_route_naming_it_is_replaced(
    ads, cache: SnapshotCache
) -> None:
    """Break after make: a cluster leaves CDS once no route table the client holds names it.

    xDS protocol, "Eventual consistency considerations": stale CDS clusters (ones no longer
    referenced) are removed after the RDS updates; a route naming a missing cluster is a 503.
    """
    cache.set_snapshot(build_snapshot(ads.gateway(extra_cluster="search"), {}))
    client = ads.delta("envoy-a")
    await client.send(CDS)
    await client.send(EDS, [*ads.CLUSTERS, "search"])
    await client.send(LDS)
    await client.send(RDS, ads.LISTENERS)
    for resp in await client.drain():
        await client.ack(resp)
    rds = await client.recv()
    assert ads.route_weights(ads.decode(rds)["public"], "extra") == {"search": 1}
    await client.ack(rds)
    await client.barrier()

    cache.set_snapshot(build_snapshot(ads.gateway(), {}))  # drops route "extra" and "search"
    pushed = await client.drain()
    early_removal = [r for r in pushed if r.type_url == CDS and "search" in r.removed_resources]
    assert not early_removal, (
        "CDS removed cluster 'search' while the client's ACKed route table still routes to it"
        f" (pushed in order: {[r.type_url.rsplit('.', 1)[-1] for r in pushed]})"
    )
    new_rds = [r for r in pushed if r.type_url == RDS]
    assert new_rds, "the route table that stops naming 'search' was not pushed"
    assert list(ads.decode(new_rds[-1])) == ["public"]
    await client.ack(new_rds[-1])
    cds = await client.recv()
    assert cds.type_url == CDS
    assert list(cds.removed_resources) == ["search"]


# --- subscriptions -------------------------------------------------------------------------


async def test_unsubscribed_resource_is_no_longer_pushed(
    ads, cache: SnapshotCache, weights: WeightController
) -> None:
    client, _ = await _synced(ads, cache, "envoy-a")
    await client.send(RDS, unsubscribe=["admin"])
    await client.expect_silence()

    change = await weights.set_weights("health", {"static": 100}, timeout_s=2)
    await client.expect_silence()  # admin changed, but the client left it
    assert change.ack.outcome == "acked"  # nothing in the node's scope changed

    push = asyncio.create_task(
        weights.set_weights("comments", {"comments-python": 45, "comments-go": 55}, timeout_s=2)
    )
    resp = await client.recv()
    assert list(ads.decode(resp)) == ["public"]
    await client.ack(resp)
    assert (await push).ack.outcome == "acked"

    await client.send(RDS, ["admin"])  # subscribing again brings the current admin
    resp = await client.recv()
    configs = ads.decode(resp)
    assert list(configs) == ["admin"]
    assert ads.route_weights(configs["admin"], "health") == {"static": 100}


async def test_removed_cluster_is_listed_in_removed_resources(ads, cache: SnapshotCache) -> None:
    gateway = ads.gateway()
    cache.set_snapshot(build_snapshot(ads.gateway(extra_cluster="search"), {}))
    client = ads.delta("envoy-a")
    await client.send(CDS)
    resp = await client.recv()
    assert sorted(ads.decode(resp)) == sorted([*ads.CLUSTERS, "search"])
    await client.ack(resp)

    cache.set_snapshot(build_snapshot(gateway, {}))
    resp = await client.recv()
    assert list(resp.resources) == []
    assert list(resp.removed_resources) == ["search"]
    await client.ack(resp)
    result = await cache.wait_for_version(CDS, cache.snapshot.version(CDS), ["envoy-a"], 2)
    assert result.outcome == "acked"
    await client.expect_silence()


async def test_missing_subscribed_name_is_reported_removed_once(
    ads, cache: SnapshotCache, weights: WeightController
) -> None:
    client = ads.delta("envoy-a")
    await client.send(RDS, ["public", "nope"])
    resp = await client.recv()
    assert list(ads.decode(resp)) == ["public"]
    assert list(resp.removed_resources) == ["nope"]
    await client.ack(resp)
    await client.expect_silence()

    push = asyncio.create_task(
        weights.set_weights("comments", {"comments-python": 35, "comments-go": 65}, timeout_s=2)
    )
    resp = await client.recv()
    assert list(ads.decode(resp)) == ["public"]
    assert list(resp.removed_resources) == []  # "nope" was reported already
    await client.ack(resp)
    assert (await push).ack.outcome == "acked"

    await client.send(RDS, ["nope-2"])
    resp = await client.recv()
    assert list(resp.resources) == []
    assert list(resp.removed_resources) == ["nope-2"]


# --- serialization once ----------------------------------------------------------------------


async def test_push_to_50_streams_serializes_each_changed_resource_once(
    ads, cache: SnapshotCache, weights: WeightController, monkeypatch: pytest.MonkeyPatch
) -> None:
    clients = [ads.delta(f"envoy-{i:02d}") for i in range(50)]
    for client in clients:
        await client.send(RDS, ads.LISTENERS)
    for client in clients:
        await client.ack(await client.recv())

    calls = {"encode_any": 0, "delta_resource": 0, "delta_response": 0}
    for name in calls:
        original = getattr(wire, name)

        def counting(*args, _original=original, _name=name):
            calls[_name] += 1
            return _original(*args)

        monkeypatch.setattr(wire, name, counting)
    route_cache_before = resources._route_resource.cache_info()

    push = asyncio.create_task(
        weights.set_weights("comments", {"comments-python": 17, "comments-go": 83}, timeout_s=5)
    )
    responses = await asyncio.gather(*(c.recv() for c in clients))
    for client, resp in zip(clients, responses, strict=True):
        await client.ack(resp)
    change = await push
    assert change.ack.outcome == "acked"
    assert len(change.ack.acked) == 50

    route_cache_after = resources._route_resource.cache_info()
    assert route_cache_after.misses - route_cache_before.misses == 1  # only "public" changed
    # One encoding of the changed resource; one cheap envelope per stream.
    assert calls == {"encode_any": 1, "delta_resource": 1, "delta_response": 50}
    assert len({bytes(r.resources[0]) for r in responses}) == 1
    assert {r.resources[0].name for r in responses} == {"public"}
    assert len({r.nonce for r in responses}) == 50
