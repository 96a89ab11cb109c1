"""Open-loop user load for ``parity_throughput.py``'s Envoy part (run as a script).

    python3 benchmarks/_mirror_load.py --port P --rate 400 --requests 4000 [--warmup 400]

Sends ``GET {--path}/{i % 1000}`` (HTTP/1.1 keep-alive, prebuilt bytes) to 127.0.0.1:P at a
fixed rate: request ``i`` is due at ``start + i / rate`` whatever happened to the earlier
ones (open loop, as wrk2 does), so a slower server meets the same offered load instead of
being sent less. A request goes out on an idle connection of a pool opened before the
clock starts (``--connections``); when every one is busy a new connection is opened (and
counted), never waited for.

Per measured request (the first ``--warmup`` are sent but not reported) it records, in
microseconds: ``latency_us``, from the moment its bytes were written until the last byte of
the reply was read (what a user waits for Envoy and the upstream), and ``lag_us``, how late
the write was against its due time (the load generator's own delay: if it grows, the
machine could not keep the rate and the figures say so). Failed requests are left out of both
lists and counted in ``errors``. One JSON line on stdout at the end:
``{"event": "done", "latency_us": [...], "lag_us": [...], "statuses": {...}, "errors": N,
"opened": N, "elapsed_s": S}`` (lists in send order). Replies without ``content-length``
count as errors.

``--arm-header NAME`` (the paired design): each request carries ``NAME: twin`` or
``NAME: route`` at random, even odds, drawn with ``--seed``; the JSON line then also holds
``twin`` (per measured request, 1 for ``twin``) and ``sent`` (requests sent per arm).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time
from collections import Counter

ITEMS = 1000


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def exchange(self, request: bytes) -> tuple[int, float]:
        """Send one request, read its reply; (status, write instant in perf_counter s)."""
        sent = time.perf_counter()
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        length = -1
        for line in head.split(b"\r\n")[1:]:
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        if length < 0:
            raise ValueError("a reply without content-length")
        if length:
            await self.reader.readexactly(length)
        return int(head[9:12]), sent


def _request(path: str, item: int, arm_header: str, arm: str) -> bytes:
    extra = f"{arm_header}: {arm}\r\n" if arm_header else ""
    return (
        f"GET {path}/{item} HTTP/1.1\r\nhost: shop.test\r\nuser-agent: bench/1.0\r\n{extra}\r\n"
    ).encode()


async def run(
    port: int,
    rate: float,
    requests: int,
    warmup: int,
    path: str,
    connections: int,
    arm_header: str = "",
    seed: int = 0,
) -> dict[str, object]:
    """Send ``warmup + requests`` GETs at ``rate`` per second; the figures of the docstring.

    With ``arm_header``, each request carries ``arm_header: twin`` or ``arm_header: route``,
    drawn at random (``seed``) with even odds: the paired design's two arms, interleaved
    request by request; ``twin`` (1 per measured request, in send order) says which.
    """
    draw = random.Random(seed)
    twin = [bool(arm_header) and draw.random() < 0.5 for _ in range(warmup + requests)]
    prebuilt = {
        flag: [_request(path, i, arm_header, "twin" if flag else "route") for i in range(ITEMS)]
        for flag in (False, True)
    }
    idle = [
        _Connection(*await asyncio.open_connection("127.0.0.1", port)) for _ in range(connections)
    ]
    opened = 0
    total = warmup + requests
    latency = [-1] * total  # -1: failed (left out of the figures)
    lag = [-1] * total
    statuses: Counter[int] = Counter()
    errors = 0

    async def one(i: int, due: float) -> None:
        nonlocal opened, errors
        if idle:
            conn = idle.pop()
        else:
            conn = _Connection(*await asyncio.open_connection("127.0.0.1", port))
            opened += 1
        try:
            status, sent = await conn.exchange(prebuilt[twin[i]][i % ITEMS])
        except (OSError, ValueError, asyncio.IncompleteReadError):
            errors += 1
            conn.writer.close()
            return
        done = time.perf_counter()
        latency[i] = round((done - sent) * 1e6)
        lag[i] = round((sent - due) * 1e6)
        statuses[status] += 1
        idle.append(conn)

    tasks: set[asyncio.Task[None]] = set()
    start = time.perf_counter() + 0.05
    for i in range(total):
        due = start + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(one(i, due))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    if tasks:
        await asyncio.wait(tasks, timeout=30)
    elapsed = time.perf_counter() - start
    for conn in idle:
        conn.writer.close()
    kept = [i for i in range(warmup, total) if latency[i] >= 0]
    return {
        "event": "done",
        "latency_us": [latency[i] for i in kept],
        "lag_us": [lag[i] for i in kept],
        "twin": [int(twin[i]) for i in kept],
        # Every request sent (warm-up included) by arm, failed ones too.
        "sent": {"twin": sum(twin), "route": total - sum(twin)},
        "statuses": {str(k): v for k, v in statuses.items()},
        "errors": errors,
        "opened": opened,
        "elapsed_s": round(elapsed, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--rate", type=float, default=400.0, help="requests per second")
    parser.add_argument("--requests", type=int, default=4000, help="measured requests")
    parser.add_argument("--warmup", type=int, default=0, help="requests sent first, unreported")
    parser.add_argument("--path", default="/api/comments/items")
    parser.add_argument("--connections", type=int, default=16, help="opened before starting")
    parser.add_argument("--arm-header", default="", help="paired design: the arm's header")
    parser.add_argument("--seed", type=int, default=0, help="paired design: the arms' draw")
    args = parser.parse_args()
    figures = asyncio.run(
        run(
            args.port,
            args.rate,
            args.requests,
            args.warmup,
            args.path,
            args.connections,
            args.arm_header,
            args.seed,
        )
    )
    print(json.dumps(figures), flush=True)


if __name__ == "__main__":
    main()
