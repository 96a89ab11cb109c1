"""Waiting for a pushed version to be ACKed by a set of nodes.

A node counts as having ACKed when every one of its streams did: several Envoys may share a
node id (replicas started from one bootstrap), or a restarted Envoy may connect before its
predecessor's stream is gone, and one ACK must not stand for all of them. A target whose
streams all close before it answered stays pending until it reconnects and ACKs, or the
deadline: an Envoy that lost its xDS stream keeps serving its old configuration.

:class:`AckWaiter` is resolved incrementally by the cache as ACKs, NACKs and streams come and
go, so an ACK storm from N nodes costs O(N), not O(N²).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

Outcome = Literal["acked", "nacked", "timeout", "no_nodes", "superseded"]


@dataclass(frozen=True)
class AckResult:
    """How a pushed version fared.

    Attributes:
        outcome: ``acked`` when every stream of every target node ACKed the version (or a
            later one); ``nacked`` when at least one target rejected it; ``timeout`` when a
            target neither ACKed nor NACKed in time (including targets that disconnected and
            did not come back); ``no_nodes`` when there was no target at all; ``superseded``
            when another change of the same route was served before every target took this
            one. Only ``acked`` is success.
        type_url: the type whose version was awaited.
        version: the awaited version.
        acked: node ids that ACKed it.
        nacked: node id → NACK message (Envoy's ``error_detail.message``).
        pending: node ids still silent at the deadline.
        disconnected: pending node ids with no open stream at the deadline.
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


class _Target:
    # A plain slotted class: a push to 1,000 nodes builds 1,000 of these before it is written.
    __slots__ = ("acked_streams", "late_streams", "nack", "open_streams", "owed")

    def __init__(self, open_streams: set[int]) -> None:
        self.open_streams = open_streams  # open streams that have not answered
        self.acked_streams: set[int] = set()
        self.late_streams: set[int] = set()  # opened after the push
        self.owed = 0  # streams that closed unanswered: each needs a later stream's ACK
        self.nack: str | None = None

    @property
    def acked(self) -> bool:
        return (
            self.nack is None
            and not self.open_streams
            and self.owed == 0
            and bool(self.acked_streams)
        )

    @property
    def resolved(self) -> bool:
        return self.nack is not None or self.acked


class AckWaiter:
    """Tracks the targets of one push; the cache calls the ``on_*`` methods.

    Args:
        type_url: the type pushed.
        version: the version pushed.
        generation: the cache generation of the push, or None. An ACK of a response built at
            this generation or later counts too: when two changes follow each other quickly a
            stream may only ever be sent the second, which contains the first.
        targets: node id → ids of its open streams subscribed to the type.
    """

    def __init__(
        self,
        type_url: str,
        version: str,
        generation: int | None,
        targets: Mapping[str, Iterable[int]],
    ) -> None:
        self.type_url = type_url
        self.version = version
        self.generation = generation
        self.targets = {node: _Target(set(streams)) for node, streams in targets.items()}
        self._unresolved = set(self.targets)
        self.until: int | None = None  # set when a later change of the same route supersedes
        self.superseded = False
        self.started = 0.0  # monotonic seconds, set by the cache
        self.done = asyncio.Event()
        self._check()

    def _check(self) -> None:
        # Cleared again when a target becomes unresolved (a new stream subscribed).
        if self._unresolved and not self.superseded:
            self.done.clear()
        else:
            self.done.set()

    @property
    def resolved(self) -> bool:
        """Every target ACKed or NACKed (or the change was superseded)."""
        return not self._unresolved or self.superseded

    def _counts(self, type_url: str, version: str, generation: int | None) -> bool:
        if type_url != self.type_url:
            return False
        if version == self.version:
            return True
        return (
            self.generation is not None
            and generation is not None
            and generation >= self.generation
            and (self.until is None or generation < self.until)
        )

    def supersede(self, generation: int) -> None:
        """A later change of the same subject was served at ``generation``: ACKs of responses
        built from then on do not contain this change. Unresolved targets end the wait."""
        self.until = generation
        if self._unresolved:
            self.superseded = True
            self.done.set()

    def _update(self, node_id: str) -> None:
        if self.targets[node_id].resolved:
            self._unresolved.discard(node_id)
        else:
            self._unresolved.add(node_id)
        self._check()

    def on_ack(
        self, node_id: str, stream_id: int, type_url: str, version: str, generation: int | None
    ) -> None:
        """A stream of ``node_id`` ACKed ``version`` (built at ``generation``) of ``type_url``."""
        target = self.targets.get(node_id)
        if target is None or not self._counts(type_url, version, generation):
            return
        if stream_id in target.acked_streams:
            return
        target.open_streams.discard(stream_id)
        target.acked_streams.add(stream_id)
        if stream_id in target.late_streams and target.owed > 0:
            target.owed -= 1  # a reconnected (or replacement) process has it now
        self._update(node_id)

    def on_nack(
        self,
        node_id: str,
        stream_id: int,
        type_url: str,
        version: str,
        generation: int | None,
        message: str,
    ) -> None:
        """A stream of ``node_id`` rejected ``version`` of ``type_url``.

        Only a rejection of this push itself counts: its version, or a response built at its
        generation. A later change that is rejected says nothing of this one (the target then
        stays pending), and a stream that already ACKed this push keeps its ACK.
        """
        target = self.targets.get(node_id)
        if target is None or type_url != self.type_url or stream_id in target.acked_streams:
            return
        if version != self.version and (self.generation is None or generation != self.generation):
            return
        target.nack = message
        self._update(node_id)

    def on_subscribe(self, node_id: str, stream_id: int, type_url: str) -> None:
        """A stream of ``node_id`` subscribed to ``type_url`` after the push: it must answer
        too (it may be a new Envoy process, or the target reconnecting)."""
        target = self.targets.get(node_id)
        if (
            target is not None
            and type_url == self.type_url
            and target.nack is None
            and stream_id not in target.acked_streams
            and stream_id not in target.open_streams  # already a target: not a late one
        ):
            target.open_streams.add(stream_id)
            target.late_streams.add(stream_id)
            self._update(node_id)

    def on_close(self, node_id: str, stream_id: int) -> None:
        """A stream closed. Its ACK, if it gave one, still holds (Envoy keeps its config); if
        it had not answered, the node owes an ACK from a later stream (unless this stream was
        itself such a later one: a flapping reconnect does not add to the debt)."""
        target = self.targets.get(node_id)
        if target is not None and stream_id in target.open_streams:
            target.open_streams.discard(stream_id)
            if stream_id not in target.late_streams:
                target.owed += 1
            self._update(node_id)

    def result(self, elapsed_s: float, connected: set[str]) -> AckResult:
        """The outcome now (call after :attr:`done` or at the deadline).

        Args:
            elapsed_s: seconds since the push.
            connected: node ids with an open stream now (to tell disconnected targets apart).
        """
        acked = sorted(n for n, t in self.targets.items() if t.acked)
        nacked = {n: t.nack for n, t in sorted(self.targets.items()) if t.nack is not None}
        pending = sorted(n for n, t in self.targets.items() if not t.resolved)
        outcome: Outcome
        if nacked:
            outcome = "nacked"
        elif pending and self.superseded:
            outcome = "superseded"
        elif pending:
            outcome = "timeout"
        elif not acked:
            outcome = "no_nodes"
        else:
            outcome = "acked"
        return AckResult(
            outcome=outcome,
            type_url=self.type_url,
            version=self.version,
            acked=tuple(acked),
            nacked=nacked,
            pending=tuple(pending),
            disconnected=tuple(n for n in pending if n not in connected),
            elapsed_s=elapsed_s,
        )
