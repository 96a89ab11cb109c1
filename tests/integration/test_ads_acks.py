"""What counts as ACKed: shared node ids, disconnects, superseded pushes, NACKed content.

Regression tests for the cases where a weight change could be reported ``acked`` although an
Envoy did not get it, or ``timeout`` although it did.
"""

from __future__ import annotations

import asyncio
from typing import Any

from controller.xds.cache import SnapshotCache
from controller.xds.resources import build_snapshot
from controller.xds.typeurls import CLUSTER as CDS
from controller.xds.typeurls import ROUTE as RDS
from controller.xds.weights import WeightController

HALF = {"comments-python": 50, "comments-go": 50}


async def test_one_ack_does_not_stand_for_every_envoy_sharing_a_node_id(
    ads: Any, weights: WeightController
) -> None:
    a = await ads.synced_sotw("gw")
    b = await ads.synced_sotw("gw")
    assert ads.node("gw").streams == 2
    push = asyncio.create_task(weights.set_weights("comments", HALF, timeout_s=0.5))
    got_a, got_b = await a.recv(), await b.recv()
    await a.ack(got_a)  # replica b never answers: it still routes 100/0
    change = await push
    assert change.ack.outcome == "timeout"
    assert change.ack.pending == ("gw",)

    push = asyncio.create_task(weights.set_weights("comments", HALF, timeout_s=2))
    await b.ack(got_b)
    assert (await push).ack.outcome == "acked"


async def test_a_target_that_disconnects_unanswered_stays_pending(
    ads: Any, weights: WeightController
) -> None:
    a = await ads.synced_sotw("a")
    b = await ads.synced_sotw("b")
    push = asyncio.create_task(weights.set_weights("comments", HALF, timeout_s=0.5))
    got_a = await a.recv()
    await b.recv()
    await b.close()  # Envoy keeps serving its old routes when its xDS stream drops
    await a.ack(got_a)
    change = await push
    assert change.ack.outcome == "timeout"
    assert change.ack.pending == ("b",)
    assert change.ack.disconnected == ("b",)
    assert change.ack.acked == ("a",)

    # b comes back (a new stream) and ACKs: now it holds the weights.
    push = asyncio.create_task(weights.set_weights("comments", HALF, nodes=["b"], timeout_s=2))
    back = ads.sotw("b")
    await back.subscribe(RDS, ads.LISTENERS)
    await back.ack(await back.recv())
    assert (await push).ack.outcome == "acked"


async def test_a_push_superseded_on_the_wire_is_acked_by_the_later_one(
    ads: Any, weights: WeightController
) -> None:
    """Two rollouts move two routes at once: the stream may only ever be sent the second
    version, which contains the first change. Both report acked."""
    client = await ads.synced_sotw("a")
    first = asyncio.create_task(weights.set_weights("comments", HALF, timeout_s=2))
    second = asyncio.create_task(weights.set_weights("health", {"static": 1}, timeout_s=2))
    responses = await client.drain()
    assert responses
    for resp in responses:
        await client.ack(resp)
    assert (await first).ack.outcome == "acked"
    assert (await second).ack.outcome == "acked"


async def test_delta_nack_reverts_and_the_rejected_content_is_not_resent(
    ads: Any, cache: SnapshotCache, weights: WeightController
) -> None:
    client = ads.delta("d")
    await client.send(RDS, subscribe=["public", "admin"])
    await client.ack(await client.recv())
    await client.barrier()
    good = cache.snapshot.version(RDS)

    push = asyncio.create_task(weights.set_weights("comments", HALF, timeout_s=1))
    await client.nack(await client.recv(), "rejected by the data plane")
    change = await push
    assert change.ack.outcome == "nacked"
    assert change.reverted  # the last good weights are served again, for Envoys to come
    assert cache.snapshot.version(RDS) == good
    assert weights.current()["comments"] == {"comments-python": 100, "comments-go": 0}
    await client.expect_silence()  # the client kept the good table: nothing to send

    # An unrelated change is ACKed, and the node holds the whole served version.
    push = asyncio.create_task(weights.set_weights("health", {"static": 2}, timeout_s=1))
    other = await client.recv()
    assert [r.name for r in other.resources] == ["admin"]
    await client.ack(other)
    assert (await push).ack.outcome == "acked"
    assert ads.node("d").types[RDS].acked_version == cache.snapshot.version(RDS)

    # Retrying the rejected weights: not resent (same bytes), reported as NACKed at once.
    retry = await weights.set_weights("comments", HALF, timeout_s=1)
    assert retry.ack.outcome == "nacked"
    assert "rejected by the data plane" in retry.ack.nacked["d"]
    assert retry.reverted
    await client.expect_silence()

    # Other weights: sent, ACKed.
    fixed = asyncio.create_task(
        weights.set_weights("comments", {"comments-python": 60, "comments-go": 40}, timeout_s=2)
    )
    resp = await client.recv()
    assert [r.name for r in resp.resources] == ["public"]
    await client.ack(resp)
    assert (await fixed).ack.outcome == "acked"
    assert ads.node("d").types[RDS].acked_version == cache.snapshot.version(RDS)


async def test_sotw_nack_reverts_for_envoys_that_connect_later(
    ads: Any, cache: SnapshotCache, weights: WeightController
) -> None:
    client = await ads.synced_sotw("a")
    good = cache.snapshot.version(RDS)
    push = asyncio.create_task(weights.set_weights("comments", HALF, timeout_s=1))
    await client.nack(await client.recv(), "no", last_good=good or "")
    change = await push
    assert change.ack.outcome == "nacked"
    assert change.reverted
    assert cache.snapshot.version(RDS) == good
    await client.expect_silence()  # the client still holds the good version

    late = ads.sotw("late")
    await late.subscribe(RDS, ads.LISTENERS)
    first = await late.recv()
    assert first.version_info == good
    public = ads.decode(first)["public"]
    assert ads.route_weights(public, "comments") == {"comments-python": 100, "comments-go": 0}


async def test_reset_weights_serves_the_gateway_weights(
    ads: Any, cache: SnapshotCache, weights: WeightController
) -> None:
    client = await ads.synced_sotw("a")
    push = asyncio.create_task(weights.set_weights("comments", HALF, timeout_s=2))
    await client.ack(await client.recv())
    assert (await push).ack.outcome == "acked"
    push = asyncio.create_task(weights.set_weights("comments", None, timeout_s=2))
    resp = await client.recv()
    public = ads.decode(resp)["public"]
    assert ads.route_weights(public, "comments") == {"comments-python": 100, "comments-go": 0}
    await client.ack(resp)
    assert (await push).ack.outcome == "acked"
    assert weights.current()["comments"] == {"comments-python": 100, "comments-go": 0}


async def test_delta_reconnect_keeps_clusters_a_stale_route_table_may_name(
    ads: Any, cache: SnapshotCache
) -> None:
    """The controller restarted without cluster x and the route to it; Envoy reconnects holding
    both. x must outlive the old route table: removed only after the new one is ACKed."""
    old = build_snapshot(ads.gateway(extra_cluster="x"), {})
    old_cds, old_rds = old.get(CDS), old.get(RDS)
    assert old_cds is not None
    assert old_rds is not None
    client = ads.delta("d")
    await client.send(CDS, initial={n: r.version for n, r in old_cds.resources.items()})
    await client.send(
        RDS,
        subscribe=list(old_rds.resources),
        initial={n: r.version for n, r in old_rds.resources.items()},
    )
    responses = await client.drain()
    cds = [r for r in responses if r.type_url == CDS]
    assert all("x" not in r.removed_resources for r in cds), "x removed under a live route"
    rds = [r for r in responses if r.type_url == RDS]
    assert rds, "the new route tables were not sent"
    for resp in rds:
        await client.ack(resp)
    removal = await client.recv()
    assert removal.type_url == CDS
    assert list(removal.removed_resources) == ["x"]
