"""Waiting for a version to be ACKed by a set of nodes.

:class:`AckWaiter` is resolved incrementally by the cache as ACKs, NACKs and disconnects
arrive, so an ACK storm from N nodes costs O(N), not O(N²).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Literal

Outcome = Literal["acked", "nacked", "timeout", "no_nodes"]


@dataclass(frozen=True)
class AckResult:
    """How a pushed version fared.

    Attributes:
        outcome: ``acked`` when every target node ACKed the version (nodes that disconnected
            meanwhile are listed apart and will get the version when they reconnect); ``nacked``
            when at least one target rejected it; ``timeout`` when some target neither ACKed nor
            NACKed in time; ``no_nodes`` when no target was connected, or every target left
            before answering. Only ``acked`` is success.
        type_url: the type whose version was awaited.
        version: the awaited version.
        acked: node ids that ACKed it.
        nacked: node id → NACK message.
        pending: node ids still silent at the deadline.
        disconnected: node ids whose every stream closed before they answered.
        elapsed_s: seconds from the push to the outcome.
    """

    outcome: Outcome
    type_url: str
    version: str
    acked: tuple[str, ...] = ()
    nacked: dict[str, str] = field(default_factory=dict)
    pending: tuple[str, ...] = ()
    disconnected: tuple[str, ...] = ()
    elapsed_s: float = 0.0

    @property
    def ok(self) -> bool:
        """True only for ``acked``."""
        return self.outcome == "acked"


class AckWaiter:
    """Tracks the targets of one push; the cache calls :meth:`on_ack` etc."""

    def __init__(self, type_url: str, version: str, targets: set[str]) -> None:
        self.type_url = type_url
        self.version = version
        self.pending = set(targets)
        self.acked: set[str] = set()
        self.nacked: dict[str, str] = {}
        self.disconnected: set[str] = set()
        self.done = asyncio.Event()
        self._check()

    def _check(self) -> None:
        if not self.pending:
            self.done.set()

    def on_ack(self, node_id: str, type_url: str, version: str) -> None:
        """A node ACKed ``version`` of ``type_url``."""
        if type_url == self.type_url and version == self.version and node_id in self.pending:
            self.pending.discard(node_id)
            self.acked.add(node_id)
            self._check()

    def on_nack(self, node_id: str, type_url: str, version: str, message: str) -> None:
        """A node NACKed ``version`` of ``type_url``."""
        if type_url == self.type_url and version == self.version and node_id in self.pending:
            self.pending.discard(node_id)
            self.nacked[node_id] = message
            self._check()

    def on_disconnect(self, node_id: str) -> None:
        """Every stream of a node closed."""
        if node_id in self.pending:
            self.pending.discard(node_id)
            self.disconnected.add(node_id)
            self._check()

    def result(self, elapsed_s: float) -> AckResult:
        """The outcome now (call after :attr:`done` or at the deadline)."""
        outcome: Outcome
        if self.nacked:
            outcome = "nacked"
        elif self.pending:
            outcome = "timeout"
        elif not self.acked:
            outcome = "no_nodes"
        else:
            outcome = "acked"
        return AckResult(
            outcome=outcome,
            type_url=self.type_url,
            version=self.version,
            acked=tuple(sorted(self.acked)),
            nacked=dict(sorted(self.nacked.items())),
            pending=tuple(sorted(self.pending)),
            disconnected=tuple(sorted(self.disconnected)),
            elapsed_s=elapsed_s,
        )
