"""A running controller: the ADS server, the admin API and the persisted weights, wired.

:func:`run` is what ``sluice serve`` executes. It prints one JSON line on stdout when both
servers listen (``{"event": "ready", "xds": "host:port", "admin": "host:port"}``) so that
scripts and tests can start it on port 0 and learn the ports.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import signal
import sqlite3
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from aiohttp import web

from controller.analysis.providers.base import MetricsProvider, make_provider
from controller.parity.comparator import Comparator
from controller.policy.gateway import Endpoint, Gateway
from controller.policy.rollout_checks import check_against_gateway
from controller.rollout.notifications import NotifyFormat
from controller.runtime.address import split_address
from controller.runtime.admin import make_app
from controller.runtime.analyzer import MetricsAnalyzer, StageAnalyzer
from controller.runtime.fencing import Fence, lease_fence
from controller.runtime.freshness import REPORT_RENEWAL, STORE_READ
from controller.runtime.metrics import ControllerMetrics
from controller.runtime.notify import Notifier
from controller.runtime.parity import LocalParitySource, follow_gateway, follow_rollouts
from controller.runtime.reconciler import Reconciler, rollout_overlay
from controller.runtime.reload import GatewayReloader, unfollowed_clusters
from controller.runtime.replicas import (
    ROLE_STOP_S,
    Leadership,
    ReplicatedWeights,
    follow_store,
    lead_or_follow,
    publish_reports,
    served_overlay,
)
from controller.store.rollouts import RolloutStore, StoreError
from controller.store.sqlite_rollouts import SqliteRolloutStore
from controller.store.weights import SqliteWeightStore
from controller.xds.cache import SnapshotCache
from controller.xds.resources import build_snapshot
from controller.xds.server import start_server
from controller.xds.weights import WeightController

if TYPE_CHECKING:
    from kubernetes.client import ApiClient

    from controller.k8s.lease import LeaseConfig
    from controller.runtime.endpoints import KubernetesEndpoints

log = logging.getLogger(__name__)


class StartupError(Exception):
    """The controller cannot start (bad persisted state, address in use...)."""


@dataclass(frozen=True)
class ServeConfig:
    """How to run the controller.

    Attributes:
        gateway: the checked gateway to serve.
        gateway_path: its file (re-read on SIGHUP), or None for the embedded default.
        xds_address: ``host:port`` of the ADS gRPC server (port 0: any free port).
        admin_address: ``host:port`` of the admin HTTP API (port 0: any free port).
        state_path: the SQLite file holding the served weights and the rollouts.
        poll_s: how often the reconciler re-reads the rollouts (operators' commands).
        metrics: the metrics provider's name (``prometheus``, ``envoy_admin``) and options,
            or None: stages are judged on bake time alone when a policy has no SLOs, and
            never pass when it has some (no evidence).
        parity_address: ``host:port`` where the in-process comparator receives the requests
            Envoy mirrors (the policies' ``parity.comparator`` cluster must point there); its
            tallies are the parity SLI. None: no comparator in this process.
        kubernetes: keep the rollouts in ``Rollout`` objects and compete for the Lease
            (:class:`KubernetesMode`); None: rollouts in ``state_path`` and this process
            drives them alone.
        notify: webhook URLs told of stage starts and passes, rollbacks and promotions
            (:mod:`controller.runtime.notify`); empty: none.
        notify_format: their payload, ``json`` or ``slack``.
    """

    gateway: Gateway
    gateway_path: Path | None
    xds_address: str
    admin_address: str
    state_path: Path
    poll_s: float = 0.25
    metrics: tuple[str, dict[str, str]] | None = None
    parity_address: str | None = None
    kubernetes: KubernetesMode | None = None
    notify: tuple[str, ...] = ()
    notify_format: NotifyFormat = "json"


@dataclass(frozen=True)
class KubernetesMode:
    """Rollouts kept in a cluster (design section 9).

    The rollouts are ``Rollout`` objects of ``namespace`` (their status holds the state);
    replicas compete for the Lease ``lease`` names, the holder drives the rollouts and the
    others serve what the store says (:mod:`controller.runtime.replicas`). ``state_path``
    still keeps weights set by hand (``sluice xds weights``).

    Attributes:
        namespace: the namespace of the Rollouts and the Lease.
        kubeconfig: a kubeconfig file; None: in-cluster, else ``$KUBECONFIG`` or
            ``~/.kube/config`` (:func:`controller.k8s.client.api_client`).
        context: the kubeconfig's context; None: its current one.
        lease: the Lease and its timing (its ``namespace`` is this one's).
    """

    namespace: str
    kubeconfig: Path | None
    context: str | None
    lease: LeaseConfig


async def run(config: ServeConfig, stop: asyncio.Event | None = None) -> None:
    """Serve until SIGINT/SIGTERM (or ``stop`` is set); SIGHUP reloads the gateway file.

    Raises:
        StartupError: the persisted weights do not fit the gateway, or an address is in use.
    """
    try:
        notifier = Notifier(config.notify, config.notify_format) if config.notify else None
    except ValueError as exc:
        raise StartupError(f"notifications: {exc}") from exc
    try:
        store = SqliteWeightStore(config.state_path)
        persisted = store.load()
    except (sqlite3.Error, ValueError, OSError) as exc:
        raise StartupError(
            f"cannot read the state file {config.state_path}: {exc}. It holds the served "
            "weights and the rollouts: restore it, or remove it to serve the gateway file's "
            "weights and forget the rollouts."
        ) from exc
    rollouts: RolloutStore
    api: ApiClient | None = None
    opened: RolloutStore | None = None  # the Kubernetes store, once built: closed on failure
    try:
        if config.kubernetes is None:
            rollouts = SqliteRolloutStore(config.state_path)
        else:
            # Imported only when used: the kubernetes client takes ~1 s to import.
            from controller.k8s.client import ClusterError, api_client
            from controller.k8s.store import KubernetesRolloutStore

            try:
                api = api_client(config.kubernetes.kubeconfig, config.kubernetes.context)
            except ClusterError as exc:
                raise StoreError(str(exc)) from exc
            # Reads come from a watch of the Rollouts (the reconciler, the followers and the
            # metrics read every poll); until its first list they GET/LIST, as this one does.
            rollouts = KubernetesRolloutStore(
                api,
                config.kubernetes.namespace,
                identity=config.kubernetes.lease.identity,
                watch=True,
            )
            opened = rollouts
        everything = rollouts.list()
    except (sqlite3.Error, ValueError, OSError, StoreError) as exc:
        store.close()
        if opened is not None:
            opened.close()  # stops its watch
        if api is not None:
            api.close()  # type: ignore[no-untyped-call]
        if config.kubernetes is not None:
            raise StartupError(
                f"cannot read the Rollouts of namespace {config.kubernetes.namespace}: {exc}. "
                "Is the CRD installed (deploy/crd.yaml), and may this identity list "
                "rollouts.sluice.dev there (deploy/rbac.yaml)?"
            ) from exc
        raise StartupError(
            f"cannot read the state file {config.state_path}: {exc}. It holds the served "
            "weights and the rollouts: restore it, or remove it to serve the gateway file's "
            "weights and forget the rollouts."
        ) from exc
    active = [r for r in everything if r.active]

    kube_endpoints: KubernetesEndpoints | None = None

    def close_state() -> None:
        if kube_endpoints is not None:
            kube_endpoints.stop()
        store.close()
        rollouts.close()
        if api is not None:
            api.close()  # type: ignore[no-untyped-call]

    live: dict[str, tuple[Endpoint, ...]] = {}
    if config.kubernetes is not None:
        from controller.runtime.endpoints import KubernetesEndpoints

        assert api is not None
        kube_endpoints = KubernetesEndpoints(api, config.kubernetes.namespace)
        live = await kube_endpoints.start(config.gateway)
    elif (unfollowed := unfollowed_clusters(config.gateway)) is not None:
        await asyncio.to_thread(close_state)
        raise StartupError(unfollowed)
    provider: MetricsProvider | None = None
    analyzer: StageAnalyzer | None = None
    comparator = Comparator(config.gateway) if config.parity_address is not None else None
    parity = LocalParitySource(comparator) if comparator is not None else None
    if config.metrics is not None:
        # Imported only when used: prometheus-api-client pulls in pandas (~15 MB resident).
        from controller.analysis.providers import PROVIDERS

        name, options = config.metrics
        try:
            provider = make_provider(name, options, PROVIDERS)
        except ValueError as exc:  # unknown provider, or options it refuses
            await asyncio.to_thread(close_state)
            raise StartupError(f"metrics provider {name}: {exc}") from exc
        starter = getattr(provider, "start", None)
        if starter is not None:
            try:
                await starter()
            except Exception as exc:
                await asyncio.to_thread(close_state)
                raise StartupError(f"metrics provider {name} cannot start: {exc}") from exc
        analyzer = MetricsAnalyzer(provider, parity=parity)
        log.info("judging stages with the %s metrics provider (%s)", name, options)
    else:
        log.info("no metrics provider: policies without SLOs bake only; with SLOs they hold")
    # An active rollout's route serves the rollout's weights from the first snapshot on: the
    # state says what Envoy has (or is being sent), whatever a crash left in route_weights.
    # A rollout whose route or clusters left the gateway is not overlaid (its weights, saved
    # with every push, then make build_snapshot refuse to start below, naming the problem).
    # With replicas, ended rollouts count too: a fresh pod has no other record of what they
    # left on their routes (served_overlay).
    overlay = (rollout_overlay if config.kubernetes is None else served_overlay)(
        r
        for r in (active if config.kubernetes is None else everything)
        if not check_against_gateway(r.policy, config.gateway)
    )
    persisted.update(overlay.weights)
    try:
        first = build_snapshot(
            config.gateway, persisted, label="start", options=overlay.options, endpoints=live
        )
    except ValueError as exc:
        await asyncio.to_thread(close_state)
        if provider is not None:
            await provider.close()
        raise StartupError(
            f"the weights persisted in {config.state_path} do not fit the gateway: {exc}. "
            "Refusing to serve a default in their place; fix the gateway or remove the state file."
        ) from exc
    # Replicas report no leadership until the elector says so (below).
    metrics = ControllerMetrics(rollouts, leading=lambda: config.kubernetes is None)
    cache = SnapshotCache(first, on_nack=metrics.nack)
    metrics.cache = cache
    weights = WeightController(
        config.gateway,
        cache,
        persisted,
        persist=store.put,
        options=overlay.options,
        endpoints=live,
    )
    if kube_endpoints is not None:
        kube_endpoints.serve(weights)
    if persisted:
        log.info("serving persisted weights: %s", persisted)
    for rollout in active:
        log.info(
            "resuming rollout %s (%s, stage %d)",
            rollout.name,
            rollout.state.phase,
            rollout.state.stage + 1,
        )

    try:
        server, xds_port = await start_server(cache, config.xds_address)
    except RuntimeError as exc:
        await asyncio.to_thread(close_state)
        if provider is not None:
            await provider.close()
        raise StartupError(str(exc)) from exc
    admin_host, admin_port = split_address(config.admin_address)
    reloader = GatewayReloader(
        config.gateway_path,
        weights,
        on_loaded=follow_gateway(comparator) if comparator is not None else None,
        endpoints=kube_endpoints,
    )
    fence: Fence | None = None
    if config.kubernetes is not None:
        # A replica cut off from the API server fences itself before the leader stops
        # counting its report (controller.runtime.fencing).
        lease = config.kubernetes.lease
        fence = lease_fence(
            cache.close_streams, lease.renew_deadline_s, lease.lease_duration_s, config.poll_s
        )
        metrics.stale = fence.stale
    app = make_app(
        cache,
        weights,
        reloader,
        rollouts,
        metrics,
        stale=fence.reason if fence is not None else None,
    )
    if comparator is not None:
        # `sluice parity diff` asks the controller's admin API, as it would a standalone
        # comparator's.
        # Its metrics join the controller's: one /metrics serves both.
        app.router.add_routes(r for r in comparator.admin_routes() if r.path != "/metrics")
        metrics.join(comparator.registry)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, admin_host, admin_port)

    async def abandon() -> None:
        """Release what started so far (a later listener could not bind)."""
        await server.stop(None)
        await runner.cleanup()
        await asyncio.to_thread(close_state)
        if provider is not None:
            await provider.close()

    try:
        await site.start()
    except OSError as exc:
        await abandon()
        raise StartupError(f"cannot bind the admin API to {config.admin_address}: {exc}") from exc
    bound_admin = runner.addresses[0][1] if runner.addresses else admin_port
    parity_line: dict[str, str] = {}
    if comparator is not None and config.parity_address is not None:
        parity_host, parity_port = split_address(config.parity_address)
        try:
            await comparator.start(parity_host, parity_port)
        except OSError as exc:
            await abandon()
            raise StartupError(
                f"cannot bind the comparator to {config.parity_address}: {exc}"
            ) from exc
        parity_line["parity"] = f"{parity_host}:{comparator.port}"
    # Everything alive now (imported modules, envoy-data-plane's classes, the first snapshot)
    # lives as long as the process: keep it out of every future collection, whose full passes
    # otherwise walked ~86,000 objects and paused pushes by 100+ ms at 1,000 streams.
    gc.collect()
    gc.freeze()
    # A push to N streams allocates a few objects per stream that die young; collecting the
    # youngest generation every 700 allocations (the default) cost 12-27% of a push's CPU at
    # 1,000 streams. Every 20,000 bounds cyclic garbage to a few MB.
    gc.set_threshold(20_000, 20, 20)
    xds_host, _ = split_address(config.xds_address)
    print(
        json.dumps(
            {
                "event": "ready",
                "xds": f"{xds_host}:{xds_port}",
                "admin": f"{admin_host}:{bound_admin}",
                "state": str(config.state_path),
                **parity_line,
            }
        ),
        flush=True,
    )
    log.info(
        "serving %d listeners, %d routes, %d clusters over ADS on %s:%d (SotW and Delta); "
        "admin API on http://%s:%d. Point an Envoy at it: "
        "sluice xds bootstrap --xds %s:%d > bootstrap.yaml && envoy -c bootstrap.yaml",
        len(config.gateway.spec.listeners),
        len(config.gateway.routes()),
        len(config.gateway.spec.clusters),
        xds_host,
        xds_port,
        admin_host,
        bound_admin,
        xds_host,
        xds_port,
    )

    reloads: set[asyncio.Task[bool]] = set()  # strong references until they finish

    def schedule_reload() -> None:
        task = loop.create_task(reloader.reload())
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    with contextlib.suppress(NotImplementedError, RuntimeError):
        loop.add_signal_handler(signal.SIGHUP, schedule_reload)
    electing: asyncio.Task[None] | None = None
    reporting: asyncio.Task[None] | None = None
    fencing: asyncio.Task[None] | None = None
    if notifier is not None:
        await notifier.start()
    on_events = notifier.on_events if notifier is not None else None
    if config.kubernetes is None:
        reconciler = Reconciler(
            rollouts,
            weights,
            analyzer=analyzer,
            poll_s=config.poll_s,
            metrics=metrics,
            on_events=on_events,
        )
        reconciling = loop.create_task(reconciler.run(stop), name="reconciler")
    else:
        from controller.k8s.leader import LeaderElector
        from controller.k8s.replica_reports import ReplicaReports

        assert api is not None
        assert fence is not None
        lease = config.kubernetes.lease
        on_read = fence.outcome(STORE_READ)
        reports = ReplicaReports(api, config.kubernetes.namespace, lease.identity)
        leadership = Leadership()
        metrics.leading = lambda: leadership.leading
        elector = LeaderElector(
            api,
            config.kubernetes.lease,
            on_started=leadership.started,
            on_stopped=leadership.stopped,
        )
        # Envoys connected to the followers count for the leader's pushes; the elector's own
        # clock fences every push and write (a leader past its renew deadline stops at once).
        reconciler = Reconciler(
            rollouts,
            ReplicatedWeights(weights, reports.others),
            analyzer=analyzer,
            poll_s=config.poll_s,
            metrics=metrics,
            on_events=on_events,
            may_act=lambda: elector.is_leader,
        )
        reporting = loop.create_task(
            publish_reports(
                reports.publish,
                lease.identity,
                cache,
                weights,
                stop,
                lease.lease_duration_s,
                on_publish=fence.outcome(REPORT_RENEWAL),
                # Renewed at least twice within the fence's limit.
                renew_s=min(lease.lease_duration_s / 3, fence.max_age_s / 2),
            ),
            name="replica report",
        )
        fencing = loop.create_task(fence.run(stop, config.poll_s), name="fence")

        async def follow(role_stop: asyncio.Event) -> None:
            await follow_store(rollouts, weights, role_stop, config.poll_s, on_read=on_read)

        async def lead(role_stop: asyncio.Event) -> None:
            await asyncio.gather(
                reconciler.run(role_stop),
                follow_store(
                    rollouts, weights, role_stop, config.poll_s, idle_only=True, on_read=on_read
                ),
            )

        reconciling = loop.create_task(
            lead_or_follow(leadership, lead, follow, stop), name="lead or follow"
        )
        electing = loop.create_task(elector.run(stop), name="leader election")
    following = (
        loop.create_task(
            follow_rollouts(comparator, rollouts, stop, config.poll_s), name="parity-routes"
        )
        if comparator is not None
        else None
    )
    try:
        await stop.wait()
    finally:
        log.info("stopping")
        if electing is not None and config.kubernetes is not None:
            # The elector stops the lead role, then releases the Lease: another replica
            # leads at once instead of after the lease duration.
            budget = config.kubernetes.lease.renew_deadline_s + ROLE_STOP_S
            try:
                await asyncio.wait_for(electing, budget)
            except Exception:  # the rest of the shutdown must run whatever happened there
                log.exception("the leader election did not end cleanly")
        reconciling.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reconciling
        if notifier is not None:
            await notifier.stop()  # after the reconciler: its last events are queued
        for side in (reporting, fencing):
            if side is not None:
                side.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await side
        if following is not None:
            following.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await following
        if comparator is not None:
            await comparator.stop()
        if provider is not None:
            await provider.close()
        for task in reloads:
            task.cancel()
        await runner.cleanup()
        await server.stop(grace=1.0)
        # The store is closed last: a weight change may still be saving in a worker thread.
        await asyncio.to_thread(close_state)
        print(json.dumps({"event": "stopped"}), file=sys.stderr, flush=True)
