"""Mismatch samples: one mirrored request and the replies that disagreed, kept so that an
operator can see an example of each difference (``sluice parity diff``).

Secrets never stay in memory: the headers named in the policy's ``redact`` list are replaced
by :data:`REDACTED` when the sample is built, in the request and in every reply. Bodies,
URLs and query strings are kept as they are (redact nothing there). Pure, no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

from controller.parity.diff import Reply

REDACTED = "[redacted]"
MAX_BODY_BYTES = 16 * 1024
"""Bytes of a body a sample's JSON shows (16 KiB); the rest is cut, with a marker."""

DEFAULT_REDACT = frozenset({"authorization", "cookie", "set-cookie", "proxy-authorization"})
"""The policy's default ``redact`` list."""

Headers = tuple[tuple[str, str], ...]


def redact(headers: Iterable[tuple[str, str]], names: frozenset[str]) -> Headers:
    """``headers`` with the value of every header named in ``names`` (case-insensitive)
    replaced by :data:`REDACTED`; order and names kept."""
    lowered = frozenset(n.lower() for n in names)
    return tuple((n, REDACTED if n.lower() in lowered else v) for n, v in headers)


def body_text(body: bytes, limit: int = MAX_BODY_BYTES) -> str:
    """A body as text for people: UTF-8 (undecodable bytes as U+FFFD), at most ``limit``
    bytes of it, followed by ``…[N bytes cut]`` when longer."""
    if len(body) <= limit:
        return body.decode("utf-8", errors="replace")
    return body[:limit].decode("utf-8", errors="replace") + f"…[{len(body) - limit} bytes cut]"


def _reply_json(reply: Reply) -> dict[str, object]:
    return {
        "status": reply.status,
        "headers": [[n, v] for n, v in reply.headers],
        "body": body_text(reply.body),
    }


@dataclass(frozen=True)
class MismatchSample:
    """A mirrored request whose candidate reply mismatched.

    Attributes:
        at: when it was compared, seconds (the comparator's clock, e.g. Unix time).
        method: the HTTP method.
        url: the path and query as mirrored (``/items/3?x=1``).
        request_headers: the mirrored request's headers (redacted).
        request_body: the mirrored request's body.
        primary, candidate, secondary: the replies (headers redacted; no secondary: None).
        paths: the mismatched field paths (see :mod:`controller.parity.diff`), sorted.
        redact: header names whose values are replaced by :data:`REDACTED` on construction.
    """

    at: float
    method: str
    url: str
    request_headers: Headers
    request_body: bytes
    primary: Reply
    candidate: Reply
    secondary: Reply | None
    paths: tuple[str, ...]
    redact: frozenset[str] = DEFAULT_REDACT

    def __post_init__(self) -> None:
        names = frozenset(n.lower() for n in self.redact)
        object.__setattr__(self, "redact", names)
        object.__setattr__(self, "request_headers", redact(self.request_headers, names))
        for side in ("primary", "candidate", "secondary"):
            reply: Reply | None = getattr(self, side)
            if reply is not None:
                object.__setattr__(self, side, replace(reply, headers=redact(reply.headers, names)))

    def to_json(self) -> dict[str, object]:
        """The sample as JSON-ready data::

            {"at": 1700000000.0, "method": "GET", "url": "/items/3", "paths": ["/price"],
             "request": {"headers": [[name, value], ...], "body": "..."},
             "primary": {"status": 200, "headers": [[name, value], ...], "body": "..."},
             "candidate": {...}, "secondary": {...} | null}

        Bodies are text (UTF-8, undecodable bytes replaced), at most 16 KiB each, with a
        ``…[N bytes cut]`` marker when longer; headers are already redacted.
        """
        return {
            "at": self.at,
            "method": self.method,
            "url": self.url,
            "paths": list(self.paths),
            "request": {
                "headers": [[n, v] for n, v in self.request_headers],
                "body": body_text(self.request_body),
            },
            "primary": _reply_json(self.primary),
            "candidate": _reply_json(self.candidate),
            "secondary": None if self.secondary is None else _reply_json(self.secondary),
        }
