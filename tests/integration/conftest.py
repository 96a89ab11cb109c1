"""Shared fixtures for the ADS integration tests.

A real ``grpc.aio`` server (``controller.xds.server.start_server``) on 127.0.0.1, port 0, and
real client streams opened on a ``grpc.aio`` channel with envoy-data-plane (betterproto2)
messages: requests are serialized with ``bytes`` and responses parsed with
``DiscoveryResponse.parse`` / ``DeltaDiscoveryResponse.parse``.

Each client stream has a background reader task that moves responses into a queue, so a test
waits for a response with a timeout (a missing response fails fast) without ever cancelling a
gRPC read (cancelling ``call.read()`` cancels the whole call).
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

import grpc
import pytest
import yaml
from envoy_data_plane.envoy.config.cluster.v3 import Cluster
from envoy_data_plane.envoy.config.core.v3 import Node
from envoy_data_plane.envoy.config.endpoint.v3 import ClusterLoadAssignment
from envoy_data_plane.envoy.config.listener.v3 import Listener
from envoy_data_plane.envoy.config.route.v3 import RouteConfiguration
from envoy_data_plane.envoy.service.discovery.v3 import (
    DeltaDiscoveryRequest,
    DeltaDiscoveryResponse,
    DiscoveryRequest,
    DiscoveryResponse,
)
from envoy_data_plane.google.rpc import Status

from controller.policy.gateway import Gateway
from controller.xds import typeurls
from controller.xds.cache import SnapshotCache
from controller.xds.resources import build_snapshot
from controller.xds.server import DELTA_METHOD, SOTW_METHOD, start_server
from controller.xds.status import NodeStatus
from controller.xds.weights import WeightController

CDS = typeurls.CLUSTER
EDS = typeurls.ENDPOINT
LDS = typeurls.LISTENER
RDS = typeurls.ROUTE
SECRET = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"

LISTENERS = ("admin", "public")
"""Listener names; each listener's route configuration has the same name."""
CLUSTERS = ("comments-go", "comments-python", "static")

RESPONSE_TIMEOUT_S = 2.0
"""How long a test waits for a response it expects."""
SILENCE_S = 0.3
"""How long a test waits to be sure that no response comes."""

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
          domains: ["*"]
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
          domains: ["*"]
          routes:
            - name: health
              match: {prefix: /}
              cluster: static
  clusters:
    - name: comments-python
      endpoints: [{address: 127.0.0.1, port: 8001}]
    - name: comments-go
      protocol: http2
      endpoints: [{address: 127.0.0.1, port: 8002}]
    - name: static
      endpoints: [{address: 127.0.0.1, port: 8003}]
"""

PARSERS: dict[str, Callable[[bytes], Any]] = {
    CDS: Cluster.parse,
    EDS: ClusterLoadAssignment.parse,
    LDS: Listener.parse,
    RDS: RouteConfiguration.parse,
}


def make_gateway(extra_cluster: str | None = None) -> Gateway:
    """The test gateway: listeners ``public`` and ``admin``, three clusters.

    With ``extra_cluster``, the gateway also declares that cluster and a route ``extra`` to it
    (prefix ``/extra``) in front of ``comments`` on the ``public`` listener.
    """
    data = yaml.safe_load(GATEWAY_YAML)
    if extra_cluster is not None:
        data["spec"]["clusters"].append(
            {"name": extra_cluster, "endpoints": [{"address": "127.0.0.1", "port": 8004}]}
        )
        routes = data["spec"]["listeners"][0]["virtualHosts"][0]["routes"]
        routes.insert(0, {"name": "extra", "match": {"prefix": "/extra"}, "cluster": extra_cluster})
    return Gateway.model_validate(data)


# --- decoding --------------------------------------------------------------------------------


def resource_name(type_url: str, message: Any) -> str:
    """The xDS resource name of a decoded message."""
    return message.cluster_name if type_url == EDS else message.name


def decode_sotw(resp: DiscoveryResponse) -> dict[str, Any]:
    """The resources of a SotW response, decoded with envoy-data-plane, by resource name."""
    out: dict[str, Any] = {}
    for item in resp.resources:
        assert item.type_url == resp.type_url, "an Any in the response has another type"
        message = PARSERS[resp.type_url](item.value)
        out[resource_name(resp.type_url, message)] = message
    return out


def decode_delta(resp: DeltaDiscoveryResponse) -> dict[str, Any]:
    """The resources of a Delta response, decoded, by resource name (checks name == content)."""
    out: dict[str, Any] = {}
    for item in resp.resources:
        assert item.resource is not None, f"resource {item.name!r} carries no message"
        assert item.resource.type_url == resp.type_url
        assert item.version, f"resource {item.name!r} carries no version"
        message = PARSERS[resp.type_url](item.resource.value)
        assert resource_name(resp.type_url, message) == item.name
        out[item.name] = message
    return out


def route_weights(config: RouteConfiguration, route: str) -> dict[str, int]:
    """cluster → weight of a route in a decoded route configuration ({cluster: 1} if single)."""
    for vh in config.virtual_hosts:
        for r in vh.routes:
            if r.name == route:
                assert r.route is not None
                if r.route.weighted_clusters is not None:
                    return {c.name: c.weight for c in r.route.weighted_clusters.clusters}
                return {r.route.cluster: 1}
    raise AssertionError(f"route {route!r} not in route configuration {config.name!r}")


def node_status(cache: SnapshotCache, node_id: str) -> NodeStatus:
    """The cache's status record of one node."""
    by_id = {n.node_id: n for n in cache.nodes()}
    assert node_id in by_id, f"node {node_id!r} unknown to the cache (known: {sorted(by_id)})"
    return by_id[node_id]


async def eventually(check: Callable[[], bool], timeout_s: float = RESPONSE_TIMEOUT_S) -> None:
    """Poll ``check`` until it is true; fail after ``timeout_s``."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {timeout_s}s")
        await asyncio.sleep(0.01)


# --- client streams --------------------------------------------------------------------------

_END = object()
_barriers = itertools.count(1)


def _describe(item: Any) -> str:
    if isinstance(item, DiscoveryResponse):
        names = sorted(decode_sotw(item))
        return f"SotW {typeurls.short_name(item.type_url)} v{item.version_info} {names}"
    if isinstance(item, DeltaDiscoveryResponse):
        names = sorted(r.name for r in item.resources)
        return (
            f"Delta {typeurls.short_name(item.type_url)} v{item.system_version_info} {names}"
            f" removed={list(item.removed_resources)}"
        )
    return repr(item)


class ClientStream:
    """One real gRPC stream: writes requests, a reader task queues what the server sends."""

    def __init__(self, call: Any) -> None:
        self.call = call
        self.error: grpc.aio.AioRpcError | None = None
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            while True:
                item = await self.call.read()
                if item is grpc.aio.EOF:
                    return
                self._queue.put_nowait(item)
        except grpc.aio.AioRpcError as exc:
            self.error = exc
        finally:
            self._queue.put_nowait(_END)

    async def write(self, message: Any) -> None:
        """Write one request (already a message the call's serializer accepts)."""
        await self.call.write(message)

    async def recv(self, timeout_s: float = RESPONSE_TIMEOUT_S) -> Any:
        """The next response; fails if none arrives within ``timeout_s`` or the stream ended."""
        try:
            item = await asyncio.wait_for(self._queue.get(), timeout_s)
        except TimeoutError:
            raise AssertionError(f"no response within {timeout_s}s") from None
        if item is _END:
            self._queue.put_nowait(_END)
            raise AssertionError(f"the stream ended instead of responding: {self.error}")
        return item

    async def expect_silence(self, within_s: float = SILENCE_S) -> None:
        """Fail if a response arrives (or the stream ends) within ``within_s``."""
        try:
            item = await asyncio.wait_for(self._queue.get(), within_s)
        except TimeoutError:
            return
        if item is _END:
            self._queue.put_nowait(_END)
            raise AssertionError(f"the stream ended: {self.error}")
        raise AssertionError(f"unexpected response: {_describe(item)}")

    async def drain(self, within_s: float = SILENCE_S) -> list[Any]:
        """Every response that arrives until ``within_s`` passes without one."""
        out = []
        while True:
            try:
                item = await asyncio.wait_for(self._queue.get(), within_s)
            except TimeoutError:
                return out
            if item is _END:
                self._queue.put_nowait(_END)
                raise AssertionError(f"the stream ended: {self.error}")
            out.append(item)

    async def ended_with(self, timeout_s: float = RESPONSE_TIMEOUT_S) -> grpc.StatusCode:
        """Wait for the server to end the stream; its status code."""
        try:
            await asyncio.wait_for(asyncio.shield(self._reader), timeout_s)
        except TimeoutError:
            raise AssertionError(f"the stream did not end within {timeout_s}s") from None
        code: grpc.StatusCode = await self.call.code()
        return code

    async def close(self) -> None:
        """Cancel the call and stop the reader (idempotent)."""
        self.call.cancel()
        self._reader.cancel()
        await asyncio.gather(self._reader, return_exceptions=True)


class SotwClient(ClientStream):
    """A SotW ADS client: remembers its subscriptions per type, like Envoy does.

    The node goes on the first request only (as Envoy sends it).
    """

    def __init__(self, channel: grpc.aio.Channel, node_id: str, cache: SnapshotCache) -> None:
        call = channel.stream_stream(
            SOTW_METHOD,
            request_serializer=bytes,
            response_deserializer=DiscoveryResponse.parse,
        )()
        super().__init__(call)
        self.node_id = node_id
        self.cache = cache
        self.names: dict[str, list[str]] = {}
        self._node_sent = False

    async def send(
        self,
        type_url: str,
        names: Iterable[str] | None = None,
        *,
        version: str = "",
        nonce: str = "",
        error: Status | None = None,
    ) -> None:
        """Send a ``DiscoveryRequest``; ``names`` defaults to the type's last subscription."""
        if names is not None:
            self.names[type_url] = list(names)
        request = DiscoveryRequest(
            version_info=version,
            resource_names=list(self.names.get(type_url, [])),
            type_url=type_url,
            response_nonce=nonce,
            error_detail=error,
        )
        if not self._node_sent:
            request.node = Node(
                id=self.node_id,
                cluster="gateways",
                user_agent_name="envoy",
                user_agent_version="1.40.0",
            )
            self._node_sent = True
        await self.write(request)

    async def subscribe(self, type_url: str, names: Iterable[str] = (), version: str = "") -> None:
        """The first request of a type (``version``: what a reconnecting client holds)."""
        await self.send(type_url, names, version=version)

    async def ack(self, resp: DiscoveryResponse, names: Iterable[str] | None = None) -> None:
        """ACK ``resp`` (optionally changing the type's subscription)."""
        await self.send(resp.type_url, names, version=resp.version_info, nonce=resp.nonce)

    async def nack(self, resp: DiscoveryResponse, message: str, last_good: str = "") -> None:
        """NACK ``resp``: ``version_info`` is the last good version, as Envoy sends it."""
        error = Status(code=3, message=message)
        await self.send(resp.type_url, version=last_good, nonce=resp.nonce, error=error)

    async def barrier(self) -> None:
        """Wait until the server has handled every request sent so far.

        Sends a request for a type the server does not serve (handled in order, recorded in
        ``unsupported_types``, never answered) and waits until the cache records it.
        """
        marker = f"type.googleapis.com/sluice.test.Barrier{next(_barriers)}"
        await self.send(marker)
        await eventually(lambda: marker in node_status(self.cache, self.node_id).unsupported_types)


class DeltaClient(ClientStream):
    """A Delta ADS client; the node goes on the first request only."""

    def __init__(self, channel: grpc.aio.Channel, node_id: str, cache: SnapshotCache) -> None:
        call = channel.stream_stream(
            DELTA_METHOD,
            request_serializer=bytes,
            response_deserializer=DeltaDiscoveryResponse.parse,
        )()
        super().__init__(call)
        self.node_id = node_id
        self.cache = cache
        self._node_sent = False

    async def send(
        self,
        type_url: str,
        subscribe: Iterable[str] = (),
        unsubscribe: Iterable[str] = (),
        *,
        initial: dict[str, str] | None = None,
        nonce: str = "",
        error: Status | None = None,
    ) -> None:
        """Send a ``DeltaDiscoveryRequest``."""
        request = DeltaDiscoveryRequest(
            type_url=type_url,
            resource_names_subscribe=list(subscribe),
            resource_names_unsubscribe=list(unsubscribe),
            initial_resource_versions=dict(initial or {}),
            response_nonce=nonce,
            error_detail=error,
        )
        if not self._node_sent:
            request.node = Node(
                id=self.node_id,
                cluster="gateways",
                user_agent_name="envoy",
                user_agent_version="1.40.0",
            )
            self._node_sent = True
        await self.write(request)

    async def ack(self, resp: DeltaDiscoveryResponse) -> None:
        """ACK ``resp``."""
        await self.send(resp.type_url, nonce=resp.nonce)

    async def nack(self, resp: DeltaDiscoveryResponse, message: str) -> None:
        """NACK ``resp`` with ``error_detail``."""
        await self.send(resp.type_url, nonce=resp.nonce, error=Status(code=3, message=message))

    async def barrier(self) -> None:
        """Wait until the server has handled every request sent so far (see SotwClient)."""
        marker = f"type.googleapis.com/sluice.test.Barrier{next(_barriers)}"
        await self.send(marker)
        await eventually(lambda: marker in node_status(self.cache, self.node_id).unsupported_types)


class Ads:
    """What a test uses: opens client streams (closed at teardown) and reads the cache.

    Test modules cannot import this conftest (the test directories are not packages), so the
    helpers are reached through this fixture object.
    """

    LISTENERS = LISTENERS
    CLUSTERS = CLUSTERS
    SECRET = SECRET

    def __init__(self, channel: grpc.aio.Channel, port: int, cache: SnapshotCache) -> None:
        self.channel = channel
        self.port = port
        self.cache = cache
        self._streams: list[ClientStream] = []
        self._channels: list[grpc.aio.Channel] = []

    def sotw(self, node_id: str) -> SotwClient:
        """A new SotW stream for ``node_id``."""
        stream = SotwClient(self.channel, node_id, self.cache)
        self._streams.append(stream)
        return stream

    async def synced_sotw(self, node_id: str, types: tuple[str, ...] = (RDS,)) -> SotwClient:
        """A new SotW stream for ``node_id`` that subscribed to ``types`` (RDS: both route
        configurations; others: wildcard) and ACKed the first response of each."""
        client = self.sotw(node_id)
        for type_url in types:
            await client.subscribe(type_url, self.LISTENERS if type_url == RDS else [])
            await client.ack(await client.recv())
        await client.barrier()
        return client

    def delta(self, node_id: str) -> DeltaClient:
        """A new Delta stream for ``node_id``."""
        stream = DeltaClient(self.channel, node_id, self.cache)
        self._streams.append(stream)
        return stream

    def raw(self, method: str) -> ClientStream:
        """A stream that writes raw request bytes (identity serializer), on its own channel."""
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{self.port}")
        self._channels.append(channel)
        call = channel.stream_stream(
            method, request_serializer=None, response_deserializer=lambda b: b
        )()
        stream = ClientStream(call)
        self._streams.append(stream)
        return stream

    def node(self, node_id: str) -> NodeStatus:
        """The cache's status record of one node."""
        return node_status(self.cache, node_id)

    @staticmethod
    def decode(resp: DiscoveryResponse | DeltaDiscoveryResponse) -> dict[str, Any]:
        """The resources of a response decoded with envoy-data-plane, by resource name."""
        if isinstance(resp, DeltaDiscoveryResponse):
            return decode_delta(resp)
        return decode_sotw(resp)

    route_weights = staticmethod(route_weights)
    gateway = staticmethod(make_gateway)
    eventually = staticmethod(eventually)

    async def close(self) -> None:
        """Close every stream and extra channel."""
        for stream in self._streams:
            await stream.close()
        for channel in self._channels:
            await channel.close()


# --- fixtures --------------------------------------------------------------------------------


@pytest.fixture
def gateway() -> Gateway:
    """Two listeners (``public``, ``admin``), three clusters."""
    return make_gateway()


@pytest.fixture
def cache(gateway: Gateway) -> SnapshotCache:
    """A cache serving the gateway with its own weights."""
    return SnapshotCache(build_snapshot(gateway, {}, label="test"))


@pytest.fixture
def weights(gateway: Gateway, cache: SnapshotCache) -> WeightController:
    """The weight primitive over ``cache`` (it serves the same snapshot as the cache fixture)."""
    return WeightController(gateway, cache)


@pytest.fixture
async def server_port(cache: SnapshotCache) -> AsyncIterator[int]:
    """A running ADS server on 127.0.0.1 (port 0), stopped at teardown; yields its port."""
    server, port = await start_server(cache, "127.0.0.1:0")
    try:
        yield port
    finally:
        await server.stop(None)


@pytest.fixture
async def ads(server_port: int, cache: SnapshotCache) -> AsyncIterator[Ads]:
    """Opens client streams to the server; every stream and channel is closed at teardown."""
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{server_port}")
    opener = Ads(channel, server_port, cache)
    try:
        yield opener
    finally:
        await opener.close()
        await channel.close()
