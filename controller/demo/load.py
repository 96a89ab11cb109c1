"""The demo's load generator: users of the comments API, through Envoy, at a steady rate.

Open loop: requests start on a fixed schedule (``rate`` per second) whatever the replies take,
as real users do, up to ``max_in_flight`` at once (beyond that a start is skipped and counted:
the machine cannot keep up). Of every 20 requests, 15 read one comment
(``GET /api/comments/{id}``, ids drawn from a few thousand), 2 read a post's comments
(``GET /api/comments?post=ID``) and 3 post a comment (``POST /api/comments``). What clients
received is counted per upstream (the ``x-upstream`` reply header) and per status.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import Counter, deque
from dataclasses import dataclass, field

import aiohttp

from controller.demo.scenarios import ROUTE_PREFIX

WRITE_SHARE = 0.15
"""Share (ratio) of the requests that are writes (``POST``): never mirrored for parity."""
LIST_SHARE = 0.10
"""Share (ratio) of the requests that list a post's comments."""
CATCH_UP_S = 0.1
"""How far behind its schedule the generator may fall and still send the late requests (in a
burst); beyond, those slots are dropped and counted as skipped. A longer burst would hit the
side with the larger share harder than real users do, after any pause of the machine."""
RECENT_S = 5.0
"""The window of :meth:`Load.recent`, in seconds."""


@dataclass
class LoadFigures:
    """What the clients received so far.

    Attributes:
        sent: requests started.
        by_upstream: replies per ``x-upstream`` header value (``-``: a reply without it,
            e.g. Envoy's own 503).
        by_status: replies per HTTP status code.
        transport_errors: requests that got no reply (connection refused or reset, timeout).
        skipped: scheduled requests not started: ``max_in_flight`` were in flight, or the
            generator fell more than :data:`CATCH_UP_S` behind its schedule (the machine
            paused or is too busy).
    """

    sent: int = 0
    by_upstream: Counter[str] = field(default_factory=Counter)
    by_status: Counter[int] = field(default_factory=Counter)
    transport_errors: int = 0
    skipped: int = 0

    @property
    def replies(self) -> int:
        return sum(self.by_status.values())

    @property
    def server_errors(self) -> int:
        """Replies with a 5xx status."""
        return sum(n for status, n in self.by_status.items() if status >= 500)

    def as_json(self) -> dict[str, object]:
        """The figures as JSON (status codes as strings)."""
        return {
            "sent": self.sent,
            "replies": self.replies,
            "by_upstream": dict(sorted(self.by_upstream.items())),
            "by_status": {str(k): v for k, v in sorted(self.by_status.items())},
            "server_errors": self.server_errors,
            "transport_errors": self.transport_errors,
            "skipped": self.skipped,
        }


class Load:
    """Steady traffic to ``base_url`` (``http://127.0.0.1:PORT``): ``rate`` requests per
    second, at most ``max_in_flight`` at once, each with a ``timeout_s`` second timeout."""

    def __init__(
        self, base_url: str, rate: float, max_in_flight: int = 64, timeout_s: float = 5.0
    ) -> None:
        if rate <= 0:
            raise ValueError(f"rate must be positive, got {rate}")
        self.base_url = base_url.rstrip("/")
        self.rate = rate
        self.max_in_flight = max_in_flight
        self.timeout_s = timeout_s
        self.figures = LoadFigures()
        self._recent: deque[tuple[float, str]] = deque()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start sending (in the running event loop); returns at once."""
        self._task = asyncio.create_task(self._run(), name="demo-load")

    async def stop(self) -> None:
        """Stop sending and wait for the requests in flight (each bounded by its timeout)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def recent(self, now: float | None = None) -> tuple[float, Counter[str]]:
        """Replies per second over the last :data:`RECENT_S` seconds, and their count per
        upstream in that window."""
        now = time.monotonic() if now is None else now
        while self._recent and self._recent[0][0] < now - RECENT_S:
            self._recent.popleft()
        upstreams = Counter(upstream for _, upstream in self._recent)
        return len(self._recent) / RECENT_S, upstreams

    async def _run(self) -> None:
        timeout = aiohttp.ClientTimeout(total=self.timeout_s)
        connector = aiohttp.TCPConnector(limit=self.max_in_flight)
        requests: set[asyncio.Task[None]] = set()
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
            period = 1.0 / self.rate
            next_at = time.monotonic()
            try:
                while True:
                    next_at += period
                    # The tasks not done yet, whether started or not, count as in flight.
                    if len(requests) >= self.max_in_flight:
                        self.figures.skipped += 1
                    else:
                        task = asyncio.create_task(self._one(session))
                        requests.add(task)
                        task.add_done_callback(requests.discard)
                    delay = next_at - time.monotonic()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    elif delay < -CATCH_UP_S:  # fell behind: drop the slots, do not burst
                        self.figures.skipped += int(-delay / period)
                        next_at = time.monotonic()
                    else:
                        await asyncio.sleep(0)  # let the requests started run
            finally:
                if requests:
                    await asyncio.wait(requests)

    def _request(self) -> tuple[str, str, dict[str, object] | None]:
        """``(method, path, JSON body)`` of the next request."""
        draw = random.random()
        if draw < WRITE_SHARE:
            body = {"post_id": random.randrange(0, 1000), "body": "first!", "author": "demo"}
            return "POST", ROUTE_PREFIX, body
        if draw < WRITE_SHARE + LIST_SHARE:
            return "GET", f"{ROUTE_PREFIX}?post={random.randrange(0, 1000)}", None
        return "GET", f"{ROUTE_PREFIX}/{random.randrange(0, 5000)}", None

    async def _one(self, session: aiohttp.ClientSession) -> None:
        self.figures.sent += 1
        method, path, body = self._request()
        try:
            async with session.request(method, self.base_url + path, json=body) as response:
                await response.read()
                upstream = response.headers.get("x-upstream", "-")
                self.figures.by_status[response.status] += 1
                self.figures.by_upstream[upstream] += 1
                self._recent.append((time.monotonic(), upstream))
        except (TimeoutError, aiohttp.ClientError):
            self.figures.transport_errors += 1
