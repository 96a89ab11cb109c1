"""What :class:`~controller.xds.weights.WeightController` takes and returns: the persist
hook, its error, and the results of a weight change and of a gateway reload; plus which live
endpoints survive a gateway reload."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from controller.policy.gateway import Endpoint, Gateway
from controller.xds.acks import AckResult

PersistHook = Callable[[str, Mapping[str, int] | None], None]
"""Called with (route name, weights) before a change is served, or (route name, None) when the
route goes back to the gateway's own weights; raising aborts the change. Called in a worker
thread (it may block on a disk), one call at a time."""


class PersistError(RuntimeError):
    """The new weights could not be saved durably; nothing was served."""


@dataclass(frozen=True)
class WeightChange:
    """The result of :meth:`WeightController.set_weights`.

    Attributes:
        route: the route whose weights changed.
        weights: cluster → relative weight, as asked.
        ack: how the connected nodes took the new RDS version (``ack.ok`` is success).
        reverted: True when a NACK made the controller serve the route's last weights that
            every target ACKed (the last good configuration), so that Envoys connecting later
            do not get the rejected one.
    """

    route: str
    weights: dict[str, int]
    ack: AckResult
    reverted: bool = False


@dataclass(frozen=True)
class GatewayChange:
    """The result of :meth:`WeightController.replace_gateway`.

    Attributes:
        acks: per changed type URL, how the connected nodes took its new version.
        reverted: True when a NACK made the controller serve the previous gateway again.
    """

    acks: dict[str, AckResult]
    reverted: bool

    @property
    def nacks(self) -> dict[str, str]:
        """node id → NACK message, over every changed type."""
        return {n: m for ack in self.acks.values() for n, m in ack.nacked.items()}


def kept_endpoints(
    old: Gateway, new: Gateway, live: Mapping[str, tuple[Endpoint, ...]]
) -> dict[str, tuple[Endpoint, ...]]:
    """The live endpoints that still apply under ``new``: those of clusters following the same
    Service in both gateways."""
    before, after = old.kubernetes_clusters(), new.kubernetes_clusters()
    return {c: eps for c, eps in live.items() if c in after and before.get(c) == after[c]}
