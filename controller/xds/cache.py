"""The snapshot cache: the current snapshot, the open streams to wake, node status and ACK
waiters. Single-threaded: every method runs on the server's asyncio event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Collection

from controller.xds.acks import AckResult, AckWaiter
from controller.xds.snapshot import Snapshot
from controller.xds.status import Nack, NodeStatus, Protocol
from controller.xds.typeurls import short_name
from controller.xds.wire import NodeInfo

log = logging.getLogger(__name__)


class SnapshotCache:
    """Holds the served snapshot and what each node did with it.

    Args:
        snapshot: the first snapshot to serve (a controller never serves "nothing yet": it
            starts from the gateway and the persisted weights).
        clock: wall-clock seconds (``time.time``), for status timestamps.
        monotonic: monotonic seconds, for timeouts and elapsed times.
        on_nack: called with the type URL of every NACK received (the controller's
            ``sluice_xds_nacks_total``); it must not raise or block.
    """

    def __init__(
        self,
        snapshot: Snapshot,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        on_nack: Callable[[str], None] | None = None,
    ) -> None:
        self._snapshot = snapshot
        self.on_nack = on_nack
        self._clock = clock
        self._monotonic = monotonic
        self._wakeups: set[asyncio.Event] = set()
        self._closing: dict[asyncio.Event, str] = {}  # streams told to end, and why
        self._nodes: dict[str, NodeStatus] = {}
        self._waiters: set[AckWaiter] = set()
        self._generation = 0

    @property
    def snapshot(self) -> Snapshot:
        """The snapshot being served now."""
        return self._snapshot

    @property
    def generation(self) -> int:
        """How many snapshots were set since start (the first is generation 0)."""
        return self._generation

    def set_snapshot(self, snapshot: Snapshot) -> None:
        """Serve ``snapshot`` from now on and wake every stream to push what changed."""
        self._snapshot = snapshot
        self._generation += 1
        for event in self._wakeups:
            event.set()

    # --- streams -------------------------------------------------------------------------

    def open_stream(
        self, node: NodeInfo, protocol: Protocol, wakeup: asyncio.Event, stream_id: int
    ) -> NodeStatus:
        """Register a stream of ``node``; ``wakeup`` is set whenever the snapshot changes."""
        self._wakeups.add(wakeup)
        status = self._nodes.get(node.id)
        if status is None or status.streams == 0:
            # A fresh record, even for a known node id: the connection may come from a new
            # Envoy process (a restarted pod) that holds nothing yet. A reconnecting process
            # says what it holds (SotW version_info, Delta initial_resource_versions).
            status = NodeStatus(
                node_id=node.id,
                cluster=node.cluster,
                user_agent=f"{node.user_agent_name}/{node.user_agent_version}".strip("/"),
                protocol=protocol,
                connected_at=self._clock(),
            )
            self._nodes[node.id] = status
        status.stream_ids.add(stream_id)
        return status

    def close_stream(self, node_id: str, stream_id: int, wakeup: asyncio.Event) -> None:
        """Unregister a stream and tell the waiters."""
        self._wakeups.discard(wakeup)
        self._closing.pop(wakeup, None)
        status = self._nodes.get(node_id)
        if status is None:
            return
        types = status.forget_stream(stream_id)
        for type_url in types:
            status.refresh_acked(type_url, self._clock())
        for waiter in list(self._waiters):
            waiter.on_close(node_id, stream_id)

    def close_streams(self, reason: str) -> int:
        """End every stream open now: each ends with gRPC ``UNAVAILABLE`` and ``reason`` as
        soon as its writer wakes (woken here), so that its Envoy reconnects, through a
        Service, to another replica. Streams opened afterwards are served as usual (a replica
        that fences itself keeps accepting: an Envoy that only reaches it is better served the
        last weights than nothing). Returns how many streams were told to end.
        """
        for wakeup in self._wakeups:
            self._closing[wakeup] = reason
            wakeup.set()
        return len(self._wakeups)

    def closing(self, wakeup: asyncio.Event) -> str | None:
        """Why the stream of ``wakeup`` must end (:meth:`close_streams`), or None."""
        return self._closing.get(wakeup) if self._closing else None

    def record_subscribed(self, node_id: str, stream_id: int, type_url: str) -> None:
        """A stream subscribed to ``type_url``: the node now counts as a target for it."""
        node = self._nodes[node_id]
        node.type_status(type_url)
        node.subscribe(stream_id, type_url)
        for waiter in list(self._waiters):
            waiter.on_subscribe(node_id, stream_id, type_url)

    def record_sent(
        self, node_id: str, stream_id: int, type_url: str, version: str, generation: int
    ) -> None:
        """A response with ``version``, built at snapshot ``generation``, went to a stream."""
        node = self._nodes[node_id]
        node.type_status(type_url).sent_version = version
        sent = node.stream_sent.get(stream_id)
        if sent is None:
            sent = node.stream_sent[stream_id] = {}
        sent[type_url] = (version, generation)

    def record_ack(
        self, node_id: str, stream_id: int, type_url: str, version: str, generation: int
    ) -> None:
        """A stream ACKed ``version`` of ``type_url``, sent at snapshot ``generation`` (or
        reconnected already holding it). The node's status shows the version once every open
        stream of the node holds it."""
        node = self._nodes[node_id]
        acks = node.stream_acks.get(stream_id)
        if acks is None:
            acks = node.stream_acks[stream_id] = {}
        acks[type_url] = (version, generation)
        nacks = node.stream_nacks.get(stream_id)
        if nacks:
            nacks.pop(type_url, None)
        node.refresh_acked(type_url, self._clock())
        if self._waiters:
            for waiter in list(self._waiters):
                waiter.on_ack(node_id, stream_id, type_url, version, generation)

    def record_nack(
        self,
        node_id: str,
        stream_id: int,
        type_url: str,
        version: str,
        generation: int,
        code: int,
        message: str,
    ) -> None:
        """A stream rejected ``version`` of ``type_url`` (sent at ``generation``) with
        ``error_detail`` (``code``, ``message``)."""
        node = self._nodes[node_id]
        node.stream_nacks.setdefault(stream_id, {})[type_url] = (version, generation, message)
        status = node.type_status(type_url)
        status.last_nack = Nack(version=version, message=message, code=code, at=self._clock())
        log.warning(
            "node %s NACKed %s version %s: %s", node_id, short_name(type_url), version, message
        )
        if self.on_nack is not None:
            self.on_nack(type_url)
        for waiter in list(self._waiters):
            waiter.on_nack(node_id, stream_id, type_url, version, generation, message)

    def record_unsupported(self, node_id: str, type_url: str) -> None:
        """The node asked for a type URL this controller does not serve."""
        self._nodes[node_id].unsupported_types.add(type_url)

    # --- status and waiting --------------------------------------------------------------

    def nodes(self) -> list[NodeStatus]:
        """Every node seen since start, connected or not, by node id."""
        return [self._nodes[k] for k in sorted(self._nodes)]

    def connected_nodes(self, type_url: str | None = None) -> set[str]:
        """Ids of nodes with an open stream (that subscribed to ``type_url`` if given)."""
        if type_url is None:
            return {n.node_id for n in self._nodes.values() if n.stream_ids}
        return {n.node_id for n in self._nodes.values() if n.type_streams.get(type_url)}

    def holding(self, type_url: str) -> tuple[int, bool]:
        """``(nodes, held)``: how many nodes have an open stream subscribed to ``type_url``,
        and whether every such stream ACKed the current snapshot's version of it (what a
        replica reports to the leader: its Envoys hold what it serves)."""
        version = self.snapshot.version(type_url)
        nodes = 0
        held = True
        for node in self._nodes.values():
            streams = node.type_streams.get(type_url)
            if not streams:
                continue
            nodes += 1
            for stream_id in streams:
                acked = node.stream_acks.get(stream_id, {}).get(type_url)
                if acked is None or acked[0] != version:
                    held = False
        return nodes, held

    def watch(
        self,
        type_url: str,
        version: str,
        nodes: Collection[str] | None = None,
        generation: int | None = None,
    ) -> AckWaiter:
        """Start following who takes ``version`` of ``type_url``; see :meth:`wait_for_version`.

        Synchronous on purpose: called right after :meth:`set_snapshot`, before the event loop
        runs any stream, it cannot miss an ACK.
        """
        no_streams: frozenset[int] = frozenset()
        if nodes is None:  # one pass over the nodes, through the per-type index
            known = {
                node_id: (node, streams)
                for node_id, node in self._nodes.items()
                if (streams := node.type_streams.get(type_url))
            }
            targets: dict[str, Collection[int]] = {n: s for n, (_, s) in known.items()}
        else:
            known = {}
            targets = {}
            for node_id in set(nodes):
                node = self._nodes.get(node_id)
                streams = node.type_streams.get(type_url) if node is not None else None
                targets[node_id] = streams or no_streams
                if node is not None and streams:
                    known[node_id] = (node, streams)
        waiter = AckWaiter(type_url, version, generation, targets)  # copies the stream sets
        waiter.started = self._monotonic()
        for node_id, (node, streams) in known.items():
            for stream_id in streams:
                # What a stream answered counts only if nothing newer is in flight to it: a
                # rollback to a version the stream ACKed earlier is not held by it while a
                # newer response has not been answered.
                acks = node.stream_acks.get(stream_id)
                nacks = node.stream_nacks.get(stream_id)
                acked = acks.get(type_url) if acks is not None else None
                nacked = nacks.get(type_url) if nacks is not None else None
                if acked is None and nacked is None:
                    continue
                sent_to = node.stream_sent.get(stream_id)
                sent = sent_to.get(type_url) if sent_to is not None else None
                if sent is not None:
                    answered = max(
                        acked[1] if acked is not None else -1,
                        nacked[1] if nacked is not None else -1,
                    )
                    if sent[1] > answered:
                        continue  # in flight
                if acked is not None:
                    waiter.on_ack(node_id, stream_id, type_url, *acked)
                if nacked is not None:
                    waiter.on_nack(node_id, stream_id, type_url, *nacked)
        self._waiters.add(waiter)
        return waiter

    async def wait(self, waiter: AckWaiter, timeout_s: float) -> AckResult:
        """Wait until ``waiter`` is resolved (every target ACKed, or one NACKed), or
        ``timeout_s`` seconds; then stop following and return the outcome."""
        deadline = self._monotonic() + timeout_s
        try:
            while not waiter.resolved:
                remaining = deadline - self._monotonic()
                if remaining <= 0:
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(waiter.done.wait(), timeout=remaining)
        finally:
            self._waiters.discard(waiter)
        return waiter.result(self._monotonic() - waiter.started, self.connected_nodes())

    async def wait_for_version(
        self,
        type_url: str,
        version: str,
        nodes: Collection[str] | None = None,
        timeout_s: float = 10.0,
        generation: int | None = None,
    ) -> AckResult:
        """Wait until every stream of every target node ACKed (or one NACKed) ``version``.

        Args:
            type_url: the type to watch (for weights: the RouteConfiguration type URL).
            version: the version that must be ACKed.
            nodes: target node ids; None means every node connected now that subscribed to
                the type. A named node that is not connected stays pending until it connects
                and ACKs, or the timeout.
            timeout_s: seconds to wait at most.
            generation: the :attr:`generation` of the push; when given, an ACK of a response
                built at that generation or later counts although its version differs (a
                quicker second change superseded this one on the wire).

        Returns:
            An :class:`AckResult`; only ``outcome == "acked"`` is success.
        """
        return await self.wait(self.watch(type_url, version, nodes, generation), timeout_s)
