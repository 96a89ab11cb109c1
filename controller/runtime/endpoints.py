"""The gateway's Kubernetes clusters, served from their EndpointSlices while the controller runs.

:class:`KubernetesEndpoints` owns the :class:`~controller.k8s.endpoints_source.EndpointsSource`
of the served gateway. At start it waits for the first list (bounded), so the first snapshot
already carries the ready endpoints instead of empty assignments (503s) until the watch
catches up; then every change is served through ``WeightController.set_endpoints`` (EDS only,
weights untouched). A gateway reload starts the new gateway's source first and serves its
endpoints together with the new gateway (:meth:`prepare`, then :meth:`commit` or
:meth:`abort`), so a Service added by the reload has no 503 window either.
"""

from __future__ import annotations

import asyncio
import logging

from kubernetes.client import ApiClient

from controller.k8s.endpoints_source import EndpointsSource, forward_to
from controller.policy.gateway import Endpoint, Gateway
from controller.xds.weights import WeightController

log = logging.getLogger(__name__)

SYNC_TIMEOUT_S = 10.0
"""How long a start or a reload waits for the first list of the EndpointSlices (seconds);
past it, clusters not listed yet start empty and fill in as the watch catches up."""


class KubernetesEndpoints:
    """The EndpointSlices watch of the served gateway.

    Args:
        api_client: the controller's API client.
        namespace: the default namespace of the gateway's Services (the controller's).
        sync_timeout_s: see :data:`SYNC_TIMEOUT_S`.
    """

    def __init__(
        self, api_client: ApiClient, namespace: str, sync_timeout_s: float = SYNC_TIMEOUT_S
    ) -> None:
        self._api = api_client
        self._namespace = namespace
        self._sync_timeout_s = sync_timeout_s
        self._current: EndpointsSource | None = None
        self._pending: EndpointsSource | None = None
        self._weights: WeightController | None = None
        self._stopping: set[asyncio.Future[None]] = set()

    async def start(self, gateway: Gateway) -> dict[str, tuple[Endpoint, ...]]:
        """Start following ``gateway``'s Services; returns the ready endpoints known once the
        first lists are done (or :data:`SYNC_TIMEOUT_S` passed), to build the first snapshot
        with. Call :meth:`serve` once the weight controller exists."""
        self._current = await self._started(gateway)
        return self._current.endpoints()

    def serve(self, weights: WeightController) -> None:
        """Serve every change through ``weights`` from now on (the current sets first)."""
        self._weights = weights
        if self._current is not None:
            self._current.forward(forward_to(weights, asyncio.get_running_loop()))

    async def prepare(self, gateway: Gateway) -> dict[str, tuple[Endpoint, ...]]:
        """A reload is coming: follow ``gateway``'s Services too, and return their ready
        endpoints to serve with it. Then :meth:`commit` (served) or :meth:`abort`."""
        self.abort()
        self._pending = await self._started(gateway)
        return self._pending.endpoints()

    def commit(self) -> None:
        """The prepared gateway is served: its source feeds the weight controller from now
        on, and the previous one stops."""
        if self._pending is None:
            return
        old, self._current, self._pending = self._current, self._pending, None
        if self._weights is not None:
            self._current.forward(forward_to(self._weights, asyncio.get_running_loop()))
        if old is not None:
            self._stop_later(old)

    def abort(self) -> None:
        """The prepared gateway is not served: stop its source."""
        if self._pending is not None:
            self._stop_later(self._pending)
            self._pending = None

    def _stop_later(self, source: EndpointsSource) -> None:
        """Stop ``source`` in a worker thread: stopping joins its threads, which must not
        hold the event loop (and the xDS streams on it) while a request of theirs ends."""
        stopping = asyncio.get_running_loop().run_in_executor(None, source.stop)
        self._stopping.add(stopping)
        stopping.add_done_callback(self._stopping.discard)

    def stop(self) -> None:
        """Stop every source (no callback runs after this returns)."""
        self.abort()
        if self._current is not None:
            self._current.stop()
            self._current = None

    async def _started(self, gateway: Gateway) -> EndpointsSource:
        source = EndpointsSource(self._api, gateway, self._namespace, None).start()
        if not await asyncio.to_thread(source.wait_synced, self._sync_timeout_s):
            log.warning(
                "the EndpointSlices of %s were not all listed within %g s: their clusters "
                "start without endpoints and fill in as the watch catches up",
                ", ".join(source.namespaces()),
                self._sync_timeout_s,
            )
        return source
