"""Incremental (Delta) ADS: one ``DeltaAggregatedResources`` stream.

Protocol source: xDS REST and gRPC protocol, "Incremental xDS" and "Resource warming"
(envoyproxy.io/docs/envoy/latest/api-docs/xds_protocol#incremental-xds).

Per type URL the stream tracks the subscription (wildcard and/or names) and, per resource, two
versions: what the client has confirmed holding (seeded by ``initial_resource_versions`` on
reconnect, then moved by ACKs) and what it will hold once the responses in flight are answered.
A response carries only resources whose version differs from the latter, and
``removed_resources`` for names the client holds that no longer exist.

Subscription changes are applied from every request; ACK/NACK only from a request answering an
outstanding nonce. A NACK leaves the client with its old resources: the rejected versions are
remembered and not sent again (only newer versions are), and a later push whose content still
contains a rejected resource is reported as NACKed at once. The node counts as holding a type
version only when every resource of its subscription is confirmed at that version.
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
    route_clusters,
    run_stream,
)


@dataclass(frozen=True)
class _Sent:
    seq: int
    version: str  # system_version_info of the response
    generation: int
    resources: tuple[Resource, ...]
    removed: frozenset[str]


@dataclass
class _TypeState:
    wildcard: bool = False
    names: set[str] = field(default_factory=set)
    confirmed: dict[str, str] = field(default_factory=dict)  # name → version the client ACKed
    expected: dict[str, str] = field(default_factory=dict)  # ... once in-flight responses land
    held: dict[str, Resource] = field(default_factory=dict)  # confirmed resources we know
    stale: set[str] = field(default_factory=set)  # confirmed at versions we cannot read
    rejected: dict[str, str] = field(default_factory=dict)  # name → version the client NACKed
    refused_removals: set[str] = field(default_factory=set)  # removals the client NACKed
    suspect: set[str] = field(default_factory=set)  # in a NACKed response with others
    told_missing: set[str] = field(default_factory=set)
    needs_response: bool = False
    outstanding: dict[str, _Sent] = field(default_factory=dict)  # nonce → what it carried
    synced_version: str | None = None  # type version confirmed for the whole subscription
    last_nack: wire.ErrorDetail | None = None
    nack_reported: str | None = None  # type version already reported as still rejected

    def in_scope(self, name: str) -> bool:
        return self.wildcard or name in self.names

    def forget(self, name: str) -> None:
        for table in (self.confirmed, self.expected, self.held, self.rejected):
            table.pop(name, None)
        self.stale.discard(name)
        self.told_missing.discard(name)


@dataclass
class DeltaStream(StreamBase):
    """One Delta ADS stream: the reader applies requests, :meth:`pending_responses` writes."""

    types: dict[str, _TypeState] = field(default_factory=dict)
    reconnected: bool = False  # the client said it holds resources: it may hold route tables

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
        self.node = admit(
            self.cache, self.node, req.node, req.type_url, "delta", self.wakeup, self.stream_id
        )
        if req.type_url not in SERVED_TYPES:
            self.cache.record_unsupported(self.node.node_id, req.type_url)
            return
        state = self.types.get(req.type_url)
        initial = state is None
        if state is None:
            state = self.types[req.type_url] = _TypeState()
            self.cache.record_subscribed(self.node.node_id, self.stream_id, req.type_url)
            # An initial request with no names subscribes wildcard types to everything.
            state.wildcard = (
                req.type_url in typeurls.WILDCARD_TYPES and not req.resource_names_subscribe
            )
            self._seed(state, req.type_url, req.initial_resource_versions)
        for name in req.resource_names_subscribe:
            if name == "*":
                state.wildcard = True
            else:
                state.names.add(name)
        for name in req.resource_names_unsubscribe:
            if name == "*":
                state.wildcard = False
                # The client drops what it held through the wildcard alone.
                for held in set(state.expected) | set(state.confirmed):
                    if held not in state.names and held not in req.resource_names_subscribe:
                        state.forget(held)
            else:
                state.names.discard(name)
                state.forget(name)
        if req.response_nonce:
            self._answer(state, req.type_url, req.response_nonce, req.error_detail)
        else:
            self._check_synced(state, req.type_url)
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

    def _seed(self, state: _TypeState, type_url: str, initial: dict[str, str]) -> None:
        """What a reconnecting client says it holds (``initial_resource_versions``)."""
        current = self.cache.snapshot.get(type_url)
        state.confirmed = dict(initial)
        state.expected = dict(initial)
        state.needs_response = not initial
        self.reconnected |= bool(initial)
        for name, version in initial.items():
            res = current.resources.get(name) if current is not None else None
            if res is not None and res.version == version:
                state.held[name] = res
            else:
                state.stale.add(name)  # an older version: what it names is unknown

    def _answer(
        self, state: _TypeState, type_url: str, nonce: str, error: wire.ErrorDetail | None
    ) -> None:
        assert self.node is not None
        sent = state.outstanding.pop(nonce, None)
        if sent is None:
            return  # stale or unknown nonce: carries no ACK/NACK information
        # Envoy answers responses in order: one left unanswered before this one was applied.
        for older_nonce, older in sorted(state.outstanding.items(), key=lambda kv: kv[1].seq):
            if older.seq < sent.seq:
                del state.outstanding[older_nonce]
                self._apply(state, older)
        if error is None:
            self._apply(state, sent)
            self._check_synced(state, type_url)
            return
        for res in sent.resources:
            if len(sent.resources) == 1:
                state.rejected[res.name] = res.version
            else:
                # Which one Envoy refused, the NACK does not say: each is sent again alone.
                state.suspect.add(res.name)
            if state.expected.get(res.name) == res.version:
                self._revert(state, res.name)
        for name in sent.removed:
            state.refused_removals.add(name)  # not sent again: that would loop
            if name not in state.expected:
                self._revert(state, name)
        state.last_nack = error
        state.nack_reported = sent.version
        self.cache.record_nack(
            self.node.node_id,
            self.stream_id,
            type_url,
            sent.version,
            sent.generation,
            error.code,
            error.message,
        )

    @staticmethod
    def _revert(state: _TypeState, name: str) -> None:
        """The client kept what it had confirmed for ``name``."""
        if name in state.confirmed:
            state.expected[name] = state.confirmed[name]
        else:
            state.expected.pop(name, None)

    @staticmethod
    def _apply(state: _TypeState, sent: _Sent) -> None:
        for res in sent.resources:
            state.confirmed[res.name] = res.version
            state.held[res.name] = res
            state.stale.discard(res.name)
            state.rejected.pop(res.name, None)
        for name in sent.removed:
            state.confirmed.pop(name, None)
            state.held.pop(name, None)
            state.stale.discard(name)

    def _check_synced(self, state: _TypeState, type_url: str) -> None:
        """Record an ACK of the current type version once the client confirmed every resource
        of its subscription at it (and holds nothing the type no longer has)."""
        assert self.node is not None
        current = self.cache.snapshot.get(type_url)
        if current is None or state.outstanding or current.version == state.synced_version:
            return
        if any(
            state.confirmed.get(n) != r.version
            for n, r in current.resources.items()
            if state.in_scope(n)
        ):
            return
        if any(n not in current.resources and state.in_scope(n) for n in state.confirmed):
            return
        state.synced_version = current.version
        self.cache.record_ack(
            self.node.node_id, self.stream_id, type_url, current.version, self.cache.generation
        )

    def _acked(self, type_url: str) -> Mapping[str, str] | None:
        state = self.types.get(type_url)
        return None if state is None else state.confirmed

    def _route_clusters(self) -> set[str] | None:
        """Clusters named by the route tables this client holds or has been sent; None when a
        table it holds is at a version we cannot read (then every cluster may be named)."""
        state = self.types.get(typeurls.ROUTE)
        if state is None:
            # Envoy asks for clusters before routes: a reconnecting one holds route tables it
            # has not told about yet.
            return None if self.reconnected else set()
        if state.stale:
            return None
        in_flight = [r for sent in state.outstanding.values() for r in sent.resources]
        return route_clusters([*state.held.values(), *in_flight])

    def _removals(self, state: _TypeState, type_url: str, current: TypeSnapshot) -> set[str]:
        state.refused_removals &= set(state.expected) - set(current.resources)
        removed = {
            n
            for n in state.expected
            if n not in current.resources and state.in_scope(n) and n not in state.refused_removals
        }
        if type_url not in CLUSTER_TYPES or not removed:
            return removed
        # Break after make: a cluster the client's routes still name stays until a route
        # table without it is ACKed.
        named = self._route_clusters()
        held_back = removed if named is None else removed & named
        self.holding |= bool(held_back)
        return removed - held_back

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
                if state.in_scope(r.name)
                and state.expected.get(r.name) != r.version
                and state.rejected.get(r.name) != r.version
            ]
            suspects = [r for r in changed if r.name in state.suspect]
            if suspects:
                changed = suspects[:1]  # alone: its ACK or NACK says which one was refused
                state.suspect.discard(suspects[0].name)
            removed = set() if suspects else self._removals(state, type_url, current)
            missing = {
                n for n in state.names if n not in current.resources and n not in state.told_missing
            } - set(state.expected)
            if not changed and not removed and not missing and not state.needs_response:
                self._check_synced(state, type_url)
                self._report_still_rejected(state, type_url, current)
                continue
            if type_url == typeurls.ROUTE and not clusters_ready(
                route_clusters(changed),
                self._acked(typeurls.CLUSTER),
                self._acked(typeurls.ENDPOINT),
            ):
                self.holding = True  # woken again when the clusters are ACKed
                continue
            nonce = self.new_nonce()
            out.append(
                wire.delta_response(
                    current.version,
                    (r.delta_bytes for r in changed),
                    type_url,
                    sorted(removed | missing),
                    nonce,
                )
            )
            for r in changed:
                state.expected[r.name] = r.version
            for n in removed:
                del state.expected[n]
            state.told_missing |= missing
            state.needs_response = False
            state.synced_version = None  # in transition until the client answers
            state.outstanding[nonce] = _Sent(
                self._nonce,
                current.version,
                self.cache.generation,
                tuple(changed),
                frozenset(removed),
            )
            self.cache.record_sent(
                self.node.node_id, self.stream_id, type_url, current.version, self.cache.generation
            )
        return out

    def _report_still_rejected(
        self, state: _TypeState, type_url: str, current: TypeSnapshot
    ) -> None:
        """A new type version whose only news for this client is a resource it already
        rejected: nothing is sent (the same bytes would be rejected again), and whoever waits
        for this version learns now that the client refused it."""
        assert self.node is not None
        if (
            state.last_nack is None
            or state.outstanding
            or state.nack_reported == current.version
            or current.version == state.synced_version
        ):
            return
        if not any(
            state.rejected.get(n) == r.version
            for n, r in current.resources.items()
            if state.in_scope(n)
        ):
            return
        state.nack_reported = current.version
        self.cache.record_nack(
            self.node.node_id,
            self.stream_id,
            type_url,
            current.version,
            self.cache.generation,
            state.last_nack.code,
            f"still rejected: {state.last_nack.message}",
        )


async def serve_delta(
    cache: SnapshotCache, requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext
) -> None:
    """The ``DeltaAggregatedResources`` handler body (raw bytes in and out)."""
    await run_stream(DeltaStream(cache), requests, context)
