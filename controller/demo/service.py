"""The demo's sample service: a small comments JSON API, run once as the baseline (the legacy
service) and once as the candidate (its rewrite).

    python -m controller.demo.service NAME [--median-ms M] [--sigma S] [--error-rate E]
                                           [--write-error-rate W] [--mismatch-share P]
                                           [--port N]

Binds 127.0.0.1 (port 0: any free port), prints ``{"event": "ready", "name": NAME,
"port": N}`` on stdout, and stops on SIGTERM or SIGINT.

- ``GET /api/comments/{id}``: one comment::

      {"id": 42, "post_id": 7, "author": {"handle": "ada", "display_name": "Ada Lovelace"},
       "body": "...", "likes": 12, "created_at": "2026-03-14T09:26:53Z",
       "meta": {"request_id": "<uuid4>", "served_at": <epoch seconds>}}

  The content depends only on the id, so the baseline and the candidate agree on it;
  ``meta`` differs on every reply (volatile fields, as real services have).
- ``GET /api/comments?post=ID``: the post's comments (``{"post_id": ..., "comments": [...]}``).
- ``POST /api/comments`` (a JSON comment without ``id``): 201 and the comment with an id
  (nothing is kept: the demo's services are stateless).
- ``GET /healthz``: 200.

Every reply carries ``x-upstream: NAME``. Behaviour (:class:`controller.demo.scenarios.Behaviour`):
each reply waits a log-normal delay (median ``--median-ms`` ms, shape ``--sigma``);
``--error-rate`` of the reads and ``--write-error-rate`` of the writes are 503s;
``--mismatch-share`` of the comments show the handle as ``display_name`` (the rewrite's bug of
the parity scenario).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import signal
import time
import uuid
from typing import Any

from aiohttp import web

_FIRST = ("Ada", "Grace", "Alan", "Barbara", "Edsger", "Frances", "Donald", "Radia")
_LAST = ("Lovelace", "Hopper", "Turing", "Liskov", "Dijkstra", "Allen", "Knuth", "Perlman")
_WORDS = ("ship", "it", "looks", "good", "to", "me", "nit", "why", "not", "faster", "again")
COMMENTS_PER_POST = 5


def comment(comment_id: int) -> dict[str, Any]:
    """The comment ``comment_id`` without its volatile ``meta`` (the same on every call)."""
    rng = random.Random(comment_id)
    first, last = rng.choice(_FIRST), rng.choice(_LAST)
    created = 1_767_225_600 + rng.randrange(0, 300 * 86_400)  # in 2026
    return {
        "id": comment_id,
        "post_id": comment_id // COMMENTS_PER_POST,
        "author": {"handle": first.lower(), "display_name": f"{first} {last}"},
        "body": " ".join(rng.choice(_WORDS) for _ in range(rng.randrange(3, 12))),
        "likes": rng.randrange(0, 500),
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(created)),
    }


class Service:
    """The comments API with its behaviour (delays in milliseconds, shares as ratios 0-1)."""

    def __init__(
        self,
        name: str,
        median_ms: float,
        sigma: float,
        error_rate: float,
        write_error_rate: float,
        mismatch_share: float,
    ) -> None:
        self.name = name
        self.median_ms = median_ms
        self.sigma = sigma
        self.error_rate = error_rate
        self.write_error_rate = write_error_rate
        self.mismatch_share = mismatch_share
        self._next_id = 1_000_000

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/api/comments/{id}", self._one)
        app.router.add_get("/api/comments", self._by_post)
        app.router.add_post("/api/comments", self._create)
        return app

    def _delay_s(self) -> float:
        if self.median_ms <= 0:
            return 0.0
        return self.median_ms * math.exp(self.sigma * random.gauss(0.0, 1.0)) / 1000

    def _render(self, comment_id: int) -> dict[str, Any]:
        item = comment(comment_id)
        if self.mismatch_share > 0 and random.random() < self.mismatch_share:
            item["author"]["display_name"] = item["author"]["handle"]
        return item

    def _reply(self, body: dict[str, Any], status: int = 200) -> web.Response:
        body = {**body, "meta": {"request_id": str(uuid.uuid4()), "served_at": time.time()}}
        return web.Response(
            text=json.dumps(body),
            status=status,
            content_type="application/json",
            headers={"x-upstream": self.name},
        )

    async def _answer(
        self, body: dict[str, Any], status: int = 200, error_rate: float | None = None
    ) -> web.Response:
        await asyncio.sleep(self._delay_s())
        rate = self.error_rate if error_rate is None else error_rate
        if rate > 0 and random.random() < rate:
            return self._reply({"error": "service unavailable"}, status=503)
        return self._reply(body, status)

    async def _healthz(self, request: web.Request) -> web.Response:
        return self._reply({"status": "ok"})

    async def _one(self, request: web.Request) -> web.Response:
        try:
            comment_id = int(request.match_info["id"])
        except ValueError:
            return self._reply({"error": "the id must be an integer"}, status=400)
        return await self._answer(self._render(comment_id))

    async def _by_post(self, request: web.Request) -> web.Response:
        try:
            post = int(request.query.get("post", "0"))
        except ValueError:
            return self._reply({"error": "post must be an integer"}, status=400)
        first = post * COMMENTS_PER_POST
        items = [self._render(i) for i in range(first, first + COMMENTS_PER_POST)]
        return await self._answer({"post_id": post, "comments": items})

    async def _create(self, request: web.Request) -> web.Response:
        try:
            posted = await request.json()
        except ValueError:
            return self._reply({"error": "the body must be a JSON object"}, status=400)
        if not isinstance(posted, dict):
            return self._reply({"error": "the body must be a JSON object"}, status=400)
        self._next_id += 1
        created = {**posted, "id": self._next_id, "likes": 0}
        return await self._answer(created, 201, self.write_error_rate)


async def _serve(service: Service, port: int) -> None:
    runner = web.AppRunner(service.app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port, backlog=1024)
    await site.start()
    bound = runner.addresses[0][1]
    print(json.dumps({"event": "ready", "name": service.name, "port": bound}), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("name")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--median-ms", type=float, default=20.0)
    parser.add_argument("--sigma", type=float, default=0.5)
    parser.add_argument("--error-rate", type=float, default=0.0)
    parser.add_argument("--write-error-rate", type=float, default=0.0)
    parser.add_argument("--mismatch-share", type=float, default=0.0)
    args = parser.parse_args(argv)
    service = Service(
        args.name,
        args.median_ms,
        args.sigma,
        args.error_rate,
        args.write_error_rate,
        args.mismatch_share,
    )
    asyncio.run(_serve(service, args.port))


if __name__ == "__main__":
    main()
