"""Webhook notifications: rollout events POSTed to URLs, never in the rollout's way.

The reconciler hands every stored transition to :meth:`Notifier.on_events`, which only puts the
notifications (:func:`controller.rollout.notifications.notifications`) in a bounded queue: when
it is full, the oldest is dropped with a warning, so a receiver that is down costs memory for
at most ``queue_size`` events and never a rollout's progress. One worker task POSTs them in
order to every URL, each POST retried with tenacity (exponential backoff, a few attempts, an
overall deadline) on connection errors, timeouts and the answers worth retrying (408, 429,
5xx); any other answer is final.

A webhook URL can be a secret (a Slack incoming webhook's path is its credential): logs name
its scheme and host only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from urllib.parse import urlsplit

import aiohttp
from tenacity import (
    AsyncRetrying,
    RetryError,
    retry_if_exception_type,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential,
)

from controller.rollout.actions import RecordEvent
from controller.rollout.notifications import FORMATS, Notification, NotifyFormat, render
from controller.rollout.notifications import notifications as derive
from controller.store.rollouts import StoredRollout

log = logging.getLogger(__name__)

RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
"""HTTP statuses after which a POST is tried again (RFC 9110: timeouts, overload, gateway
errors); any other status is the receiver's final answer."""


class RetryableStatusError(Exception):
    """The receiver answered a status in :data:`RETRY_STATUSES`."""

    def __init__(self, status: int) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status


def check_url(url: str) -> str:
    """``url`` if it is an absolute http(s) URL with a host.

    Raises:
        ValueError: it is not (the message names the URL's redacted form).
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) URL with a host: {redact(url)}")
    return url


def redact(url: str) -> str:
    """``https://hooks.slack.com/...``: the scheme and host of ``url``, not its path or query
    (where webhook credentials live)."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}/..."


class Notifier:
    """Delivers rollout notifications to webhooks in the background.

    Args:
        urls: the webhook URLs (http or https); every notification goes to each.
        fmt: the payload format (``json`` or ``slack``, :data:`FORMATS`).
        queue_size: notifications kept while the receivers are slow; beyond, the oldest go.
        attempts: POSTs per notification and URL, at most.
        deadline_s: seconds per notification and URL, all attempts and waits included.
        timeout_s: seconds one POST may take (connection to last byte).
        backoff_s: the first wait between attempts (seconds), doubling up to ``backoff_max_s``.

    Raises:
        ValueError: a URL that is not http(s), an unknown format, a size or count below 1.
    """

    def __init__(
        self,
        urls: Sequence[str],
        fmt: NotifyFormat = "json",
        *,
        queue_size: int = 256,
        attempts: int = 5,
        deadline_s: float = 30.0,
        timeout_s: float = 5.0,
        backoff_s: float = 0.5,
        backoff_max_s: float = 8.0,
    ) -> None:
        if fmt not in FORMATS:
            raise ValueError(f"unknown notification format {fmt!r}; known: {', '.join(FORMATS)}")
        if queue_size < 1 or attempts < 1:
            raise ValueError("queue_size and attempts must be at least 1")
        self.urls = [check_url(u) for u in urls]
        self.fmt = fmt
        self.delivered = 0
        """POSTs a receiver accepted (2xx)."""
        self.failed = 0
        """POSTs given up on (final answer, or attempts or deadline exhausted)."""
        self.dropped = 0
        """Notifications dropped from a full queue."""
        self._queue: asyncio.Queue[Notification] = asyncio.Queue(queue_size)
        self._attempts = attempts
        self._deadline_s = deadline_s
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._backoff_s = backoff_s
        self._backoff_max_s = backoff_max_s
        self._session: aiohttp.ClientSession | None = None
        self._worker: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start the worker (on the running event loop)."""
        self._session = aiohttp.ClientSession(timeout=self._timeout)
        self._worker = asyncio.create_task(self._work(), name="notifier")

    async def stop(self, grace_s: float = 3.0) -> None:
        """Deliver what is queued for up to ``grace_s`` seconds, then stop the worker and drop
        the rest (logged)."""
        if self._worker is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._queue.join(), grace_s)
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
            self._worker = None
        if not self._queue.empty():
            log.warning("%d notification(s) not delivered at shutdown", self._queue.qsize())
        if self._session is not None:
            await self._session.close()
            self._session = None

    def on_events(self, stored: StoredRollout, events: tuple[RecordEvent, ...]) -> None:
        """The reconciler's hook (:class:`controller.runtime.reconciler.Reconciler`
        ``on_events``): queue what ``events`` tell people; returns at once."""
        for event in events:
            for n in derive(stored.name, stored.state, stored.policy, event):
                self.enqueue(n)

    def enqueue(self, notification: Notification) -> None:
        """Queue ``notification``; when the queue is full, drop the oldest (a warning)."""
        while True:
            try:
                self._queue.put_nowait(notification)
                return
            except asyncio.QueueFull:
                old = self._queue.get_nowait()
                self._queue.task_done()
                self.dropped += 1
                log.warning(
                    "notification queue full: dropped %s of rollout %s (receivers too slow?)",
                    old.event,
                    old.rollout,
                )

    async def _work(self) -> None:
        while True:
            notification = await self._queue.get()
            try:
                body = render(notification, self.fmt)
                for url in self.urls:
                    await self._deliver(url, body, notification)
            except asyncio.CancelledError:
                raise
            except Exception:  # one bad notification must not end the worker
                log.exception("cannot deliver notification %s", notification.event)
            finally:
                self._queue.task_done()

    async def _deliver(self, url: str, body: dict[str, object], n: Notification) -> None:
        status = 0
        try:
            async with asyncio.timeout(self._deadline_s):
                async for attempt in AsyncRetrying(
                    stop=stop_after_attempt(self._attempts) | stop_after_delay(self._deadline_s),
                    wait=wait_exponential(multiplier=self._backoff_s, max=self._backoff_max_s),
                    retry=retry_if_exception_type(
                        (aiohttp.ClientError, TimeoutError, RetryableStatusError)
                    ),
                ):
                    with attempt:
                        status = await self._post(url, body)
        except (RetryError, TimeoutError) as exc:
            self.failed += 1
            cause = exc.last_attempt.exception() if isinstance(exc, RetryError) else None
            log.warning(
                "notification %s of rollout %s to %s not delivered: %s",
                n.event,
                n.rollout,
                redact(url),
                cause or f"no answer within {self._deadline_s:g}s",
            )
            return
        if 200 <= status < 300:
            self.delivered += 1
            return
        self.failed += 1
        log.warning(
            "notification %s of rollout %s refused by %s: HTTP %d",
            n.event,
            n.rollout,
            redact(url),
            status,
        )

    async def _post(self, url: str, body: dict[str, object]) -> int:
        """POST ``body`` as JSON; the status, or :class:`RetryableStatusError` for a retry."""
        assert self._session is not None, "start() first"
        async with self._session.post(url, json=body) as response:
            await response.read()
            if response.status in RETRY_STATUSES:
                raise RetryableStatusError(response.status)
            return response.status
