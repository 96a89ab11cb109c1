"""Reloading the gateway file while serving (SIGHUP or ``POST /v1/gateway/reload``).

A reload that fails (the file no longer validates, or the served weights no longer fit it)
changes nothing: the last good gateway stays served and the error is kept for status.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from controller.policy.gateway import Endpoint, Gateway
from controller.policy.source import DocumentError
from controller.runtime.gatewayfile import load_gateway_file
from controller.xds.typeurls import short_name
from controller.xds.weights import WeightController

log = logging.getLogger(__name__)


class EndpointsFollower(Protocol):
    """What a reload needs of the EndpointSlices watch
    (:class:`controller.runtime.endpoints.KubernetesEndpoints`)."""

    async def prepare(self, gateway: Gateway) -> dict[str, tuple[Endpoint, ...]]: ...

    def commit(self) -> None: ...

    def abort(self) -> None: ...


def unfollowed_clusters(gateway: Gateway) -> str | None:
    """Why ``gateway`` cannot be served without Kubernetes (its clusters that name a Service),
    or None."""
    followed = gateway.kubernetes_clusters()
    if not followed:
        return None
    names = ", ".join(sorted(followed))
    return (
        f"cluster(s) {names} take their endpoints from Kubernetes Services: serve with "
        "--kubernetes, or give them static endpoints"
    )


@dataclass
class GatewayReloader:
    """Re-reads ``path`` and swaps the served gateway when it is valid.

    Attributes:
        path: the gateway file; None when serving the embedded default (nothing to reload).
        weights: the weight controller that owns the served gateway.
        ack_timeout_s: seconds to wait for the Envoys' ACKs of a reloaded gateway.
        loaded_at: wall-clock seconds of the last successful load.
        last_error: why the last reload failed, or None after a success.
        last_acks: per changed type (CDS, EDS, LDS, RDS) of the last reload, the ACK outcome
            and the nodes that had not answered in time.
        on_loaded: called with the new gateway after a reload Envoy accepted (the in-process
            comparator follows the clusters' endpoints with it).
        endpoints: the EndpointSlices watch of the gateway's ``kubernetes`` clusters (Kubernetes
            mode); None: a gateway with such clusters is refused (nothing would fill them).
    """

    path: Path | None
    weights: WeightController
    ack_timeout_s: float = 10.0
    loaded_at: float = field(default_factory=time.time)
    last_error: str | None = None
    last_acks: dict[str, dict[str, Any]] = field(default_factory=dict)
    on_loaded: Callable[[Gateway], None] | None = None
    endpoints: EndpointsFollower | None = None
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock, repr=False)

    async def reload(self) -> bool:
        """Load the file again, serve it and wait for the Envoys' ACKs; True on success.

        Never raises for a bad file: the error is logged and kept in :attr:`last_error`. A
        gateway an Envoy NACKs is taken back (the previous one is served again) and reported.
        Reloads run one at a time: a second SIGHUP waits for the first one's ACKs.
        """
        async with self._lock:
            return await self._reload()

    async def _reload(self) -> bool:
        if self.path is None:
            self.last_error = "serving the embedded default gateway: no file to reload"
            return False
        try:
            gateway = load_gateway_file(self.path)
            live = None
            if self.endpoints is not None:
                live = await self.endpoints.prepare(gateway)
            elif followed := unfollowed_clusters(gateway):
                raise ValueError(followed)
            change = await self.weights.replace_gateway(gateway, self.ack_timeout_s, live)
        except DocumentError as exc:
            self.last_error = "; ".join(str(i) for i in exc.issues)
        except ValueError as exc:
            self.last_error = f"{self.path}: {exc}"
        else:
            self.last_acks = {
                short_name(t): {"outcome": a.outcome, "pending": list(a.pending)}
                for t, a in change.acks.items()
            }
            if not change.nacks:
                if self.endpoints is not None:
                    self.endpoints.commit()
                self.last_error = None
                self.loaded_at = time.time()
                if self.on_loaded is not None:
                    self.on_loaded(gateway)
                unconfirmed = {t: a for t, a in self.last_acks.items() if a["outcome"] == "timeout"}
                log.info(
                    "gateway reloaded from %s%s",
                    self.path,
                    f"; not confirmed in time by {unconfirmed}" if unconfirmed else "",
                )
                return True
            rejected = "; ".join(f"{node}: {msg}" for node, msg in sorted(change.nacks.items()))
            self.last_error = f"Envoy rejected {self.path} ({rejected})" + (
                "; the previous gateway is served again" if change.reverted else ""
            )
        if self.endpoints is not None:
            self.endpoints.abort()
        log.error("gateway reload failed, still serving the previous one: %s", self.last_error)
        return False

    def to_json(self) -> dict[str, Any]:
        """Status of the served gateway (source, load time, last reload error)."""
        return {
            "name": self.weights.gateway.metadata.name,
            "source": str(self.path) if self.path else "embedded default",
            "loaded_at": self.loaded_at,
            "last_reload_error": self.last_error,
            "last_reload_acks": self.last_acks,
        }
