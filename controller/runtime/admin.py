"""The controller's admin HTTP API (aiohttp), used by the CLI and by operators' scripts.

Routes (JSON, except /metrics):
    GET  /metrics                     the controller's Prometheus metrics (text exposition,
                                      :mod:`controller.runtime.metrics`), when given
    GET  /healthz                     liveness
    GET  /readyz                      readiness: 200 while the xDS server serves what is
                                      current; 503 {"status": "stale", "reason": ...} while
                                      this replica is fenced (:mod:`controller.runtime.fencing`)
    GET  /v1/xds/status               served versions per type, and every node's ACK/NACK state
    GET  /v1/routes                   every route's served weights
    DELETE /v1/routes/{route}/weights drop the override: serve the gateway file's weights
    POST /v1/gateway/reload           re-read the gateway file; 200, or 422 with the reason
                                      (invalid file, or Envoy NACKed it: then the previous
                                      gateway is served again)
    PUT  /v1/routes/{route}/weights   {"weights": {cluster: int}, "nodes": [..]?, "timeout_s": n?}
                                      → the ACK outcome; 200 when ACKed, 409 on NACK,
                                      504 on timeout or no node; 400/404 on bad input;
                                      503 when the weights could not be saved (nothing changed);
                                      409 when an active rollout moves the route (its weights are
                                      the rollout's: pause or abort it instead)
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from controller.runtime.metrics import ControllerMetrics
from controller.runtime.reload import GatewayReloader
from controller.store.rollouts import RolloutStore
from controller.xds.cache import SnapshotCache
from controller.xds.typeurls import PUSH_ORDER, short_name
from controller.xds.weights import PersistError, WeightChange, WeightController


class WeightRequest(BaseModel):
    """Body of ``PUT /v1/routes/{route}/weights``."""

    model_config = ConfigDict(extra="forbid")

    weights: dict[str, int] = Field(min_length=1)
    nodes: list[str] | None = None
    timeout_s: float = Field(default=10.0, gt=0, le=600)


class ResetRequest(BaseModel):
    """Query of ``DELETE /v1/routes/{route}/weights``."""

    model_config = ConfigDict(extra="forbid")

    timeout_s: float = Field(default=10.0, gt=0, le=600)


_STATUS = {"acked": 200, "nacked": 409, "superseded": 409, "timeout": 504, "no_nodes": 504}


def change_to_json(change: WeightChange) -> dict[str, Any]:
    """JSON form of a weight change and its ACK outcome."""
    ack = change.ack
    return {
        "route": change.route,
        "weights": change.weights,
        "outcome": ack.outcome,
        "type": short_name(ack.type_url),
        "version": ack.version,
        "acked": list(ack.acked),
        "nacked": ack.nacked,
        "pending": list(ack.pending),
        "disconnected": list(ack.disconnected),
        "elapsed_ms": round(ack.elapsed_s * 1000, 1),
        "reverted": change.reverted,
    }


def status_json(cache: SnapshotCache, reloader: GatewayReloader | None = None) -> dict[str, Any]:
    """Served versions, the gateway and node states (``sluice xds status -o json``)."""
    snapshot = cache.snapshot
    return {
        "versions": {short_name(t): snapshot.version(t) for t in PUSH_ORDER},
        "snapshot": snapshot.label,
        "gateway": reloader.to_json() if reloader is not None else None,
        "nodes": [n.to_json() for n in cache.nodes()],
    }


def make_app(
    cache: SnapshotCache,
    weights: WeightController,
    reloader: GatewayReloader | None = None,
    rollouts: RolloutStore | None = None,
    metrics: ControllerMetrics | None = None,
    stale: Callable[[], str | None] | None = None,
) -> web.Application:
    """The admin application over the running controller's cache, weights and gateway; with
    ``rollouts``, manual weight changes of a route under an active rollout are refused; with
    ``metrics``, ``GET /metrics`` serves its registry (and manual changes are observed); with
    ``stale`` (why this replica is stale, or None when it is current:
    :meth:`controller.runtime.fencing.Fence.reason`), ``GET /readyz`` answers 503 while it
    gives a reason (``/healthz`` stays 200)."""
    app = web.Application()

    async def owned(route: str) -> web.Response | None:
        if rollouts is None:
            return None
        active = await asyncio.to_thread(rollouts.list, True)
        owner = next((r for r in active if r.route == route), None)
        if owner is None:
            return None
        error = (
            f"route {route!r} is moved by rollout {owner.name!r} ({owner.state.phase}); "
            f"its weights are the rollout's: use sluice rollout pause/abort {owner.name}"
        )
        return web.json_response({"error": error}, status=409)

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(_: web.Request) -> web.Response:
        reason = stale() if stale is not None else None
        if reason is not None:
            return web.json_response({"status": "stale", "reason": reason}, status=503)
        return web.json_response({"status": "ok"})

    async def xds_status(_: web.Request) -> web.Response:
        return web.json_response(status_json(cache, reloader))

    async def routes(_: web.Request) -> web.Response:
        return web.json_response({"routes": weights.current()})

    def unknown(route: str) -> web.Response | None:
        if route in weights.gateway.routes():
            return None
        return web.json_response({"error": f"unknown route {route!r}"}, status=404)

    async def change(
        route: str, asked: dict[str, int] | None, nodes: list[str] | None, timeout_s: float
    ) -> web.Response:
        try:
            done = await weights.set_weights(route, asked, nodes=nodes, timeout_s=timeout_s)
        except ValueError as exc:
            return web.json_response({"error": str(exc)}, status=400)
        except PersistError as exc:
            return web.json_response({"error": f"{exc}; nothing changed"}, status=503)
        if metrics is not None:
            metrics.push(done)
        body = change_to_json(done)
        body["weights"] = weights.current().get(route, {}) if asked is None else done.weights
        return web.json_response(body, status=_STATUS[done.ack.outcome])

    async def set_weights(request: web.Request) -> web.Response:
        if (refused := unknown(request.match_info["route"])) is not None:
            return refused
        try:
            body = WeightRequest.model_validate_json(await request.read())
        except ValidationError as exc:
            return web.json_response({"error": str(exc)}, status=400)
        if (refused := await owned(request.match_info["route"])) is not None:
            return refused
        return await change(request.match_info["route"], body.weights, body.nodes, body.timeout_s)

    async def reset_weights(request: web.Request) -> web.Response:
        if (refused := unknown(request.match_info["route"])) is not None:
            return refused
        try:
            query = ResetRequest.model_validate(dict(request.query))
        except ValidationError as exc:
            return web.json_response({"error": str(exc)}, status=400)
        if (refused := await owned(request.match_info["route"])) is not None:
            return refused
        return await change(request.match_info["route"], None, None, query.timeout_s)

    async def reload_gateway(_: web.Request) -> web.Response:
        if reloader is None or not await reloader.reload():
            error = reloader.last_error if reloader is not None else "reload not available"
            return web.json_response({"reloaded": False, "error": error}, status=422)
        return web.json_response({"reloaded": True, **reloader.to_json()})

    async def exposition(_: web.Request) -> web.Response:
        assert metrics is not None
        await metrics.refresh()  # the store is listed off the event loop, the rest read on it
        body = generate_latest(metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    if metrics is not None:
        app.router.add_get("/metrics", exposition)
    app.router.add_get("/healthz", healthz)
    app.router.add_delete("/v1/routes/{route}/weights", reset_weights)
    app.router.add_post("/v1/gateway/reload", reload_gateway)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/v1/xds/status", xds_status)
    app.router.add_get("/v1/routes", routes)
    app.router.add_put("/v1/routes/{route}/weights", set_weights)
    return app
