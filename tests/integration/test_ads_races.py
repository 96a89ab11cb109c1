"""Interleavings of pushes, rollbacks, NACKs and reconnects (found by review).

Each test names the case; all assert on what the client streams received and on the outcomes
the weight primitive reported.
"""

from __future__ import annotations

import asyncio
from typing import Any

from controller.xds.cache import SnapshotCache
from controller.xds.typeurls import CLUSTER as CDS
from controller.xds.typeurls import LISTENER as LDS
from controller.xds.typeurls import ROUTE as RDS
from controller.xds.weights import WeightController

HALF = {"comments-python": 50, "comments-go": 50}


async def _synced(ads: Any, node_id: str, types: tuple[str, ...] = (RDS,)) -> Any:
    client = ads.sotw(node_id)
    for type_url in types:
        await client.subscribe(type_url, ads.LISTENERS if type_url == RDS else [])
        await client.ack(await client.recv())
    await client.barrier()
    return client


async def test_rollback_while_the_step_is_in_flight_is_sent_and_awaited(
    ads: Any, cache: SnapshotCache, weights: WeightController
) -> None:
    client = await _synced(ads, "a")
    good = cache.snapshot.version(RDS)
    step = asyncio.create_task(weights.set_weights("comments", HALF, timeout_s=0.3))
    in_flight = await client.recv()  # a slow Envoy: not answered yet
    assert (await step).ack.outcome == "timeout"

    back = asyncio.create_task(weights.set_weights("comments", None, timeout_s=2))
    rollback = await client.recv()
    assert rollback.version_info == good  # sent again although ACKed once before
    await asyncio.sleep(0.05)
    assert not back.done(), "the rollback counted as ACKed before the client answered it"
    await client.ack(in_flight)  # stale nonce by now: ignored
    await client.ack(rollback)
    assert (await back).ack.outcome == "acked"


async def test_a_slow_node_gets_the_reverted_weights_back(
    ads: Any, cache: SnapshotCache, weights: WeightController
) -> None:
    a = await _synced(ads, "a")
    b = await _synced(ads, "b")
    good = cache.snapshot.version(RDS)
    push = asyncio.create_task(weights.set_weights("comments", HALF, timeout_s=0.3))
    got_a, got_b = await a.recv(), await b.recv()
    await a.nack(got_a, "bad", last_good=good or "")
    change = await push
    assert change.ack.outcome == "nacked"
    assert change.reverted
    await b.ack(got_b)  # b applies the rejected weights late...
    resent = await b.recv()  # ...and is sent the good ones again
    assert resent.version_info == good


async def test_a_flapping_reconnect_does_not_make_a_false_timeout(
    ads: Any, weights: WeightController
) -> None:
    a = await _synced(ads, "a")
    push = asyncio.create_task(weights.set_weights("comments", HALF, nodes=["a"], timeout_s=2))
    await a.recv()
    await a.close()
    await ads.eventually(lambda: ads.node("a").streams == 0)
    b = ads.sotw("a")
    await b.subscribe(RDS, ads.LISTENERS)
    await b.recv()
    await b.close()  # a second reconnect dies unanswered too
    await ads.eventually(lambda: ads.node("a").streams == 0)
    c = ads.sotw("a")
    await c.subscribe(RDS, ads.LISTENERS)
    await c.ack(await c.recv())  # the Envoy process has it now
    assert (await push).ack.outcome == "acked"


async def test_a_later_rejected_change_does_not_revert_an_acked_one(
    ads: Any, weights: WeightController
) -> None:
    a = await _synced(ads, "a")
    b = await _synced(ads, "b")
    first = asyncio.create_task(weights.set_weights("comments", HALF, timeout_s=1))
    got_a = await a.recv()
    await a.ack(got_a)
    got_b = await b.recv()  # b slow
    await a.barrier()
    second = asyncio.create_task(weights.set_weights("health", {"static": 2}, timeout_s=1))
    await a.nack(await a.recv(), "health rejected", last_good=got_a.version_info)
    await b.ack(got_b)
    await b.ack(await b.recv())
    one, two = await first, await second
    assert one.ack.outcome == "acked"
    assert not one.reverted
    assert two.ack.outcome == "nacked"
    assert weights.current()["comments"] == HALF


async def test_status_follows_the_remaining_stream_when_one_closes(
    ads: Any, cache: SnapshotCache, weights: WeightController
) -> None:
    a = await _synced(ads, "gw")
    b = await _synced(ads, "gw")
    push = asyncio.create_task(weights.set_weights("comments", HALF, timeout_s=0.3))
    got_a = await a.recv()
    await b.recv()
    await a.ack(got_a)
    await a.barrier()
    await b.close()
    await ads.eventually(lambda: ads.node("gw").streams == 1)
    await push
    assert ads.node("gw").types[RDS].acked_version == cache.snapshot.version(RDS)


async def test_a_stream_that_does_not_read_routes_does_not_block_a_push(
    ads: Any, weights: WeightController
) -> None:
    a = await _synced(ads, "gw")
    await _synced(ads, "gw", types=(CDS,))  # a tool sharing the node id, clusters only
    push = asyncio.create_task(weights.set_weights("comments", HALF, timeout_s=1))
    await a.ack(await a.recv())
    assert (await push).ack.outcome == "acked"


async def test_delta_rollback_in_flight_is_not_acked_before_the_client_answers(
    ads: Any, weights: WeightController
) -> None:
    client = ads.delta("d")
    await client.send(RDS, subscribe=["public", "admin"])
    await client.ack(await client.recv())
    await client.barrier()
    step = asyncio.create_task(weights.set_weights("comments", HALF, timeout_s=0.3))
    in_flight = await client.recv()
    assert (await step).ack.outcome == "timeout"
    back = asyncio.create_task(weights.set_weights("comments", None, timeout_s=2))
    rollback = await client.recv()
    await asyncio.sleep(0.05)
    assert not back.done(), "the rollback counted as ACKed before the client answered"
    await client.ack(in_flight)
    await client.ack(rollback)
    assert (await back).ack.outcome == "acked"


async def test_gateway_revert_that_no_longer_fits_the_weights_keeps_a_consistent_state(
    ads: Any, cache: SnapshotCache, weights: WeightController
) -> None:
    """The reloaded gateway adds cluster x; weights moved to x during the ACK wait; then the
    gateway is NACKed. Going back would serve weights naming a missing cluster: the controller
    keeps the new gateway, consistently, and says it did not revert."""
    client = await _synced(ads, "a", types=(CDS, LDS, RDS))
    new = ads.gateway(extra_cluster="x")
    reload = asyncio.create_task(weights.replace_gateway(new, timeout_s=1.5))
    clusters = await client.recv()
    assert clusters.type_url == CDS
    moved = await weights.set_weights(
        "comments", {"comments-python": 50, "x": 50}, nodes=[], timeout_s=0.1
    )
    assert moved.ack.outcome == "no_nodes"
    await client.nack(clusters, "cluster x rejected")
    change = await reload
    assert not change.reverted
    assert weights.gateway is new
    assert "x" in (cache.snapshot.get(CDS) or {}).resources  # type: ignore[union-attr]
    assert (await weights.set_weights("comments", HALF, nodes=[], timeout_s=0.1)).ack
