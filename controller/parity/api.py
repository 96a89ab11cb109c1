"""The comparator's admin HTTP API (aiohttp route definitions, mountable on any admin app).

* ``GET /metrics``: the Prometheus text exposition of the comparator's registry.
* ``GET /v1/parity/routes``: ``{"routes": [<route>, ...]}`` for every route under comparison.
* ``GET /v1/parity/routes/{route}``: one ``<route>`` object, or 404 ``{"error": ...}``.

A ``<route>`` object::

    {"route": "comments", "baseline": "comments-python", "candidate": "comments-go",
     "primary": "comments-python-parity" | null, "secondary": "comments-python-2" | null,
     "counts": {"matched": 0, "noisy": 0, "mismatched": 0, "errors": 0, "skipped": 0,
                "dropped": 0, "exercised": 0, "compared": 0},
     "paths": {"/items/*/price": {"mismatched": 3, "noisy": 0},
               ":unanswered": {"mismatched": 1, "noisy": 0}, ...},
     "samples": [MismatchSample.to_json(), ...],      # newest last
     "last_error": {"at": 1.7e9, "target": "http://...", "reason": "..."} | null}

``paths`` holds every path the tally keeps (``/metrics`` exports only the top ones per route,
see :mod:`controller.parity.metrics`); ``:unanswered`` counts candidates that gave no reply
where the baseline did (:mod:`controller.parity.comparator`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

RouteJson = Callable[[str], dict[str, Any] | None]


def admin_routes(
    registry: CollectorRegistry, names: Callable[[], list[str]], route_json: RouteJson
) -> list[web.RouteDef]:
    """Route definitions of the API above.

    Args:
        registry: what ``/metrics`` exposes.
        names: the routes under comparison, sorted.
        route_json: one route's object (module doc), or None when it is not under comparison.
    """

    async def metrics(_request: web.Request) -> web.Response:
        body = generate_latest(registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def list_routes(_request: web.Request) -> web.Response:
        routes = [data for name in names() if (data := route_json(name)) is not None]
        return web.json_response({"routes": routes})

    async def one_route(request: web.Request) -> web.Response:
        name = request.match_info["route"]
        data = route_json(name)
        if data is None:
            known = ", ".join(names()) or "none"
            return web.json_response(
                {"error": f"route {name!r} is not under comparison (routes: {known})"},
                status=404,
            )
        return web.json_response(data)

    return [
        web.get("/metrics", metrics),
        web.get("/v1/parity/routes", list_routes),
        web.get("/v1/parity/routes/{route}", one_route),
    ]
