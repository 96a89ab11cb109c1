"""The ADS gRPC server (grpcio ``grpc.aio``): SotW and Delta on one port.

envoy-data-plane ships message classes but no grpcio servicer, so the service is registered as
a generic handler with raw-bytes (de)serializers: requests are decoded by
:mod:`controller.xds.wire` and responses are written as pre-assembled bytes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from controller.xds.cache import SnapshotCache
from controller.xds.delta import serve_delta
from controller.xds.sotw import serve_sotw

SERVICE = "envoy.service.discovery.v3.AggregatedDiscoveryService"
SOTW_METHOD = f"/{SERVICE}/StreamAggregatedResources"
DELTA_METHOD = f"/{SERVICE}/DeltaAggregatedResources"


def ads_handler(cache: SnapshotCache) -> grpc.GenericRpcHandler:
    """A generic handler serving both ADS methods from ``cache``."""

    async def sotw(requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> None:
        await serve_sotw(cache, requests, context)

    async def delta(requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> None:
        await serve_delta(cache, requests, context)

    return grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "StreamAggregatedResources": grpc.stream_stream_rpc_method_handler(sotw),
            "DeltaAggregatedResources": grpc.stream_stream_rpc_method_handler(delta),
        },
    )


async def start_server(cache: SnapshotCache, address: str) -> tuple[grpc.aio.Server, int]:
    """Start an ADS server on ``address`` (``host:port``, port 0 for any free port).

    Returns:
        The started server and the bound port.

    Raises:
        RuntimeError: the address could not be bound.
    """
    server = grpc.aio.server(
        options=[
            # A second controller on the same port must fail, not silently share the port.
            ("grpc.so_reuseport", 0),
            # gRPC refuses new calls beyond 1,000 pending by default: a fleet of Envoys
            # reconnecting after a controller restart would be turned away in part.
            ("grpc.server.max_pending_requests", 20_000),
            ("grpc.server.max_pending_requests_hard_limit", 40_000),
            ("grpc.keepalive_time_ms", 30_000),
            ("grpc.http2.max_pings_without_data", 0),
            ("grpc.max_receive_message_length", 16 * 1024 * 1024),
            ("grpc.max_send_message_length", 64 * 1024 * 1024),
        ]
    )
    server.add_generic_rpc_handlers((ads_handler(cache),))
    try:
        port = server.add_insecure_port(address)
    except RuntimeError as exc:
        raise RuntimeError(f"cannot bind the xDS server to {address}: {exc}") from exc
    if port == 0:
        raise RuntimeError(f"cannot bind the xDS server to {address}")
    await server.start()
    return server, port
