"""The comparator: receives the requests Envoy mirrors, sends each to the baseline (primary:
the baseline cluster, or the replica the policy's ``parity.primary`` names), an optional
second baseline replica (secondary) and the candidate, and tallies how their replies compare
(tap-compare; design section 8).

Per mirrored request (Envoy's ``RequestMirrorPolicy`` adds ``x-sluice-parity-route: <route>``):

1. No route header, or a route not under comparison: answered 404 at once, counted only in
   ``sluice_parity_unrouted_total``.
2. Answered 202 at once (Envoy ignores the mirror's reply; answering early frees its
   connection), then compared in the background.
3. The method decides what is sent where (never a write to a production datastore):

   * a safe method (GET, HEAD: RFC 9110 section 9.2.1) listed in the policy's ``methods``:
     primary, secondary (when set) and candidate, concurrently; compared;
   * any other listed method with a ``sister``: the candidate's sister and, when set, the
     baseline's sister, whose replies are compared (the secondary is not used: it may write
     to production). Without a baseline sister the outcome is ``exercised``: the write reached
     the candidate's sister and it answered; nothing was compared;
   * otherwise ``skipped``: forwarded to no one.

4. Beyond ``max_in_flight`` comparisons under way the request is ``dropped`` (not forwarded).
5. A target that gives no reply (unreachable, reset, slower than the policy's ``timeout``, not
   HTTP, a body over ``max_body_bytes``):

   * the primary (the baseline): the request is an ``error``, not compared (nothing to
     compare the candidate with);
   * the candidate, when the primary replied: the request is compared and ``mismatched`` at
     the field path :data:`~controller.parity.fanout.UNANSWERED` (a candidate failing on 20%
     of requests must fail parity, not vanish from it), sampled with a synthetic candidate
     reply (status 0, no headers, the failure's reason as the body); nothing is learnt from
     its secondary;
   * the secondary: the request is compared without it.
6. Classified by :func:`controller.parity.classify.classify` and recorded in the route's
   :class:`~controller.parity.tally.RouteTally`, with a redacted
   :class:`~controller.parity.samples.MismatchSample` for a mismatch.

Items 3, 5 and 6 run in :func:`controller.parity.fanout.compare_mirrored`; route state:
:mod:`controller.parity.route_state`; metrics: :mod:`controller.parity.metrics`; admin API:
:mod:`controller.parity.api`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry

from controller.parity import api
from controller.parity.fanout import MirroredRequest, compare_mirrored
from controller.parity.forward import ROUTE_HEADER, forwarded_headers
from controller.parity.http1 import DEFAULT_MAX_BODY_BYTES, Pool
from controller.parity.metrics import RouteFigures, TallyCollector
from controller.parity.route_state import RouteParity as RouteParity
from controller.parity.route_state import RouteState, route_clusters
from controller.parity.samples import redact_url
from controller.parity.tally import NO_PATHS, RouteTally
from controller.parity.targets import Targets
from controller.policy.gateway import Gateway

log = logging.getLogger(__name__)


RETIRED_ROUTES = 32
"""Routes no longer compared whose tallies stay readable (the most recent ones)."""


class Comparator:
    """The tap-compare comparator (module doc): a mirror listener, a client pool, the tallies.

    Args:
        gateway: where the clusters' endpoints are (``spec.clusters[*].endpoints``).
        clock: seconds since the epoch, for the tallies' history and samples' times.
        max_in_flight: comparisons under way at most; beyond, requests are ``dropped``. Each
            holds up to three upstream connections at once (one per target).
        max_body_bytes: a reply body's limit, bytes, as received and once decoded
            (:class:`~controller.parity.http1.Pool`); a reply over it is no reply (item 5 of
            the module doc).

    Raises:
        ValueError: ``max_in_flight`` or ``max_body_bytes`` below 1.
    """

    def __init__(
        self,
        gateway: Gateway,
        *,
        clock: Callable[[], float] = time.time,
        max_in_flight: int = 256,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    ) -> None:
        if max_in_flight < 1:
            raise ValueError(f"max_in_flight must be at least 1 (got {max_in_flight})")
        if max_body_bytes < 1:
            raise ValueError(f"max_body_bytes must be at least 1 (got {max_body_bytes})")
        self._max_body_bytes = max_body_bytes
        self._targets = Targets(gateway)
        self._clock = clock
        self._max_in_flight = max_in_flight
        self._routes: dict[str, RouteState] = {}
        self._retired: dict[str, RouteState] = {}
        self._in_flight = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._unrouted = 0
        self._pool: Pool | None = None
        self._mirror: web.AppRunner | None = None
        self._admin: web.AppRunner | None = None
        self._port = 0
        self._admin_port = 0
        self.registry = CollectorRegistry(auto_describe=False)
        """The comparator's metrics (:mod:`controller.parity.metrics`), apart from the
        process's default registry so that several comparators can live in one process."""
        self.registry.register(TallyCollector(self._figures, lambda: self._unrouted))

    # --- configuration -----------------------------------------------------------------

    def configure(self, routes: Iterable[RouteParity]) -> None:
        """Compare exactly ``routes`` from now on (live; comparisons under way finish).

        A route that stays keeps its tally and learnt noise and takes the new rules. A route
        that leaves is no longer compared, but its tally stays readable (``sluice parity
        diff`` after a rollback is when operators need it) and exported, until it comes back
        (a new rollout starts a new tally: a counter reset to Prometheus) or
        :data:`RETIRED_ROUTES` newer ones left after it.

        Raises:
            ValueError: two entries name the same route, or a cluster (baseline, candidate,
                primary, secondary, sisters) is not in the gateway (``UnknownCluster``);
                nothing changes.
        """
        wanted: dict[str, RouteParity] = {}
        for parity in routes:
            if parity.route in wanted:
                raise ValueError(f"route {parity.route!r} is listed twice")
            for cluster in route_clusters(parity):
                self._targets.check(cluster)
            wanted[parity.route] = parity
        updated: dict[str, RouteState] = {}
        for name, parity in wanted.items():
            current = self._routes.get(name)
            if current is None:
                self._retired.pop(name, None)
                updated[name] = RouteState.new(parity)
            else:
                current.configured(parity)
                updated[name] = current
        for name, route in self._routes.items():
            if name not in updated:
                self._retired.pop(name, None)
                self._retired[name] = route
        while len(self._retired) > RETIRED_ROUTES:
            del self._retired[next(iter(self._retired))]
        self._routes = updated

    def set_gateway(self, gateway: Gateway) -> None:
        """Forward to the endpoints of ``gateway`` from now on (a reloaded gateway file);
        comparisons under way finish with the endpoints they picked.

        Raises:
            UnknownCluster: a route under comparison names a cluster ``gateway`` lacks;
                nothing changes.
        """
        targets = Targets(gateway)
        for route in self._routes.values():
            for cluster in route_clusters(route.parity):
                targets.check(cluster)
        self._targets = targets

    def tally(self, route: str) -> RouteTally | None:
        """The route's tally (also of a route that left, see :meth:`configure`), or None."""
        state = self._routes.get(route) or self._retired.get(route)
        return state.tally if state is not None else None

    def routes(self) -> list[str]:
        """Names of the routes under comparison, sorted."""
        return sorted(self._routes)

    # --- listeners -----------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The mirror listener's port (0 before :meth:`start`)."""
        return self._port

    @property
    def admin_port(self) -> int:
        """The standalone admin listener's port (0 before :meth:`start_admin`)."""
        return self._admin_port

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        """Open the client pool and listen for mirrored requests on ``host:port`` (0: any).

        Raises:
            OSError: the address cannot be bound.
        """
        if self._mirror is not None:
            raise RuntimeError("the comparator is already started")
        self._pool = Pool(max_idle=self._max_in_flight, max_body_bytes=self._max_body_bytes)
        app = web.Application(client_max_size=64 * 1024**2)
        app.router.add_route("*", "/{tail:.*}", self._receive)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        try:
            await web.TCPSite(runner, host, port, backlog=1024).start()
        except OSError:
            await runner.cleanup()
            self._pool.close()
            self._pool = None
            raise
        self._mirror = runner
        self._port = _bound_port(runner, port)

    def admin_routes(self) -> list[web.RouteDef]:
        """``/metrics`` and ``/v1/parity/routes[/{route}]`` (:mod:`controller.parity.api`), to
        mount on any aiohttp application."""
        return api.admin_routes(self.registry, self.routes, self.route_json)

    async def start_admin(self, host: str = "127.0.0.1", port: int = 0) -> None:
        """Serve :meth:`admin_routes` on their own listener (standalone comparator).

        Raises:
            OSError: the address cannot be bound.
        """
        app = web.Application()
        app.router.add_routes(self.admin_routes())
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        try:
            await web.TCPSite(runner, host, port).start()
        except OSError:
            await runner.cleanup()
            raise
        self._admin = runner
        self._admin_port = _bound_port(runner, port)

    async def stop(self, grace_s: float = 5.0) -> None:
        """Stop listening, wait up to ``grace_s`` seconds for the comparisons under way (the
        rest are cancelled, unrecorded), close the client pool and the admin listener."""
        if self._mirror is not None:
            await self._mirror.cleanup()
            self._mirror = None
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=grace_s)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending)
        if self._pool is not None:
            self._pool.close()
            self._pool = None
        if self._admin is not None:
            await self._admin.cleanup()
            self._admin = None

    # --- per request ---------------------------------------------------------------------

    async def _receive(self, request: web.Request) -> web.Response:
        name = request.headers.get(ROUTE_HEADER)
        route = self._routes.get(name) if name is not None else None
        if route is None:
            self._unrouted += 1
            return web.Response(status=404, text=f"no route under comparison: {name!r}\n")
        at = self._clock()
        method = request.method
        if method in route.compared_methods:
            sister = False
        elif method in route.sister_methods:
            sister = True
        else:
            route.tally.record("skipped", NO_PATHS, NO_PATHS, at)
            return web.Response(status=202)
        if self._in_flight >= self._max_in_flight:
            route.tally.record("dropped", NO_PATHS, NO_PATHS, at)
            return web.Response(status=202)
        self._in_flight += 1  # before the read: the bound holds while bodies arrive
        try:
            body = await request.read()
        except BaseException:
            self._in_flight -= 1
            raise
        mirrored = MirroredRequest(
            method, request.raw_path, forwarded_headers(request.raw_headers), body, at, sister
        )
        task = asyncio.get_running_loop().create_task(self._compare(route, mirrored))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return web.Response(status=202)

    async def _compare(self, route: RouteState, request: MirroredRequest) -> None:
        try:
            assert self._pool is not None, "start() opens the client pool"
            await compare_mirrored(route, request, pool=self._pool, targets=self._targets)
        except Exception:  # a bug must not silence the route: count it, say why
            # The URL's query values may be secrets (tokens, e-mail addresses): redacted as in
            # samples.
            log.exception(
                "comparing %s %s on route %s failed",
                request.method,
                redact_url(request.path_qs),
                route.parity.route,
            )
            route.tally.record("error", NO_PATHS, NO_PATHS, request.at)
        finally:
            self._in_flight -= 1

    # --- reading -------------------------------------------------------------------------

    def _figures(self) -> list[RouteFigures]:
        return [
            RouteFigures(name, r.tally.counts(), r.tally.paths(), r.exercised)
            for name, r in sorted({**self._retired, **self._routes}.items())
        ]

    def route_json(self, name: str) -> dict[str, Any] | None:
        """Route ``name``'s counts, paths and samples (the shape in :mod:`controller.parity.api`),
        or None when it is not (or no longer, see :meth:`configure`) known."""
        route = self._routes.get(name) or self._retired.get(name)
        if route is None:
            return None
        parity = route.parity
        counts = route.tally.counts()
        secondary = parity.policy.secondary
        last_error = None
        if route.last_error is not None:
            at, failure = route.last_error
            last_error = {"at": at, "target": failure.target, "reason": failure.reason}
        return {
            "route": name,
            "baseline": parity.baseline,
            "candidate": parity.candidate,
            "primary": parity.policy.primary.cluster if parity.policy.primary else None,
            "secondary": secondary.cluster if secondary is not None else None,
            "counts": {**counts.to_json(), "exercised": route.exercised},
            "paths": {path: c.to_json() for path, c in sorted(route.tally.paths().items())},
            "samples": [sample.to_json() for sample in route.tally.samples()],
            "last_error": last_error,
        }


def _bound_port(runner: web.AppRunner, asked: int) -> int:
    with contextlib.suppress(IndexError, TypeError):
        return int(runner.addresses[0][1])
    return asked
