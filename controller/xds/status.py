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

    def streams_of(self, type_url: str) -> set[int]:
        """Open streams subscribed to ``type_url``."""
        return {s for s in self.stream_ids if type_url in self.stream_types.get(s, ())}

    def refresh_acked(self, type_url: str, at: float) -> None:
        """Show a version as the node's ACKed one when every stream subscribed to the type
        ACKed it."""
        versions = {
            self.stream_acks.get(s, {}).get(type_url, ("",))[0] for s in self.streams_of(type_url)
        }
        if len(versions) == 1 and "" not in versions:
            status = self.type_status(type_url)
            version = versions.pop()
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
