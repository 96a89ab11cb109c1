"""What ADS streams share: errors that end a stream, the make-before-break gate, nonces."""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import AsyncIterator, Container, Iterable, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import Protocol

import grpc

from controller.xds import typeurls
from controller.xds.cache import SnapshotCache
from controller.xds.snapshot import Resource, TypeSnapshot
from controller.xds.status import NodeStatus
from controller.xds.status import Protocol as Flavour
from controller.xds.wire import NodeInfo

log = logging.getLogger(__name__)

_stream_ids = itertools.count(1)


def next_stream_id() -> int:
    """A process-unique stream number (nonces are ``"<stream>-<n>"``)."""
    return next(_stream_ids)


@dataclass(frozen=True)
class StreamError(Exception):
    """A request that ends its stream with a gRPC status (the other streams go on)."""

    code: grpc.StatusCode
    details: str


def admit(
    cache: SnapshotCache,
    node: NodeStatus | None,
    request_node: NodeInfo | None,
    type_url: str,
    flavour: Flavour,
    wakeup: asyncio.Event,
    stream_id: int,
) -> NodeStatus:
    """The checks every ADS request passes; registers the stream on its first request.

    Returns:
        The stream's node status (``node`` itself after the first request).

    Raises:
        StreamError: ``INVALID_ARGUMENT`` when the first request has no ``node.id`` or a request
            has no ``type_url`` (ADS multiplexes types: it cannot be inferred).
    """
    if node is None and (request_node is None or not request_node.id):
        raise StreamError(
            grpc.StatusCode.INVALID_ARGUMENT, "the first request on a stream must carry node.id"
        )
    # Checked before the stream is registered: a stream refused on its first request must
    # leave nothing behind (its close cannot unregister a node it never learnt).
    if not type_url:
        raise StreamError(grpc.StatusCode.INVALID_ARGUMENT, "type_url is required on an ADS stream")
    if node is None:
        assert request_node is not None
        node = cache.open_stream(request_node, flavour, wakeup, stream_id)
    return node


@dataclass
class StreamBase:
    """What SotW and Delta streams share: identity, the node, the writer's wakeup, nonces."""

    cache: SnapshotCache
    stream_id: int = field(default_factory=next_stream_id)
    node: NodeStatus | None = None
    wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    holding: bool = False  # something waits for an ACK (a route table, a cluster removal)
    _nonce: int = 0

    def new_nonce(self) -> str:
        """``"<stream>-<n>"``: unique per stream and type-independent (xDS allows either)."""
        self._nonce += 1
        return f"{self.stream_id}-{self._nonce}"

    def closing(self) -> str | None:
        """Why the server ends this stream now (:meth:`SnapshotCache.close_streams`), or None."""
        return self.cache.closing(self.wakeup)

    def close(self) -> None:
        """Unregister from the cache (idempotent)."""
        if self.node is not None:
            self.cache.close_stream(self.node.node_id, self.stream_id, self.wakeup)
            self.node = None


SERVED_TYPES = frozenset(typeurls.PUSH_ORDER)
CLUSTER_TYPES = frozenset({typeurls.CLUSTER, typeurls.ENDPOINT})
"""Types whose removals wait until no route table held by the client names them."""


def route_clusters(routes: Iterable[Resource]) -> set[str]:
    """Every cluster named by the given route tables."""
    needed: set[str] = set()
    for res in routes:
        needed |= res.clusters
    return needed


def removals_held_back(
    current: TypeSnapshot, sent: Mapping[str, Resource], needed: set[str]
) -> list[Resource]:
    """Resources gone from ``current`` that the client must keep for now.

    Break after make (xDS protocol, "Eventual consistency considerations"): a cluster, or its
    endpoints, leaves a stream only after the stream ACKed route tables that no longer name it.
    Returns the last-sent copies of the clusters (or load assignments) that ``needed`` names but
    ``current`` no longer has.
    """
    return [sent[n] for n in sorted(needed) if n not in current.resources and n in sent]


def clusters_ready(
    needed: AbstractSet[str],
    cds_acked: Container[str] | None,
    eds_acked: Container[str] | None,
) -> bool:
    """Make-before-break gate for route tables.

    A route table may go to a stream only when every cluster it names (``needed``) has been
    ACKed by that
    stream in CDS and, if the stream subscribes to EDS, in EDS too (a new EDS cluster is warming
    until its endpoints arrive). Otherwise Envoy would route to a cluster it does not have: a
    503 for users. ``None`` means the stream does not subscribe to that type (nothing to wait
    for, e.g. a client that only reads routes).
    """
    if cds_acked is not None and not all(map(cds_acked.__contains__, needed)):
        return False
    return eds_acked is None or all(map(eds_acked.__contains__, needed))


class AdsStream(Protocol):
    """What :func:`run_stream` needs of a SotW or Delta stream."""

    wakeup: asyncio.Event

    def handle(self, raw: bytes) -> None: ...

    def pending_responses(self) -> list[bytes]: ...

    def closing(self) -> str | None: ...

    def close(self) -> None: ...


async def run_stream(
    stream: AdsStream, requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext
) -> None:
    """Drive one ADS stream: a reader task applies requests; this coroutine writes responses.

    Responses are written whenever the stream's ``wakeup`` is set (a request arrived, or the
    snapshot changed). Ends when the client half-closes or cancels; a :class:`StreamError`
    raised by ``handle`` ends this stream alone with its gRPC status; the cache's
    :meth:`~SnapshotCache.close_streams` ends it with ``UNAVAILABLE`` and the reason given.
    """
    failure: list[StreamError] = []
    finished = asyncio.Event()

    async def read() -> None:
        try:
            async for raw in requests:
                stream.handle(raw)
        except StreamError as exc:
            failure.append(exc)
        except Exception as exc:  # a bug must end this stream loudly, not silently with OK
            log.exception("ADS stream %s failed", getattr(stream, "stream_id", "?"))
            failure.append(StreamError(grpc.StatusCode.INTERNAL, f"internal error: {exc}"))
        finally:
            finished.set()
            stream.wakeup.set()

    reader = asyncio.create_task(read())
    try:
        while True:
            await stream.wakeup.wait()
            stream.wakeup.clear()
            if failure:
                await context.abort(failure[0].code, failure[0].details)
            if (reason := stream.closing()) is not None:
                # Before the abort: a read pending then would fail and be logged as a bug.
                reader.cancel()
                await context.abort(grpc.StatusCode.UNAVAILABLE, reason)
            for response in stream.pending_responses():
                await context.write(response)
            if finished.is_set():
                if failure:  # the reader failed while a write was in flight
                    await context.abort(failure[0].code, failure[0].details)
                return
    finally:
        reader.cancel()
        stream.close()
