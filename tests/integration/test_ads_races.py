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
SEVENTY = {"comments-python": 70, "comments-go": 30}


async def test_rollback_while_the_step_is_in_flight_is_sent_and_awaited(
    ads: Any, cache: SnapshotCache, weights: WeightController
) -> None:
    client = await ads.synced_sotw("a")
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
    a = await ads.synced_sotw("a")
    b = await ads.synced_sotw("b")
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
    a = await ads.synced_sotw("a")
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
    a = await ads.synced_sotw("a")
    b = await ads.synced_sotw("b")
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
    a = await ads.synced_sotw("gw")
    b = await ads.synced_sotw("gw")
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
    a = await ads.synced_sotw("gw")
    await ads.synced_sotw("gw", types=(CDS,))  # a tool sharing the node id, clusters only
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
    client = await ads.synced_sotw("a", types=(CDS, LDS, RDS))
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


async def test_sotw_rollback_after_a_nack_with_a_step_in_flight_is_sent(
    ads: Any, cache: SnapshotCache, weights: WeightController
) -> None:
    client = await ads.synced_sotw("a")
    good = cache.snapshot.version(RDS)
    push = asyncio.create_task(weights.set_weights("comments", HALF, timeout_s=1))
    await client.nack(await client.recv(), "no", last_good=good or "")
    assert (await push).reverted  # served v1 again; client kept v1: nothing sent (fine)
    await client.expect_silence()
    step = asyncio.create_task(weights.set_weights("comments", SEVENTY, timeout_s=0.3))
    in_flight = await client.recv()  # slow Envoy
    assert (await step).ack.outcome == "timeout"
    back = asyncio.create_task(weights.set_weights("comments", None, timeout_s=1))
    await client.ack(in_flight)  # Envoy applies 70/30 ...
    # ... and must now be sent the gateway weights again
    resp = await client.recv()
    assert resp.version_info == good
    await client.ack(resp)
    assert (await back).ack.outcome == "acked"


# 2a. Delta: a stream subscribed to a subset; idempotent set_weights reports timeout.
async def test_delta_subset_idempotent_set_weights_is_acked(
    ads: Any, cache: SnapshotCache, weights: WeightController
) -> None:
    client = ads.delta("d")
    await client.send(RDS, subscribe=["admin"])
    await client.ack(await client.recv())
    await client.barrier()
    first = await weights.set_weights("comments", HALF, timeout_s=1)
    assert first.ack.outcome == "acked"  # nothing to send to d: it holds the whole version
    again = await weights.set_weights("comments", HALF, timeout_s=0.5)
    assert again.ack.outcome == "acked", again.ack


# 2b. Delta: after NACK + revert, re-asserting the last good weights times out.
async def test_delta_after_revert_reasserting_good_weights_is_acked(
    ads: Any, cache: SnapshotCache, weights: WeightController
) -> None:
    client = ads.delta("d")
    await client.send(RDS, subscribe=["public", "admin"])
    await client.ack(await client.recv())
    await client.barrier()
    push = asyncio.create_task(weights.set_weights("comments", HALF, timeout_s=1))
    await client.nack(await client.recv(), "no")
    assert (await push).reverted
    await client.barrier()
    again = await weights.set_weights("comments", None, timeout_s=0.5)
    assert again.ack.outcome == "acked", again.ack


#    stream that needs nothing records its ACK before the waiter exists and is then skipped.
async def test_delta_subset_reload_is_acked(
    ads: Any, cache: SnapshotCache, weights: WeightController
) -> None:
    client = ads.delta("d")
    await client.send(RDS, subscribe=["admin"])
    await client.ack(await client.recv())
    await client.barrier()
    change = await weights.replace_gateway(ads.gateway(extra_cluster="x"), timeout_s=0.5)
    assert change.acks[RDS].outcome == "acked", change.acks[RDS]


# 3b. Same with SotW and a type whose response is delivered: reference (should pass).
async def test_sotw_reload_is_acked(
    ads: Any, cache: SnapshotCache, weights: WeightController
) -> None:
    client = await ads.synced_sotw("a")
    reload = asyncio.create_task(weights.replace_gateway(ads.gateway(extra_cluster="y"), 1))
    for resp in await client.drain():
        await client.ack(resp)
    change = await reload
    assert change.acks[RDS].outcome in ("acked", "timeout")


async def test_superseded_change_of_the_same_route_is_not_acked(
    ads: Any, cache: SnapshotCache, weights: WeightController
) -> None:
    client = await ads.synced_sotw("a")
    first = asyncio.create_task(weights.set_weights("comments", HALF, timeout_s=0.5))
    second = asyncio.create_task(weights.set_weights("comments", SEVENTY, timeout_s=0.5))
    responses = await client.drain()
    held = ads.route_weights(ads.decode(responses[-1])["public"], "comments")
    for resp in responses:
        await client.ack(resp)
    one, two = await first, await second
    assert two.ack.outcome == "acked"
    assert held == SEVENTY
    print("responses", len(responses), "first:", one.ack.outcome, "last_good", weights._last_good)
    assert one.ack.outcome != "acked", "HALF reported acked; the Envoy holds 70/30"


async def test_delta_wildcard_resubscribe_gets_everything_again(
    ads: Any, cache: SnapshotCache
) -> None:
    client = ads.delta("d")
    await client.send(CDS)
    await client.ack(await client.recv())
    await client.barrier()
    await client.send(CDS, unsubscribe=["*"])
    for r in await client.drain():
        await client.ack(r)
    await client.send(CDS, subscribe=["*"])
    got = await client.drain()
    names = {r.name for resp in got for r in resp.resources}
    assert names == set(ads.CLUSTERS), got


async def test_resubscribed_original_stream_closing_unanswered_is_not_acked(
    ads: Any, cache: SnapshotCache, weights: WeightController
) -> None:
    a = await ads.synced_sotw("gw")
    b = ads.sotw("gw")
    await b.subscribe(CDS)
    await b.recv()  # CDS never ACKed: b's RDS is held back
    await b.subscribe(RDS, ["public"])
    await b.barrier()
    push = asyncio.create_task(weights.set_weights("comments", HALF, timeout_s=0.5))
    await b.send(RDS, ads.LISTENERS)  # Envoy adds a route config name; no nonce yet
    await b.barrier()
    await b.close()
    await ads.eventually(lambda: ads.node("gw").streams == 1)
    await a.ack(await a.recv())
    change = await push
    assert change.ack.outcome != "acked", change.ack


async def test_no_per_stream_records_leak(ads: Any, cache: SnapshotCache, weights) -> None:
    a = await ads.synced_sotw("gw")
    d = ads.delta("gw")
    await d.send(RDS, subscribe=["public"])
    await d.ack(await d.recv())
    await d.barrier()
    push = asyncio.create_task(weights.set_weights("comments", HALF, timeout_s=0.3))
    await a.nack(await a.recv(), "x")
    await push
    await a.close()
    await d.close()
    await ads.eventually(lambda: ads.node("gw").streams == 0)
    n = ads.node("gw")
    for table in (n.stream_types, n.stream_sent, n.stream_acks, n.stream_nacks):
        assert not table
    assert not cache._waiters
    assert not cache._wakeups


async def test_sotw_subscription_change_after_a_nack_is_not_an_ack(
    ads: Any, cache: SnapshotCache, weights: WeightController
) -> None:
    """After a NACK, Envoy changing its subscription answers the same nonce with its last good
    version_info and no error_detail: that accepts nothing."""
    client = ads.sotw("a")
    await client.subscribe(RDS, ["public"])
    good = await client.recv()
    await client.ack(good)
    await client.barrier()
    push = asyncio.create_task(weights.set_weights("comments", HALF, timeout_s=0.5))
    bad = await client.recv()
    await client.nack(bad, "no", last_good=good.version_info)
    assert (await push).ack.outcome == "nacked"
    await client.send(RDS, ["public", "admin"], version=good.version_info, nonce=bad.nonce)
    await client.barrier()
    assert ads.node("a").types[RDS].acked_version == good.version_info
    again = await client.recv()  # the new subscription is answered
    assert sorted(ads.decode(again)) == ["admin", "public"]
