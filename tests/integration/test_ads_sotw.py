"""State-of-the-world ADS (``StreamAggregatedResources``) against real client streams."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import grpc
import pytest
from envoy_data_plane.envoy.config.core.v3 import Node
from envoy_data_plane.envoy.service.discovery.v3 import DiscoveryRequest

from controller.policy.gateway import Gateway
from controller.xds import resources, wire
from controller.xds.cache import SnapshotCache
from controller.xds.resources import build_snapshot
from controller.xds.server import SOTW_METHOD
from controller.xds.typeurls import CLUSTER as CDS
from controller.xds.typeurls import ENDPOINT as EDS
from controller.xds.typeurls import LISTENER as LDS
from controller.xds.typeurls import ROUTE as RDS
from controller.xds.weights import PersistError, WeightController


async def _synced(ads, cache: SnapshotCache, node_id: str) -> tuple[Any, str]:
    """A stream subscribed to both route configurations that ACKed the current RDS version."""
    client = ads.sotw(node_id)
    await client.subscribe(RDS, ads.LISTENERS)
    resp = await client.recv()
    await client.ack(resp)
    result = await cache.wait_for_version(RDS, resp.version_info, [node_id], timeout_s=2)
    assert result.outcome == "acked"
    return client, resp.version_info


# --- first request, ACK --------------------------------------------------------------------


async def test_first_request_gets_route_configurations_and_ack_is_recorded(
    ads, cache: SnapshotCache
) -> None:
    client = ads.sotw("envoy-a")
    await client.subscribe(RDS, ads.LISTENERS)
    resp = await client.recv()

    assert resp.type_url == RDS
    assert resp.version_info == cache.snapshot.version(RDS)
    assert resp.nonce
    configs = ads.decode(resp)
    assert sorted(configs) == sorted(ads.LISTENERS)
    assert ads.route_weights(configs["public"], "comments") == {
        "comments-python": 100,
        "comments-go": 0,
    }
    assert ads.route_weights(configs["admin"], "health") == {"static": 1}
    assert ads.node("envoy-a").types[RDS].sent_version == resp.version_info
    assert ads.node("envoy-a").types[RDS].acked_version is None

    await client.ack(resp)
    result = await cache.wait_for_version(RDS, resp.version_info, ["envoy-a"], timeout_s=2)
    assert result.outcome == "acked"
    status = ads.node("envoy-a")
    assert status.protocol == "sotw"
    assert status.user_agent == "envoy/1.40.0"
    assert status.types[RDS].acked_version == resp.version_info
    assert status.types[RDS].last_nack is None
    await client.expect_silence()  # an ACK triggers no response


async def test_wildcard_cds_and_named_eds_and_lds(ads, cache: SnapshotCache) -> None:
    client = ads.sotw("envoy-a")
    await client.subscribe(CDS)
    cds = await client.recv()
    assert cds.type_url == CDS
    assert cds.version_info == cache.snapshot.version(CDS)
    clusters = ads.decode(cds)
    assert sorted(clusters) == sorted(ads.CLUSTERS)
    assert clusters["comments-go"].typed_extension_protocol_options  # http2 options
    await client.ack(cds)

    await client.subscribe(EDS, ["static"])
    eds = await client.recv()
    assignments = ads.decode(eds)
    assert list(assignments) == ["static"]
    endpoint = assignments["static"].endpoints[0].lb_endpoints[0].endpoint
    assert endpoint.address.socket_address.port_value == 8003
    await client.ack(eds)

    await client.subscribe(LDS)
    lds = await client.recv()
    listeners = ads.decode(lds)
    assert sorted(listeners) == sorted(ads.LISTENERS)
    assert listeners["public"].address.socket_address.port_value == 10000
    assert cds.nonce != eds.nonce != lds.nonce


# --- NACK ------------------------------------------------------------------------------------


async def test_nack_keeps_last_good_version_is_not_resent_then_a_fix_is_acked(
    ads, cache: SnapshotCache, weights: WeightController
) -> None:
    client, good = await _synced(ads, cache, "envoy-a")

    push = asyncio.create_task(
        weights.set_weights("comments", {"comments-python": 50, "comments-go": 50}, timeout_s=2)
    )
    bad = await client.recv()
    assert bad.version_info != good
    assert ads.route_weights(ads.decode(bad)["public"], "comments")["comments-go"] == 50
    await client.nack(bad, "weights rejected: test", last_good=good)
    change = await push
    assert change.ack.outcome == "nacked"
    assert not change.ack.ok
    assert change.ack.nacked == {"envoy-a": "weights rejected: test"}

    rds = ads.node("envoy-a").types[RDS]
    assert rds.acked_version == good
    assert rds.last_nack is not None
    assert rds.last_nack.version == bad.version_info
    assert rds.last_nack.message == "weights rejected: test"
    assert rds.last_nack.code == 3
    await client.expect_silence()  # the rejected version is not sent again

    push = asyncio.create_task(
        weights.set_weights("comments", {"comments-python": 90, "comments-go": 10}, timeout_s=2)
    )
    fixed = await client.recv()
    assert fixed.version_info not in (good, bad.version_info)
    assert fixed.nonce != bad.nonce
    assert ads.route_weights(ads.decode(fixed)["public"], "comments")["comments-go"] == 10
    await client.ack(fixed)
    change = await push
    assert change.ack.outcome == "acked"
    assert change.ack.acked == ("envoy-a",)
    waited = await cache.wait_for_version(RDS, fixed.version_info, timeout_s=1)
    assert waited.outcome == "acked"
    rds = ads.node("envoy-a").types[RDS]
    assert rds.acked_version == fixed.version_info
    assert rds.last_nack is not None
    assert rds.last_nack.message == "weights rejected: test"


async def test_nack_is_reported_by_the_weight_primitive_never_as_success(
    ads, cache: SnapshotCache, weights: WeightController
) -> None:
    good_client, _ = await _synced(ads, cache, "envoy-a")
    bad_client, good = await _synced(ads, cache, "envoy-b")

    push = asyncio.create_task(
        weights.set_weights("comments", {"comments-python": 70, "comments-go": 30}, timeout_s=2)
    )
    resp_a = await good_client.recv()
    resp_b = await bad_client.recv()
    await good_client.ack(resp_a)
    await bad_client.nack(resp_b, "unknown cluster comments-go", last_good=good)
    change = await push
    assert change.ack.outcome == "nacked"
    assert change.ack.ok is False
    assert change.ack.acked == ("envoy-a",)
    assert change.ack.nacked == {"envoy-b": "unknown cluster comments-go"}
    assert change.ack.version == resp_b.version_info


async def test_no_connected_node_is_no_nodes(
    ads, cache: SnapshotCache, weights: WeightController
) -> None:
    change = await weights.set_weights("comments", {"comments-python": 80, "comments-go": 20})
    assert change.ack.outcome == "no_nodes"
    assert not change.ack.ok

    # A node that does not subscribe to routes is no target either.
    client = ads.sotw("cds-only")
    await client.subscribe(CDS)
    await client.ack(await client.recv())
    await client.barrier()
    change = await weights.set_weights("comments", {"comments-python": 81, "comments-go": 19})
    assert change.ack.outcome == "no_nodes"


# --- stale nonce ---------------------------------------------------------------------------


async def test_stale_nonce_is_ignored(ads, cache: SnapshotCache, gateway: Gateway) -> None:
    client = ads.sotw("envoy-a")
    await client.subscribe(RDS, ads.LISTENERS)
    first = await client.recv()
    cache.set_snapshot(build_snapshot(gateway, {"comments": {"comments-go": 100}}))
    second = await client.recv()
    assert second.version_info != first.version_info

    # Answers to the replaced response: neither an ACK nor a NACK, and no response.
    await client.ack(first)
    await client.nack(first, "stale complaint")
    await client.barrier()
    rds = ads.node("envoy-a").types[RDS]
    assert rds.acked_version is None
    assert rds.last_nack is None
    assert rds.sent_version == second.version_info
    await client.expect_silence()

    await client.ack(second)
    result = await cache.wait_for_version(RDS, second.version_info, ["envoy-a"], timeout_s=2)
    assert result.outcome == "acked"


# --- reconnect -------------------------------------------------------------------------------


async def test_reconnect_with_current_cds_version_gets_nothing_and_counts_as_acked(
    ads, cache: SnapshotCache, weights: WeightController
) -> None:
    """A wildcard type's version is the whole type: a client reconnecting with it holds
    exactly what would be sent."""
    version = cache.snapshot.version(CDS)
    # A node this controller never saw (e.g. after a controller restart) holding the version.
    client = ads.sotw("envoy-b")
    await client.subscribe(CDS, [], version=version)
    await client.expect_silence()
    assert ads.node("envoy-b").types[CDS].acked_version == version
    result = await cache.wait_for_version(CDS, version, ["envoy-b"], timeout_s=0.2)
    assert result.outcome == "acked"


async def test_reconnect_with_current_rds_version_is_answered(
    ads, cache: SnapshotCache, weights: WeightController
) -> None:
    """A named type's version says nothing about which names the client holds: Envoy may have
    ACKed it for [public] and come back asking for [public, admin]. Always answered."""
    first = ads.sotw("envoy-a")
    await first.subscribe(RDS, ["public"])
    resp = await first.recv()
    await first.ack(resp)
    await first.barrier()
    await first.close()
    await ads.eventually(lambda: ads.node("envoy-a").streams == 0)

    client = ads.sotw("envoy-a")
    await client.subscribe(RDS, ["public", "admin"], version=resp.version_info)
    again = await client.recv()
    assert again.version_info == resp.version_info
    assert sorted(ads.decode(again)) == ["admin", "public"]
    assert ads.node("envoy-a").types[RDS].acked_version is None  # a fresh stream: not yet
    await client.ack(again)
    result = await cache.wait_for_version(RDS, resp.version_info, ["envoy-a"], timeout_s=2)
    assert result.outcome == "acked"

    # The stream is live: the next change is pushed to it.
    push = asyncio.create_task(
        weights.set_weights("comments", {"comments-python": 60, "comments-go": 40}, timeout_s=2)
    )
    changed = await client.recv()
    assert changed.version_info != resp.version_info
    await client.ack(changed)
    assert (await push).ack.outcome == "acked"


async def test_reconnect_with_old_version_gets_the_current_one(ads, cache: SnapshotCache) -> None:
    client = ads.sotw("envoy-a")
    await client.subscribe(RDS, ads.LISTENERS, version="0123456789abcdef")
    resp = await client.recv()
    assert resp.version_info == cache.snapshot.version(RDS)
    assert sorted(ads.decode(resp)) == sorted(ads.LISTENERS)
    assert ads.node("envoy-a").types[RDS].acked_version is None


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
    assert ads.node("envoy-a").types[RDS].acked_version == resp_a.version_info
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
    assert change.ack.pending == ()


# --- unknown types, malformed requests -------------------------------------------------------


async def test_unknown_type_url_gets_no_response_and_stream_keeps_working(
    ads, cache: SnapshotCache
) -> None:
    client = ads.sotw("envoy-a")
    await client.subscribe(ads.SECRET, ["server-cert"])
    await client.expect_silence()
    assert ads.SECRET in ads.node("envoy-a").unsupported_types
    assert ads.SECRET not in ads.node("envoy-a").types

    await client.subscribe(RDS, ["public"])
    resp = await client.recv()
    assert resp.type_url == RDS
    assert list(ads.decode(resp)) == ["public"]


async def test_malformed_request_ends_only_its_stream(
    ads, cache: SnapshotCache, weights: WeightController
) -> None:
    healthy, _ = await _synced(ads, cache, "envoy-a")

    garbage = ads.raw(SOTW_METHOD)
    await garbage.write(b"\xff\xff\xff")  # a truncated varint
    assert await garbage.ended_with() == grpc.StatusCode.INVALID_ARGUMENT
    assert "malformed" in (await garbage.call.details())

    push = asyncio.create_task(
        weights.set_weights("comments", {"comments-python": 55, "comments-go": 45}, timeout_s=2)
    )
    resp = await healthy.recv()
    assert ads.route_weights(ads.decode(resp)["public"], "comments")["comments-go"] == 45
    await healthy.ack(resp)
    assert (await push).ack.outcome == "acked"


async def test_malformed_request_after_a_good_one_ends_the_stream(
    ads, cache: SnapshotCache
) -> None:
    stream = ads.raw(SOTW_METHOD)
    good = DiscoveryRequest(node=Node(id="envoy-raw"), type_url=RDS, resource_names=["public"])
    await stream.write(bytes(good))
    assert await stream.recv()
    await stream.write(bytes(DiscoveryRequest(type_url=RDS)) + b"\x22\x05ab")  # past the end
    assert await stream.ended_with() == grpc.StatusCode.INVALID_ARGUMENT
    await ads.eventually(lambda: ads.node("envoy-raw").streams == 0)


async def test_first_request_without_node_id_is_invalid_argument(ads) -> None:
    stream = ads.raw(SOTW_METHOD)
    await stream.write(bytes(DiscoveryRequest(type_url=RDS, resource_names=["public"])))
    assert await stream.ended_with() == grpc.StatusCode.INVALID_ARGUMENT


async def test_empty_type_url_is_invalid_argument(ads, cache: SnapshotCache) -> None:
    client = ads.sotw("envoy-a")
    await client.send("", ["public"])
    assert await client.ended_with() == grpc.StatusCode.INVALID_ARGUMENT
    # Refused on its first request: the stream left nothing registered behind it.
    assert "envoy-a" not in cache.connected_nodes()


# --- make-before-break -----------------------------------------------------------------------


async def test_new_stream_gets_cds_before_rds_and_rds_waits_for_cluster_acks(
    ads, cache: SnapshotCache
) -> None:
    client = ads.sotw("envoy-a")
    await client.subscribe(CDS)
    await client.subscribe(EDS, ads.CLUSTERS)
    await client.subscribe(LDS)
    await client.subscribe(RDS, ads.LISTENERS)
    first = await client.drain()
    assert [r.type_url for r in first] == [CDS, EDS, LDS]  # RDS held: no cluster ACKed yet
    cds, eds, lds = first

    await client.ack(cds)
    await client.expect_silence()  # endpoints not ACKed yet: clusters still warming
    await client.ack(eds)
    rds = await client.recv()
    assert rds.type_url == RDS
    assert sorted(ads.decode(rds)) == sorted(ads.LISTENERS)
    await client.ack(lds)
    await client.ack(rds)
    result = await cache.wait_for_version(RDS, rds.version_info, ["envoy-a"], timeout_s=2)
    assert result.outcome == "acked"


async def test_route_to_a_new_cluster_is_held_until_the_cluster_is_acked(
    ads, cache: SnapshotCache
) -> None:
    client = ads.sotw("envoy-a")
    await client.subscribe(CDS)
    await client.subscribe(EDS, ads.CLUSTERS)
    await client.subscribe(LDS)
    await client.subscribe(RDS, ads.LISTENERS)
    last = {resp.type_url: resp for resp in await client.drain()}
    for resp in last.values():
        await client.ack(resp)
    await client.ack(await client.recv())  # RDS, released by the CDS and EDS ACKs
    await client.barrier()
    before = cache.snapshot

    cache.set_snapshot(build_snapshot(ads.gateway(extra_cluster="search"), {}))
    assert cache.snapshot.version(LDS) == before.version(LDS)
    pushed = await client.drain()
    types = [r.type_url for r in pushed]
    assert types, "nothing pushed after the snapshot changed"
    assert types[0] == CDS
    assert RDS not in types, "route to 'search' sent before the client had the cluster"
    cds = pushed[0]
    assert "search" in ads.decode(cds)

    # ACK the clusters only: the route still waits for the new cluster's endpoints.
    await client.ack(cds)
    await client.expect_silence()

    # Envoy asks for the new cluster's endpoints (ACKing the last EDS response it got).
    # (SotW may have re-sent the unchanged endpoints: the EDS type version changed.)
    last_eds = [r for r in pushed if r.type_url == EDS] or [last[EDS]]
    await client.ack(last_eds[-1], names=[*ads.CLUSTERS, "search"])
    eds = await client.recv()
    assert eds.type_url == EDS
    assert "search" in ads.decode(eds)
    await client.expect_silence()  # not before the new endpoints are ACKed
    await client.ack(eds)
    rds = await client.recv()
    assert rds.type_url == RDS
    assert ads.route_weights(ads.decode(rds)["public"], "extra") == {"search": 1}


async def test_cluster_is_removed_only_after_the_route_naming_it_is_replaced(
    ads, cache: SnapshotCache
) -> None:
    """Break after make: a cluster leaves CDS once no route table the client holds names it.

    xDS protocol, "Eventual consistency considerations": stale CDS clusters (ones no longer
    referenced) are removed after the RDS updates; a route naming a missing cluster is a 503.
    """
    cache.set_snapshot(build_snapshot(ads.gateway(extra_cluster="search"), {}))
    client = ads.sotw("envoy-a")
    await client.subscribe(CDS)
    await client.subscribe(EDS, [*ads.CLUSTERS, "search"])
    await client.subscribe(LDS)
    await client.subscribe(RDS, ads.LISTENERS)
    for resp in await client.drain():
        await client.ack(resp)
    rds = await client.recv()
    assert ads.route_weights(ads.decode(rds)["public"], "extra") == {"search": 1}
    await client.ack(rds)
    await client.barrier()

    cache.set_snapshot(build_snapshot(ads.gateway(), {}))  # drops route "extra" and "search"
    pushed = await client.drain()
    early_removal = [r for r in pushed if r.type_url == CDS and "search" not in ads.decode(r)]
    assert not early_removal, (
        "CDS dropped cluster 'search' while the client's ACKed route table still routes to it"
        f" (pushed in order: {[r.type_url.rsplit('.', 1)[-1] for r in pushed]})"
    )
    new_rds = [r for r in pushed if r.type_url == RDS]
    assert new_rds, "the route table that stops naming 'search' was not pushed"
    await client.ack(new_rds[-1])
    cds = await client.recv()
    assert cds.type_url == CDS
    assert sorted(ads.decode(cds)) == sorted(ads.CLUSTERS)


# --- serialization once ----------------------------------------------------------------------


async def test_push_to_50_streams_serializes_each_changed_resource_once(
    ads, cache: SnapshotCache, weights: WeightController, monkeypatch: pytest.MonkeyPatch
) -> None:
    clients = [ads.sotw(f"envoy-{i:02d}") for i in range(50)]
    for client in clients:
        await client.subscribe(RDS, ads.LISTENERS)
    for client in clients:
        await client.ack(await client.recv())

    calls = {"encode_any": 0, "sotw_response_body": 0}
    for name in calls:
        original = getattr(wire, name)

        def counting(*args, _original=original, _name=name):
            calls[_name] += 1
            return _original(*args)

        monkeypatch.setattr(wire, name, counting)
    route_cache_before = resources._route_resource.cache_info()

    push = asyncio.create_task(
        weights.set_weights("comments", {"comments-python": 13, "comments-go": 87}, timeout_s=5)
    )
    responses = await asyncio.gather(*(c.recv() for c in clients))
    for client, resp in zip(clients, responses, strict=True):
        await client.ack(resp)
    change = await push
    assert change.ack.outcome == "acked"
    assert len(change.ack.acked) == 50

    route_cache_after = resources._route_resource.cache_info()
    assert route_cache_after.misses - route_cache_before.misses == 1  # only "public" changed
    assert calls == {"encode_any": 1, "sotw_response_body": 1}
    assert len(cache.snapshot.get(RDS)._views) == 1
    assert len({r.version_info for r in responses}) == 1
    assert len({tuple(bytes(a) for a in r.resources) for r in responses}) == 1
    assert len({r.nonce for r in responses}) == 50  # nonces are per stream


async def test_weights_that_cannot_be_saved_are_not_served(
    gateway: Gateway, cache: SnapshotCache
) -> None:
    """A failing persist hook (disk full, read-only volume) refuses the change: a restart
    would otherwise forget weights Envoy already has."""

    def broken(route: str, weights: Mapping[str, int]) -> None:
        raise OSError("disk full")

    controller = WeightController(gateway, cache, persist=broken)
    before = cache.snapshot
    with pytest.raises(PersistError, match="disk full"):
        await controller.set_weights("comments", {"comments-python": 50, "comments-go": 50})
    assert cache.snapshot is before
    assert controller.current()["comments"] == {"comments-python": 100, "comments-go": 0}
