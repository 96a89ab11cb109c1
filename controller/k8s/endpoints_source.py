"""Follow the EndpointSlices of the gateway's ``kubernetes`` clusters and report each cluster's
ready endpoints when they change.

One :class:`~controller.k8s.watch.ObjectWatch` per namespace lists and watches the
``discovery.k8s.io/v1`` EndpointSlices of the Services named there (``labelSelector
kubernetes.io/service-name in (...)``). Watch events only mark their namespace dirty; a worker
thread waits ``debounce_s`` after the first mark (a rolling update changes several slices in a
burst, and each push costs Envoy a cluster update), recomputes the clusters of the dirty
namespaces with :func:`controller.k8s.endpointslices.ready_endpoints` and calls
``on_endpoints(cluster, endpoints)`` for every cluster whose ready set differs from what it
last reported. Once a namespace's first list is done, each of its clusters is reported once,
even when empty, so the receiver knows the set is real and not "not known yet".

Wiring (the runtime's part): ``on_endpoints`` runs in the worker thread, so an asyncio
controller hands it over with :func:`forward_to`, which schedules
``WeightController.set_endpoints`` on the event loop. So that a (re)started controller never
serves empty assignments it could have filled, start the source without a callback, wait for
:meth:`EndpointsSource.wait_synced`, build the ``WeightController`` with
``endpoints=source.endpoints()``, then :meth:`EndpointsSource.forward` to it (which replays the
current sets: nothing seen in between is lost). On a gateway reload, do the same with a source
for the new gateway and ``replace_gateway(new, endpoints=new_source.endpoints())``, then stop
the old source.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

from kubernetes.client import ApiClient, DiscoveryV1Api

from controller.k8s.endpointslices import SERVICE_NAME_LABEL, ready_endpoints, service_of
from controller.k8s.watch import ObjectWatch, WatchEvent
from controller.policy.gateway import Endpoint, Gateway
from controller.policy.gateway_kubernetes import KubernetesService
from controller.xds.weights import WeightController

log = logging.getLogger(__name__)

OnEndpoints = Callable[[str, tuple[Endpoint, ...]], None]
"""Called with (cluster name, its ready endpoints, sorted); from the source's worker thread,
one call at a time, in order of changes."""

_SYNC_POLL_S = 0.05
"""How often the worker looks for namespaces whose first list just finished (seconds)."""


def service_selector(services: set[str]) -> str:
    """The ``labelSelector`` of the EndpointSlices of ``services`` (one namespace)."""
    return f"{SERVICE_NAME_LABEL} in ({','.join(sorted(services))})"


class EndpointsSource:
    """Reports the ready endpoints of the gateway's ``kubernetes`` clusters.

    Args:
        api_client: a ``kubernetes`` client (see :mod:`controller.k8s.client`).
        gateway: the gateway whose ``kubernetes`` clusters to follow (static clusters are
            ignored; a gateway without any starts no watch).
        namespace: the controller's namespace, for clusters whose ``kubernetes.namespace`` is
            unset.
        on_endpoints: the callback (see :data:`OnEndpoints`), or None to only keep
            :meth:`endpoints` up to date until :meth:`forward`; its exceptions are logged and
            the cluster is reported again at the next change.
        debounce_s: seconds from the first change of a burst to the report.
        timeout_s: each watch request's ``timeoutSeconds``; retry_s: the pause after an API
            error (seconds; errors are logged and retried by the watches, never raised).
    """

    def __init__(
        self,
        api_client: ApiClient,
        gateway: Gateway,
        namespace: str,
        on_endpoints: OnEndpoints | None,
        *,
        debounce_s: float = 0.1,
        timeout_s: int = 300,
        retry_s: float = 1.0,
    ) -> None:
        self._on_endpoints = on_endpoints
        self._debounce_s = debounce_s
        self._sources: dict[str, tuple[str, KubernetesService]] = {
            name: (source.namespace_or(namespace), source)
            for name, source in gateway.kubernetes_clusters().items()
        }
        by_namespace: dict[str, set[str]] = {}
        for ns, source in self._sources.values():
            by_namespace.setdefault(ns, set()).add(source.service)
        list_fn = DiscoveryV1Api(api_client).list_namespaced_endpoint_slice
        self._watches = {
            ns: ObjectWatch(
                list_fn,
                namespace=ns,
                label_selector=service_selector(services),
                on_event=self._marker(ns),
                timeout_s=timeout_s,
                retry_s=retry_s,
                name=f"endpointslices/{ns}",
            )
            for ns, services in sorted(by_namespace.items())
        }
        self._changed = threading.Condition()
        self._dirty: set[str] = set()
        self._first_dirty_at: float | None = None
        self._stopping = False
        self._synced: set[str] = set()
        self._all_synced = threading.Event()
        self._current: dict[str, tuple[Endpoint, ...]] = {}  # last computed, by cluster
        self._delivered: dict[str, tuple[Endpoint, ...]] = {}  # last taken by the callback
        self._replay = False
        self._worker: threading.Thread | None = None

    # -- public --------------------------------------------------------------------------
    def start(self) -> EndpointsSource:
        """Start the watches and the worker thread; returns self."""
        for watch in self._watches.values():
            watch.start()
        self._worker = threading.Thread(target=self._run, name="endpoints-source", daemon=True)
        self._worker.start()
        return self

    def stop(self) -> None:
        """Stop the watches and the worker (joined); no callback runs after this returns."""
        with self._changed:
            self._stopping = True
            self._changed.notify_all()
        for watch in self._watches.values():
            watch.stop()
        if self._worker is not None:
            self._worker.join()

    def forward(self, on_endpoints: OnEndpoints) -> None:
        """Report to ``on_endpoints`` from now on, starting with every known cluster's current
        set (from the worker thread, before any later change)."""
        with self._changed:
            self._on_endpoints = on_endpoints
            self._delivered.clear()
            self._replay = True
            self._changed.notify_all()

    def wait_synced(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds until every cluster's set is known (every namespace
        listed, and reported when there is a callback); True then."""
        return self._all_synced.wait(timeout)

    def endpoints(self) -> dict[str, tuple[Endpoint, ...]]:
        """The current ready endpoints, by cluster (clusters whose namespace is not listed yet
        are left out): what to start a ``WeightController`` with after :meth:`wait_synced`."""
        with self._changed:
            return dict(self._current)

    def namespaces(self) -> list[str]:
        """The namespaces watched, sorted."""
        return list(self._watches)

    # -- worker --------------------------------------------------------------------------
    def _marker(self, namespace: str) -> Callable[[WatchEvent], None]:
        def mark(_event: WatchEvent) -> None:
            with self._changed:
                self._dirty.add(namespace)
                if self._first_dirty_at is None:
                    self._first_dirty_at = time.monotonic()
                self._changed.notify_all()

        return mark

    def _run(self) -> None:
        if not self._watches:
            self._all_synced.set()
        while True:
            with self._changed:
                due = self._take_due()
                while due is None and not self._stopping:
                    self._changed.wait(self._wait_s())
                    due = self._take_due()
                if self._stopping or due is None:
                    return
            for namespace in due:
                self._report(namespace)
            if len(self._synced) == len(self._watches):
                self._all_synced.set()

    def _wait_s(self) -> float | None:
        """How long the worker may sleep (holding no lock other than the condition's)."""
        waits = []
        if self._first_dirty_at is not None:
            waits.append(max(0.0, self._first_dirty_at + self._debounce_s - time.monotonic()))
        if len(self._synced) < len(self._watches):
            waits.append(_SYNC_POLL_S)
        return min(waits) if waits else None

    def _take_due(self) -> list[str] | None:
        """Namespaces to report now (newly synced ones, and dirty ones once the debounce
        passed), or None. Called with the condition held."""
        newly = [
            ns for ns, w in self._watches.items() if ns not in self._synced and w.wait_synced(0)
        ]
        self._synced.update(newly)
        due = set(newly)
        if self._replay:
            due |= self._synced
            self._replay = False
        if self._first_dirty_at is not None and (
            time.monotonic() >= self._first_dirty_at + self._debounce_s
        ):
            due |= self._dirty & self._synced
            self._dirty -= self._synced
            self._first_dirty_at = time.monotonic() if self._dirty else None
        return sorted(due) or None

    def _report(self, namespace: str) -> None:
        slices = list(self._watches[namespace].items().values())
        for cluster, (ns, source) in sorted(self._sources.items()):
            if ns != namespace:
                continue
            mine = [s for s in slices if service_of(s) == (ns, source.service)]
            endpoints = ready_endpoints(mine, source.port)
            with self._changed:
                self._current[cluster] = endpoints
                callback = self._on_endpoints
                if callback is None or self._delivered.get(cluster, None) == endpoints:
                    continue
            try:
                callback(cluster, endpoints)
            except Exception:
                log.exception("on_endpoints failed for cluster %s", cluster)
                continue
            with self._changed:
                if self._on_endpoints is callback:
                    self._delivered[cluster] = endpoints


def forward_to(
    weights: WeightController,
    loop: asyncio.AbstractEventLoop,
    timeout_s: float = 10.0,
) -> OnEndpoints:
    """An ``on_endpoints`` callback that serves each report through
    ``weights.set_endpoints`` on ``loop`` (thread-safe: reports keep their order, as
    ``set_endpoints`` calls queue on the controller's lock in the order scheduled).

    Outcomes other than ``acked`` are logged (no node connected is ``no_nodes``: normal at
    start). A cluster the served gateway no longer follows is logged and skipped.
    """

    async def serve(cluster: str, endpoints: tuple[Endpoint, ...]) -> None:
        try:
            result = await weights.set_endpoints(cluster, endpoints, timeout_s=timeout_s)
        except ValueError as exc:
            log.warning("endpoints of %s not served: %s", cluster, exc)
            return
        if result.outcome not in ("acked", "no_nodes"):
            log.warning(
                "endpoints of %s (%d): %s %s",
                cluster,
                len(endpoints),
                result.outcome,
                _nacks(result.nacked),
            )

    def report(cluster: str, endpoints: tuple[Endpoint, ...]) -> None:
        loop.call_soon_threadsafe(_spawn, serve(cluster, endpoints))

    return report


_TASKS: set[asyncio.Task[None]] = set()
"""Running forwarded reports (asyncio keeps only weak references to tasks)."""


def _spawn(coro: Coroutine[Any, Any, None]) -> None:
    task = asyncio.ensure_future(coro)
    _TASKS.add(task)
    task.add_done_callback(_TASKS.discard)


def _nacks(nacked: Mapping[str, str]) -> str:
    return "; ".join(f"{node}: {msg}" for node, msg in sorted(nacked.items()))
