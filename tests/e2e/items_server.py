"""A small JSON items API for the parity suite (run as a script, not imported by tests).

    python items_server.py NAME [--nested-diff-share P]

Binds 127.0.0.1 on a free port, prints ``{"event": "ready", "name": ..., "port": ...}`` on
stdout, then answers ``GET <any path>/<id>`` with 200 and a JSON item::

    {"id": "42", "name": "item 42", "price": 12.5, "tags": ["a", "b"],
     "owner": {"id": 7, "address": {"city": "Lyon", "zip": "69001"}},
     "meta": {"generated_at": <time.time()>, "request_id": "<uuid4>"}}

``meta.generated_at`` and ``meta.request_id`` differ in every response (volatile fields, as
real services have): two replies to the same request never match byte for byte. With
``--nested-diff-share P``, a share ``P`` of the responses (at random) says
``owner.address.city: "Paris"`` instead (a bug of the rewrite in one nested field). Other
methods answer 201 with the item. ``GET /__items/stats`` answers the requests counted by
method. Stops on SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import socket
import sys
import time
import uuid
from collections import Counter

from aiohttp import web


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("name")
    parser.add_argument("--nested-diff-share", type=float, default=0.0)
    args = parser.parse_args()
    by_method: Counter[str] = Counter()

    def item(request: web.Request) -> dict[str, object]:
        item_id = request.path.rstrip("/").rpartition("/")[2] or "0"
        city = "Paris" if random.random() < args.nested_diff_share else "Lyon"
        return {
            "id": item_id,
            "name": f"item {item_id}",
            "price": 12.5,
            "tags": ["a", "b"],
            "owner": {"id": 7, "address": {"city": city, "zip": "69001"}},
            "meta": {"generated_at": time.time(), "request_id": str(uuid.uuid4())},
        }

    async def stats(_: web.Request) -> web.Response:
        return web.json_response(dict(by_method))

    async def handle(request: web.Request) -> web.Response:
        by_method[request.method] += 1
        await request.read()
        headers = {"x-upstream": args.name}
        if request.method in ("GET", "HEAD"):
            return web.json_response(item(request), headers=headers)
        return web.json_response(item(request), status=201, headers=headers)

    app = web.Application()
    app.router.add_get("/__items/stats", stats)
    app.router.add_route("*", "/{tail:.*}", handle)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(512)
    port = sock.getsockname()[1]
    print(json.dumps({"event": "ready", "name": args.name, "port": port}), flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    web.run_app(app, sock=sock, print=None, handle_signals=False, access_log=None)


if __name__ == "__main__":
    main()
