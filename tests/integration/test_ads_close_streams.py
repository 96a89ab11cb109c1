"""``SnapshotCache.close_streams``: every open ADS stream (SotW and Delta) ends with UNAVAILABLE
and the reason given, through the real gRPC server; streams opened afterwards are served."""

from __future__ import annotations

import logging

import grpc
import pytest

from controller.xds.cache import SnapshotCache
from controller.xds.typeurls import CLUSTER as CDS
from controller.xds.typeurls import ROUTE as RDS

REASON = "this xDS server is stale: no successful store read for 10.2 s"


async def test_every_open_stream_ends_unavailable_and_new_ones_are_served(
    ads, cache: SnapshotCache, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="controller.xds")
    sotw = await ads.synced_sotw("envoy-sotw")
    delta = ads.delta("envoy-delta")
    await delta.send(CDS)
    await delta.ack(await delta.recv())
    await delta.barrier()
    assert cache.connected_nodes() == {"envoy-sotw", "envoy-delta"}

    assert cache.close_streams(REASON) == 2

    for stream in (sotw, delta):
        assert await stream.ended_with() == grpc.StatusCode.UNAVAILABLE
        assert await stream.call.details() == REASON
    await ads.eventually(lambda: cache.connected_nodes() == set())
    assert not caplog.records  # an ordered close, not a stream failing (logged as a bug)

    again = ads.sotw("envoy-sotw")  # the same Envoy reconnecting here is still served
    await again.subscribe(RDS, ads.LISTENERS)
    resp = await again.recv()
    assert sorted(ads.decode(resp)) == sorted(ads.LISTENERS)
    await again.ack(resp)
    await again.expect_silence()  # not told to end: the closing was for the streams open then
    assert cache.connected_nodes() == {"envoy-sotw"}


async def test_closing_with_no_stream_open_does_nothing(ads, cache: SnapshotCache) -> None:
    assert cache.close_streams(REASON) == 0
    client = await ads.synced_sotw("envoy-a")
    await client.expect_silence()
