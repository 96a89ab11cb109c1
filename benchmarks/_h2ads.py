"""Simulated Envoy ADS clients on the ``h2`` library: the same protocol for less client CPU.

Why a second client: the xDS benchmarks run their simulated Envoys on the cores the server
under test uses. A ``grpc.aio`` stream costs its client ~250-280 us of CPU per pushed response
(read, ACK write, two coroutine wake-ups), more than the server spends on it, so at N = 1,000
the clients took more of the 2 cores than the server did and the figures measured the clients
as much as the server. Real Envoys do this work in C++ on other hosts. This client speaks the
same protocol on the wire, HTTP/2 with gRPC's length-prefixed messages (gRPC over HTTP/2,
PROTOCOL-HTTP2.md in grpc/grpc), with ``h2`` doing the framing, HPACK and flow control on one
``asyncio.Protocol`` per TCP connection. Measured at N = 1,000 (``xds_fanout.py --sizes 1000``):
~150-175 us of client CPU per response, most of it the socket's send and epoll system calls;
``h2`` itself takes ~30 us.

Behaviour, as in :class:`_adsclients._ClientGroup` (both record into
:class:`_adsclients.ClientTally`): each stream is one simulated Envoy with its
own ``node.id``, sends its node on every request, subscribes to the configured types, ACKs every
response with its ``version_info`` and ``nonce``, and after a stream the server rejects or ends
(gRPC's pending-call backlog protection during a connection storm) re-opens it after Envoy's
jittered exponential backoff (500 ms base) with the versions it holds. Route-table (RDS)
responses record when they arrived and when their ACK was written to the socket (all ACKs
decoded from one read are written together, and all get that write's time; an ACK held back
by the server's flow-control window is not timed), on
``CLOCK_MONOTONIC``.

A lost TCP connection is not re-established: it fails its streams, and the benchmark reports
them as failed rather than measuring through a reconnection.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
from _adsclients import (
    ROUTE,
    SOTW_METHOD,
    ClientTally,
    encode_node,
    encode_request,
    parse_response,
)

WINDOW = 2**31 - 1
"""Our receive windows (stream and connection): the largest HTTP/2 allows (RFC 9113 6.9.1),
so a large snapshot never waits on a WINDOW_UPDATE of ours."""


def grpc_message(payload: bytes) -> bytes:
    """One gRPC length-prefixed message: uncompressed flag, 4-byte big-endian length, bytes."""
    return b"\x00" + len(payload).to_bytes(4, "big") + payload


class _Stream:
    """One simulated Envoy: its subscriptions, held versions and receive buffer."""

    __slots__ = ("attempt", "buffer", "held", "names_of", "node", "node_id", "subscriptions")

    def __init__(self, node_id: str, subscriptions: list[tuple[str, tuple[str, ...]]]) -> None:
        self.node_id = node_id
        self.node = encode_node(node_id)
        self.subscriptions = subscriptions
        self.names_of = dict(subscriptions)
        self.held: dict[str, str] = {}  # type URL -> last ACKed version
        self.buffer = bytearray()
        self.attempt = 0


class _Connection(asyncio.Protocol):
    """One TCP connection carrying many ADS streams, driven by ``h2``."""

    def __init__(self, group: H2ClientGroup, authority: str) -> None:
        self.group = group
        self.headers = [
            (b":method", b"POST"),
            (b":scheme", b"http"),
            (b":path", SOTW_METHOD.encode()),
            (b":authority", authority.encode()),
            (b"content-type", b"application/grpc"),
            (b"te", b"trailers"),
            (b"user-agent", b"sluice-bench-h2"),
        ]
        self.h2 = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding=None)
        )
        self.transport: asyncio.Transport | None = None
        self.streams: dict[int, _Stream] = {}
        self.blocked: list[tuple[int, bytes]] = []  # sends waiting on the server's window
        self.statuses: dict[int, str] = {}  # stream id -> its grpc-status, once received
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    # -- asyncio.Protocol ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.h2.local_settings = h2.settings.Settings(
            client=True,
            initial_values={
                h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: WINDOW,
                h2.settings.SettingCodes.ENABLE_PUSH: 0,
                h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: 64 * 1024,
            },
        )
        self.h2.initiate_connection()
        self.h2.increment_flow_control_window(WINDOW - 65_535)
        transport.write(self.h2.data_to_send())

    def data_received(self, data: bytes) -> None:
        try:
            events = self.h2.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            self._fail_all(f"HTTP/2 protocol error: {exc!r}")
            return
        acked: list[tuple[str, float]] = []
        for event in events:
            if isinstance(event, h2.events.DataReceived):
                self._on_data(event, acked)
            elif isinstance(event, h2.events.ResponseReceived | h2.events.TrailersReceived):
                self._on_headers(event)
            elif isinstance(event, h2.events.StreamEnded | h2.events.StreamReset):
                self._on_end(event)
            elif isinstance(event, h2.events.WindowUpdated) and self.blocked:
                self._flush_blocked()
            elif isinstance(event, h2.events.ConnectionTerminated):
                self._fail_all(f"GOAWAY {event.error_code!r}")
        self._write()
        if acked:
            written = time.monotonic()
            times = self.group.route_times
            for version, arrived in acked:
                times.setdefault(version, []).append((arrived, written))

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail_all(f"connection lost: {exc!r}" if exc else "connection closed")
        if not self.lost.done():
            self.lost.set_result(None)

    # -- streams ---------------------------------------------------------------------------

    def open(self, stream: _Stream) -> None:
        """Open an ADS stream and send one request per subscription (held versions included)."""
        stream_id = self.h2.get_next_available_stream_id()
        self.h2.send_headers(stream_id, self.headers)
        stream.buffer.clear()
        self.streams[stream_id] = stream
        for type_url, names in stream.subscriptions:
            self._send(
                stream_id,
                encode_request(stream.node, type_url, names, stream.held.get(type_url, "")),
            )
        self._write()

    def _on_data(self, event: h2.events.DataReceived, acked: list[tuple[str, float]]) -> None:
        stream_id = event.stream_id
        stream = self.streams.get(stream_id)
        # h2 sends a WINDOW_UPDATE once half a window is consumed; the windows are 2 GiB.
        self.h2.acknowledge_received_data(event.flow_controlled_length, stream_id)
        if stream is None:
            return
        buffer = stream.buffer
        buffer += event.data
        while len(buffer) >= 5:
            length = int.from_bytes(buffer[1:5], "big")
            if len(buffer) < 5 + length:
                break
            message = bytes(buffer[5 : 5 + length])
            del buffer[: 5 + length]
            arrived = time.monotonic()
            version, type_url, nonce = parse_response(message)
            sent = self._send(
                stream_id,
                encode_request(stream.node, type_url, stream.names_of[type_url], version, nonce),
            )
            if type_url == ROUTE and sent:
                acked.append((version, arrived))
            stream.held[type_url] = version
            stream.attempt = 0

    def _on_headers(self, event: h2.events.ResponseReceived | h2.events.TrailersReceived) -> None:
        # A gRPC status arrives in the trailers, or in the headers of a trailers-only reply.
        fields = dict(event.headers or ())
        if b"grpc-status" in fields:
            self.statuses[event.stream_id] = (
                f"grpc-status {fields[b'grpc-status'].decode()}:"
                f" {fields.get(b'grpc-message', b'').decode(errors='replace')}"
            )

    def _on_end(self, event: h2.events.StreamEnded | h2.events.StreamReset) -> None:
        status = self.statuses.pop(event.stream_id, None)
        stream = self.streams.pop(event.stream_id, None)
        if stream is None:
            return
        if isinstance(event, h2.events.StreamReset):
            reason = f"RST_STREAM {event.error_code!r}"
        else:
            reason = f"the server ended the stream ({status or 'no grpc-status'})"
            with contextlib.suppress(h2.exceptions.H2Error):
                self.h2.end_stream(event.stream_id)
        self.group.retry(self, stream, reason)

    def _send(self, stream_id: int, payload: bytes) -> bool:
        """Queue one request on the stream; True when it goes out with this read's write.

        False when it waits for the server's flow-control window (sent on a WINDOW_UPDATE,
        never timed: the run then misses that ACK time and says so) or when the server
        already closed the stream in this same read (its end is handled next, as a retry).
        """
        data = grpc_message(payload)
        try:
            if self.blocked or self.h2.local_flow_control_window(stream_id) < len(data):
                self.blocked.append((stream_id, data))
                return False
            self.h2.send_data(stream_id, data)
        except h2.exceptions.StreamClosedError:
            return False
        return True

    def _flush_blocked(self) -> None:
        pending, self.blocked = self.blocked, []
        for index, (stream_id, data) in enumerate(pending):
            if stream_id not in self.streams:
                continue
            try:
                if self.h2.local_flow_control_window(stream_id) < len(data):
                    self.blocked = pending[index:]
                    return
                self.h2.send_data(stream_id, data)
            except h2.exceptions.StreamClosedError:
                continue

    def _write(self) -> None:
        data = self.h2.data_to_send()
        if data and self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def _fail_all(self, reason: str) -> None:
        streams, self.streams = self.streams, {}
        for stream in streams.values():
            self.group.fail(stream, reason)

    def close(self) -> None:
        self.streams.clear()
        if self.transport is not None:
            self.transport.abort()  # nothing buffered is worth waiting for at the end


@dataclass
class H2ClientGroup(ClientTally):
    """The simulated Envoys of one worker process connected to one server (``h2`` client)."""

    connections: list[_Connection] = field(default_factory=list)
    _timers: set[asyncio.TimerHandle] = field(default_factory=set)
    _closing: bool = False

    def retry(self, connection: _Connection, stream: _Stream, reason: str) -> None:
        """Re-open a stream the server ended, after Envoy's jittered exponential backoff."""
        if self._closing:
            return
        stream.attempt += 1
        delay = self.backoff_s(stream.node_id, stream.attempt, reason)
        if delay is None:
            return

        def reopen() -> None:
            self._timers.discard(timer)
            if self._closing:
                return
            if connection.lost.done():
                self.fail(stream, "its connection was lost before the retry")
                return
            try:
                connection.open(stream)
            except h2.exceptions.H2Error as exc:
                self.fail(stream, f"re-opening the stream: {exc!r}")

        timer = asyncio.get_running_loop().call_later(delay, reopen)
        self._timers.add(timer)

    def fail(self, stream: _Stream, reason: str) -> None:
        if not self._closing:
            self.failed.append(f"{stream.node_id}: {reason}")

    async def connect(
        self,
        target: str,
        node_ids: list[str],
        subscriptions: list[tuple[str, tuple[str, ...]]],
        streams_per_channel: int,
    ) -> int:
        host, _, port = target.rpartition(":")
        loop = asyncio.get_running_loop()
        for start in range(0, len(node_ids), streams_per_channel):
            _, connection = await loop.create_connection(
                lambda: _Connection(self, target), host, int(port)
            )
            self.connections.append(connection)
            for node_id in node_ids[start : start + streams_per_channel]:
                connection.open(_Stream(node_id, subscriptions))
        return len(node_ids)

    async def status(self) -> dict[str, Any]:
        return self.figures(sum(len(c.streams) for c in self.connections))

    async def close(self) -> None:
        self._closing = True
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
        for connection in self.connections:
            connection.close()
        if self.connections:
            await asyncio.wait([c.lost for c in self.connections], timeout=3)
        self.connections.clear()
