"""What the controller knows about each connected Envoy: per node and type, the version it
ACKed, the version it was last sent, and the last NACK with its message.

Plain records; :class:`controller.xds.cache.SnapshotCache` owns and updates them. Times are
wall-clock seconds since the epoch, handed in by the caller.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from controller.xds.typeurls import short_name

Protocol = Literal["sotw", "delta"]


@dataclass(frozen=True, slots=True)
class Nack:
    """A rejected response: the version Envoy refused and its ``error_detail``."""

    version: str
    message: str
    code: int
    at: float


@dataclass(slots=True)
class TypeStatus:
    """One node's state for one type URL."""

    sent_version: str | None = None
    acked_version: str | None = None
    acked_at: float | None = None
    last_nack: Nack | None = None

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict (used by the admin API and ``sluice xds status -o json``)."""
        return {
            "sent_version": self.sent_version,
            "acked_version": self.acked_version,
            "acked_at": self.acked_at,
            "last_nack": None
            if self.last_nack is None
            else {
                "version": self.last_nack.version,
                "message": self.last_nack.message,
                "code": self.last_nack.code,
                "at": self.last_nack.at,
            },
        }


@dataclass(slots=True)
class NodeStatus:
    """One Envoy node (``Node.id``) and its open ADS streams."""

    node_id: str
    cluster: str
    user_agent: str
    protocol: Protocol
    connected_at: float
    stream_ids: set[int] = field(default_factory=set)
    types: dict[str, TypeStatus] = field(default_factory=dict)
    unsupported_types: set[str] = field(default_factory=set)
    # Per open stream: the types it subscribed to, and per type (version, generation) of the
    # last response sent, ACKed, NACKed (with the message).
    stream_types: dict[int, set[str]] = field(default_factory=dict)
    stream_sent: dict[int, dict[str, tuple[str, int]]] = field(default_factory=dict)
    stream_acks: dict[int, dict[str, tuple[str, int]]] = field(default_factory=dict)
    stream_nacks: dict[int, dict[str, tuple[str, int, str]]] = field(default_factory=dict)
    # The same subscriptions indexed by type: type URL → open streams subscribed to it (kept by
    # the cache with ``stream_types``; an ACK and a push look it up, they do not scan).
    type_streams: dict[str, set[int]] = field(default_factory=dict)

    def streams_of(self, type_url: str) -> set[int]:
        """Open streams subscribed to ``type_url`` (a copy)."""
        return set(self.type_streams.get(type_url, ()))

    def subscribe(self, stream_id: int, type_url: str) -> None:
        """Record that open stream ``stream_id`` subscribed to ``type_url``."""
        types = self.stream_types.get(stream_id)
        if types is None:
            types = self.stream_types[stream_id] = set()
        types.add(type_url)
        streams = self.type_streams.get(type_url)
        if streams is None:
            streams = self.type_streams[type_url] = set()
        streams.add(stream_id)

    def forget_stream(self, stream_id: int) -> set[str]:
        """Drop every per-stream record of a closed stream; returns the types it subscribed to."""
        self.stream_ids.discard(stream_id)
        types = self.stream_types.pop(stream_id, set())
        for type_url in types:
            streams = self.type_streams.get(type_url)
            if streams is not None:
                streams.discard(stream_id)
                if not streams:
                    del self.type_streams[type_url]
        self.stream_sent.pop(stream_id, None)
        self.stream_acks.pop(stream_id, None)
        self.stream_nacks.pop(stream_id, None)
        return types

    def refresh_acked(self, type_url: str, at: float) -> None:
        """Show a version as the node's ACKed one when every stream subscribed to the type
        ACKed it."""
        version = ""
        for stream_id in self.type_streams.get(type_url, ()):
            acks = self.stream_acks.get(stream_id)
            acked = acks.get(type_url) if acks is not None else None
            if acked is None or not acked[0] or (version and acked[0] != version):
                return  # a stream has not ACKed the type, or two streams hold different ones
            version = acked[0]
        if version:
            status = self.type_status(type_url)
            if status.acked_version != version:
                status.acked_version = version
                status.acked_at = at

    @property
    def streams(self) -> int:
        """Number of open ADS streams (more than one: several Envoys share this node id)."""
        return len(self.stream_ids)

    def type_status(self, type_url: str) -> TypeStatus:
        """The node's record for a type, created on first use."""
        status = self.types.get(type_url)
        if status is None:
            status = self.types[type_url] = TypeStatus()
        return status

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict keyed by short type names (CDS, EDS, LDS, RDS)."""
        return {
            "node_id": self.node_id,
            "cluster": self.cluster,
            "user_agent": self.user_agent,
            "protocol": self.protocol,
            "connected": self.streams > 0,
            "streams": self.streams,
            "shared_node_id": self.streams > 1,
            "connected_at": self.connected_at,
            "types": {short_name(t): s.to_json() for t, s in sorted(self.types.items())},
            "unsupported_types": sorted(self.unsupported_types),
        }
