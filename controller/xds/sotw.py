"""State-of-the-world ADS: one ``StreamAggregatedResources`` stream.

Protocol source: xDS REST and gRPC protocol, sections "ACK/NACK and resource type instance
version", "When to send an update", "Resource hints" and "Aggregated Discovery Service"
(envoyproxy.io/docs/envoy/latest/api-docs/xds_protocol).

Per type URL the stream remembers the last response (version, nonce, names). A request whose
``response_nonce`` is not the last one sent for its type is stale and ignored. A request with
the current nonce ACKs (no ``error_detail``) or NACKs the response; after a NACK the rejected
version is not sent again: only a newer snapshot version is. A first request carrying the
current ``version_info`` (Envoy reconnecting) is taken as already up to date.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field

import grpc

from controller.xds import typeurls, wire
from controller.xds.cache import SnapshotCache
from controller.xds.snapshot import Resource, TypeSnapshot
from controller.xds.stream import (
    CLUSTER_TYPES,
    SERVED_TYPES,
    StreamBase,
    StreamError,
    admit,
    clusters_ready,
    removals_held_back,
    route_clusters,
    run_stream,
)


@dataclass
class _TypeState:
    names: frozenset[str] | None = None  # None: wildcard (all resources of the type)
    needs_response: bool = False
    sent_version: str | None = None
    sent_generation: int = 0  # the cache generation the last response was built at
    sent_nonce: str | None = None
    sent_resources: Mapping[str, Resource] = field(default_factory=dict)
    acked_version: str | None = None
    acked_resources: Mapping[str, Resource] = field(default_factory=dict)
    holding_removals: bool = False  # the last response kept clusters routes still name
    rejected: bool = False  # the last answered response was NACKed
    last_nack: tuple[int, str] | None = None  # its error_detail (code, message)


@dataclass
class SotwStream(StreamBase):
    """One SotW ADS stream: the reader applies requests, :meth:`pending_responses` writes."""

    types: dict[str, _TypeState] = field(default_factory=dict)

    def handle(self, raw: bytes) -> None:
        """Apply one request.

        Raises:
            StreamError: malformed request, missing node on the first request, empty type URL.
        """
        node = self.node
        try:
            # A plain tuple, not a SotwRequest: this runs once per ACK from every Envoy.
            version_info, req_node, resource_names, type_url, response_nonce, error_detail = (
                wire.sotw_request_fields(raw, with_node=node is None)
            )
        except wire.WireError as exc:
            raise StreamError(
                grpc.StatusCode.INVALID_ARGUMENT, f"malformed DiscoveryRequest: {exc}"
            ) from exc
        if node is None or not type_url:
            node = self.node = admit(
                self.cache, node, req_node, type_url, "sotw", self.wakeup, self.stream_id
            )
        node_id = node.node_id
        if type_url not in SERVED_TYPES:
            # Like a resource that does not exist: no response; Envoy's initial_fetch_timeout
            # applies. Recorded so that `sluice xds status` shows what the node asked for.
            self.cache.record_unsupported(node_id, type_url)
            return
        state = self.types.get(type_url)
        names = (
            None
            if type_url in typeurls.WILDCARD_TYPES and (not resource_names or "*" in resource_names)
            else frozenset(resource_names)
        )
        if state is None or (not response_nonce and state.sent_nonce is None):
            if state is None:
                self.cache.record_subscribed(node_id, self.stream_id, type_url)
            state = self.types.setdefault(type_url, _TypeState())
            state.names = names
            current = self.cache.snapshot.get(type_url)
            if names is None and current is not None and version_info == current.version:
                # Reconnecting with the current version of a wildcard type: that version is the
                # whole type, so the client holds exactly it. (For named types the version says
                # nothing about which names the client holds: those are always answered, and
                # Envoy ignores resources it already has.)
                state.sent_version = state.acked_version = current.version
                state.sent_resources = current.view(names).resources
                state.acked_resources = state.sent_resources
                state.sent_generation = self.cache.generation
                self.cache.record_ack(
                    node_id, self.stream_id, type_url, current.version, self.cache.generation
                )
            else:
                state.needs_response = True
            self.wakeup.set()
            return
        if response_nonce != state.sent_nonce:
            return  # stale: answers a response that a newer one replaced
        assert state.sent_version is not None
        if error_detail is not None:
            state.rejected = True
            state.last_nack = (error_detail.code, error_detail.message)
            self.cache.record_nack(
                node_id,
                self.stream_id,
                type_url,
                state.sent_version,
                state.sent_generation,
                error_detail.code,
                error_detail.message,
            )
        elif version_info == state.sent_version:
            # An ACK carries the version it accepts. A request answering the last nonce with
            # another version_info and no error_detail (Envoy changing its subscription after a
            # NACK) accepts nothing.
            state.acked_version = state.sent_version
            state.acked_resources = state.sent_resources
            state.rejected = False
            self.cache.record_ack(
                node_id, self.stream_id, type_url, state.sent_version, state.sent_generation
            )
        if names != state.names:
            state.names = names
            state.needs_response = True
        if state.needs_response or self.holding:
            # A plain ACK creates no work unless something waited for it: skipping the wakeup
            # halves the writer's passes during a push to many streams.
            self.wakeup.set()

    def _still_rejected(self, state: _TypeState, type_url: str, version: str) -> None:
        assert self.node is not None
        assert state.last_nack is not None
        state.sent_version = version  # as if sent and refused again: not sent again later
        code, message = state.last_nack
        self.cache.record_nack(
            self.node.node_id,
            self.stream_id,
            type_url,
            version,
            self.cache.generation,
            code,
            message if message.startswith("still rejected") else f"still rejected: {message}",
        )

    def _acked(self, type_url: str) -> Mapping[str, Resource] | None:
        state = self.types.get(type_url)
        return None if state is None else state.acked_resources

    def _route_clusters(self) -> set[str]:
        """Clusters named by the route tables this client holds or has been sent."""
        state = self.types.get(typeurls.ROUTE)
        if state is None:
            return set()
        held = [*state.acked_resources.values(), *state.sent_resources.values()]
        return route_clusters(held)

    def pending_responses(self) -> list[bytes]:
        """Responses due now, in make-before-break order (CDS, EDS, LDS, RDS)."""
        node = self.node
        if node is None:
            return []
        out: list[bytes] = []
        cache = self.cache
        snapshot = cache.snapshot
        generation = cache.generation
        types = self.types
        self.holding = False
        for type_url in typeurls.PUSH_ORDER:
            state = types.get(type_url)
            if state is None:
                continue
            current = snapshot.get(type_url)
            if current is None:
                continue
            served, names = current, state.names
            if type_url in CLUSTER_TYPES and (
                current.version != state.sent_version or state.holding_removals
            ):
                kept = removals_held_back(current, state.sent_resources, self._route_clusters())
                state.holding_removals = bool(kept)
                self.holding |= bool(kept)
                if kept:
                    # Break after make: keep the clusters that the client's routes still name
                    # until a route table without them is ACKed (then this set is empty).
                    in_scope = [r for r in kept if names is None or r.name in names]
                    served = TypeSnapshot.build(type_url, [*current.select(names), *in_scope])
                    names = None
            if not state.needs_response and (
                served.version == state.sent_version
                or (state.rejected and served.version == state.acked_version)
            ):
                # Not resent: neither after an ACK nor after a NACK (the rejected version is not
                # sent again, and the client kept the one it ACKed). A version the client ACKed
                # before is sent again when something newer went out since and is still in
                # flight (a rollback while the step is not answered yet).
                continue
            view = served.view(names)
            if state.rejected and _same_content(view.resources, state.sent_resources):
                # A new type version that changes nothing this client gets: sending it would
                # send the refused resources again. Whoever waits for it learns now.
                self._still_rejected(state, type_url, served.version)
                continue
            if type_url == typeurls.ROUTE and not clusters_ready(
                view.clusters, self._acked(typeurls.CLUSTER), self._acked(typeurls.ENDPOINT)
            ):
                self.holding = True  # woken again when the clusters are ACKed
                continue
            nonce = self.new_nonce()
            out.append(view.body + wire.nonce_field(nonce))
            state.needs_response = False
            state.sent_version = served.version
            state.sent_generation = generation
            state.rejected = False  # what the client answers next is about this response
            state.sent_nonce = nonce
            state.sent_resources = view.resources
            cache.record_sent(node.node_id, self.stream_id, type_url, served.version, generation)
        return out


async def serve_sotw(
    cache: SnapshotCache, requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext
) -> None:
    """The ``StreamAggregatedResources`` handler body (raw bytes in and out)."""
    stream = SotwStream(cache)
    await run_stream(stream, requests, context)


def _same_content(a: Mapping[str, Resource], b: Mapping[str, Resource]) -> bool:
    """The same resource names at the same versions."""
    return a.keys() == b.keys() and all(b[n].version == r.version for n, r in a.items())
