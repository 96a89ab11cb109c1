"""Incremental (Delta) ADS: one ``DeltaAggregatedResources`` stream.

Protocol source: xDS REST and gRPC protocol, "Incremental xDS" and "Resource warming"
(envoyproxy.io/docs/envoy/latest/api-docs/xds_protocol#incremental-xds).

Per type URL the stream tracks the subscription (wildcard and/or names) and, per resource, the
version the client holds (seeded by ``initial_resource_versions`` on reconnect). A response
carries only resources whose version differs from the client's, and ``removed_resources`` for
names the client holds that no longer exist. Subscription changes are applied from every
request; ACK/NACK only from a request answering an outstanding nonce. After a NACK the client
keeps its old resources and the rejected versions are not re-sent: only newer versions are.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import grpc

from controller.xds import typeurls, wire
from controller.xds.cache import SnapshotCache
from controller.xds.snapshot import Resource
from controller.xds.stream import (
    CLUSTER_TYPES,
    SERVED_TYPES,
    StreamBase,
    StreamError,
    admit,
    clusters_ready,
    route_clusters,
    run_stream,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Sent:
    version: str
    resources: tuple[Resource, ...]
    removed: frozenset[str]


@dataclass
class _TypeState:
    wildcard: bool = False
    names: set[str] = field(default_factory=set)
    client_versions: dict[str, str] = field(default_factory=dict)
    told_missing: set[str] = field(default_factory=set)
    needs_response: bool = False
    outstanding: dict[str, _Sent] = field(default_factory=dict)  # nonce → what it carried
    held: dict[str, Resource] = field(default_factory=dict)  # ACKed, by name
    acked_names: set[str] = field(default_factory=set)
    synced_version: str | None = None  # type version the client holds for its whole scope
    nacked: bool = False  # the last answered response was rejected

    def in_scope(self, name: str) -> bool:
        return self.wildcard or name in self.names


@dataclass
class DeltaStream(StreamBase):
    """One Delta ADS stream: the reader applies requests, :meth:`pending_responses` writes."""

    types: dict[str, _TypeState] = field(default_factory=dict)

    def handle(self, raw: bytes) -> None:
        """Apply one request.

        Raises:
            StreamError: malformed request, missing node on the first request, empty type URL.
        """
        try:
            req = wire.parse_delta_request(raw, with_node=self.node is None)
        except wire.WireError as exc:
            raise StreamError(
                grpc.StatusCode.INVALID_ARGUMENT, f"malformed DeltaDiscoveryRequest: {exc}"
            ) from exc
        self.node = admit(self.cache, self.node, req.node, req.type_url, "delta", self.wakeup)
        node_id = self.node.node_id
        if req.type_url not in SERVED_TYPES:
            self.cache.record_unsupported(node_id, req.type_url)
            return
        state = self.types.get(req.type_url)
        initial = state is None
        if state is None:
            state = self.types[req.type_url] = _TypeState()
            self.cache.record_subscribed(node_id, req.type_url)
            # An initial request with no names subscribes wildcard types to everything.
            state.wildcard = (
                req.type_url in typeurls.WILDCARD_TYPES and not req.resource_names_subscribe
            )
            state.client_versions = dict(req.initial_resource_versions)
            state.acked_names = set(req.initial_resource_versions)
            state.needs_response = not req.initial_resource_versions
        for name in req.resource_names_subscribe:
            if name == "*":
                state.wildcard = True
            else:
                state.names.add(name)
        for name in req.resource_names_unsubscribe:
            if name == "*":
                state.wildcard = False
            else:
                state.names.discard(name)
                state.client_versions.pop(name, None)
                state.told_missing.discard(name)
                state.acked_names.discard(name)
        if initial:
            self._record_initial_state(state, req.type_url)
        if req.response_nonce:
            self._answer(state, req.type_url, req.response_nonce, req.error_detail)
        if (
            initial
            or req.resource_names_subscribe
            or req.resource_names_unsubscribe
            or self.holding
            or state.needs_response
            or state.synced_version != self.cache.snapshot.version(req.type_url)
        ):
            # A plain ACK of the current version creates no work: no wakeup for it.
            self.wakeup.set()

    def _record_initial_state(self, state: _TypeState, type_url: str) -> None:
        """On reconnect, learn what the client holds; if that is every resource of its
        subscription at the current version, it is up to date (counted as an ACK)."""
        assert self.node is not None
        current = self.cache.snapshot.get(type_url)
        if current is None or not state.client_versions:
            return
        state.held = {
            n: r for n, r in current.resources.items() if state.client_versions.get(n) == r.version
        }
        in_scope = {n for n in current.resources if state.in_scope(n)}
        extra = {n for n in state.client_versions if n not in current.resources}
        if in_scope <= set(state.held) and not (extra and state.wildcard):
            state.synced_version = current.version
            self.cache.record_ack(self.node.node_id, type_url, current.version)

    def _answer(
        self, state: _TypeState, type_url: str, nonce: str, error: wire.ErrorDetail | None
    ) -> None:
        assert self.node is not None
        sent = state.outstanding.pop(nonce, None)
        if sent is None:
            return  # stale or unknown nonce: carries no ACK/NACK information
        # Envoy answers responses in order: anything sent before this nonce is settled too.
        for older in [n for n in state.outstanding if _seq(n) < _seq(nonce)]:
            del state.outstanding[older]
        state.nacked = error is not None
        if error is not None:
            self.cache.record_nack(
                self.node.node_id, type_url, sent.version, error.code, error.message
            )
            log.warning(
                "node %s NACKed %s version %s: %s",
                self.node.node_id,
                typeurls.short_name(type_url),
                sent.version,
                error.message,
            )
            return
        for res in sent.resources:
            state.held[res.name] = res
            state.acked_names.add(res.name)
        for name in sent.removed:
            state.held.pop(name, None)
            state.acked_names.discard(name)
        if not state.outstanding:
            state.synced_version = sent.version
        self.cache.record_ack(self.node.node_id, type_url, sent.version)

    def _acked(self, type_url: str) -> frozenset[str] | None:
        state = self.types.get(type_url)
        return None if state is None else frozenset(state.acked_names)

    def _route_clusters(self) -> set[str]:
        """Clusters named by the route tables this client holds or has been sent."""
        state = self.types.get(typeurls.ROUTE)
        if state is None:
            return set()
        in_flight = [r for sent in state.outstanding.values() for r in sent.resources]
        return route_clusters([*state.held.values(), *in_flight])

    def pending_responses(self) -> list[bytes]:
        """Responses due now, in make-before-break order (CDS, EDS, LDS, RDS)."""
        if self.node is None:
            return []
        out: list[bytes] = []
        snapshot = self.cache.snapshot
        self.holding = False
        for type_url in typeurls.PUSH_ORDER:
            state = self.types.get(type_url)
            current = snapshot.get(type_url)
            if state is None or current is None:
                continue
            changed = [
                r
                for r in current.resources.values()
                if state.in_scope(r.name) and state.client_versions.get(r.name) != r.version
            ]
            removed = {
                n for n in state.client_versions if n not in current.resources and state.in_scope(n)
            }
            held_back = removed & self._route_clusters() if type_url in CLUSTER_TYPES else set()
            # Break after make: a cluster the client's routes still name stays until a route
            # table without it is ACKed.
            removed -= held_back
            self.holding |= bool(held_back)
            missing = {
                n for n in state.names if n not in current.resources and n not in state.told_missing
            } - set(state.client_versions)
            if not changed and not removed and not missing and not state.needs_response:
                if (
                    current.version != state.synced_version
                    and not state.outstanding
                    and not state.nacked
                    and not held_back
                ):
                    # Nothing in this client's scope changed: it already holds this version.
                    state.synced_version = current.version
                    self.cache.record_ack(self.node.node_id, type_url, current.version)
                continue
            if type_url == typeurls.ROUTE and not clusters_ready(
                changed, self._acked(typeurls.CLUSTER), self._acked(typeurls.ENDPOINT)
            ):
                self.holding = True  # woken again when the clusters are ACKed
                continue
            nonce = self.new_nonce()
            gone = sorted(removed | missing)
            out.append(
                wire.delta_response(
                    current.version, (r.delta_bytes for r in changed), type_url, gone, nonce
                )
            )
            for r in changed:
                state.client_versions[r.name] = r.version
            for n in removed:
                del state.client_versions[n]
            state.told_missing |= missing
            state.needs_response = False
            state.outstanding[nonce] = _Sent(current.version, tuple(changed), frozenset(removed))
            self.cache.record_sent(self.node.node_id, type_url, current.version)
        return out


def _seq(nonce: str) -> int:
    return int(nonce.rsplit("-", 1)[-1])


async def serve_delta(
    cache: SnapshotCache, requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext
) -> None:
    """The ``DeltaAggregatedResources`` handler body (raw bytes in and out)."""
    await run_stream(DeltaStream(cache), requests, context)
