"""Mismatch samples: one mirrored request and the replies that disagreed, kept so that an
operator can see an example of each difference (``sluice parity diff``).

What a sample keeps, decided when it is built (so nothing more stays in memory):

- the headers named in the policy's ``redact`` list have their values replaced by
  :data:`REDACTED`, in the request and in every reply;
- every query-string value of the URL is replaced by :data:`REDACTED`, names kept
  (:func:`redact_url`): tokens and e-mail addresses travel in query strings, and no
  allowlist can know which parameters are harmless;
- bodies (the request's and the replies') are cut to :data:`MAX_BODY_BYTES`, their original
  sizes kept in :attr:`MismatchSample.body_sizes` (``samples`` of them per route, each with up
  to four bodies: a route answering 50 MB reports must not hold 20 of them).

Bodies are not otherwise redacted, nor are path segments. Pure, no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

from controller.parity.diff import Reply

REDACTED = "[redacted]"
MAX_BODY_BYTES = 16 * 1024
"""Bytes of each body a sample keeps and shows (16 KiB); the rest is cut, with a marker."""

DEFAULT_REDACT = frozenset({"authorization", "cookie", "set-cookie", "proxy-authorization"})
"""The policy's default ``redact`` list."""

Headers = tuple[tuple[str, str], ...]


def redact(headers: Iterable[tuple[str, str]], names: frozenset[str]) -> Headers:
    """``headers`` with the value of every header named in ``names`` (case-insensitive)
    replaced by :data:`REDACTED`; order and names kept."""
    lowered = frozenset(n.lower() for n in names)
    return tuple((n, REDACTED if n.lower() in lowered else v) for n, v in headers)


def redact_url(url: str) -> str:
    """``url`` (a request target such as ``/items/3?token=abc&debug``, or an absolute URL)
    with every query-string value replaced by :data:`REDACTED` and names kept:
    ``/items/3?token=[redacted]&debug=[redacted]``... except that an item without ``=`` is
    taken as a value (``/verify?3f9a`` carries a token), so ``debug`` becomes ``[redacted]``.
    Empty items (``&&``) are kept; a fragment is redacted whole. Idempotent; the path is kept
    as is. Query syntax: WHATWG URL ``application/x-www-form-urlencoded`` (``&``-separated
    ``name=value``)."""
    rest, hash_, fragment = url.partition("#")
    path, question, query = rest.partition("?")
    if question:
        items = (
            (name + "=" + REDACTED if eq else REDACTED) if item else ""
            for item in query.split("&")
            for name, eq, _value in [item.partition("=")]
        )
        path += "?" + "&".join(items)
    if hash_:
        path += "#" + (REDACTED if fragment else "")
    return path


def body_text(body: bytes, limit: int = MAX_BODY_BYTES, size: int | None = None) -> str:
    """A body as text for people: UTF-8 (undecodable bytes as U+FFFD), at most ``limit``
    bytes of it, followed by ``…[N bytes cut]`` when the body was longer. ``size`` is the
    body's original length in bytes when ``body`` is already cut (default: ``len(body)``)."""
    total = len(body) if size is None else max(size, len(body))
    if total <= limit:
        return body.decode("utf-8", errors="replace")
    return body[:limit].decode("utf-8", errors="replace") + f"…[{total - limit} bytes cut]"


@dataclass(frozen=True)
class BodySizes:
    """The original sizes in bytes of a sample's bodies, before they were cut to
    :data:`MAX_BODY_BYTES` (``secondary``: None without a secondary reply)."""

    request: int
    primary: int
    candidate: int
    secondary: int | None

    def to_json(self) -> dict[str, int | None]:
        """``{"request", "primary", "candidate", "secondary"}``: bytes (secondary: int or null)."""
        return {
            "request": self.request,
            "primary": self.primary,
            "candidate": self.candidate,
            "secondary": self.secondary,
        }


def _reply_json(reply: Reply, size: int) -> dict[str, object]:
    return {
        "status": reply.status,
        "headers": [[n, v] for n, v in reply.headers],
        "body": body_text(reply.body, size=size),
        "body_bytes": size,
    }


@dataclass(frozen=True)
class MismatchSample:
    """A mirrored request whose candidate reply mismatched.

    Attributes:
        at: when it was compared, seconds (the comparator's clock, e.g. Unix time).
        method: the HTTP method.
        url: the path and query as mirrored, query values redacted on construction
            (``/items/3?x=[redacted]``, :func:`redact_url`).
        request_headers: the mirrored request's headers (redacted).
        request_body: the mirrored request's body, cut to :data:`MAX_BODY_BYTES` on
            construction.
        primary, candidate, secondary: the replies (headers redacted, bodies cut to
            :data:`MAX_BODY_BYTES`; no secondary: None).
        paths: the mismatched field paths (see :mod:`controller.parity.diff`), sorted.
        redact: header names whose values are replaced by :data:`REDACTED` on construction.
        body_sizes: the bodies' sizes before they were cut; computed on construction when
            None (given: kept, as by :func:`dataclasses.replace` of a sample whose bodies are
            already cut).
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
    body_sizes: BodySizes | None = None

    def __post_init__(self) -> None:
        if self.body_sizes is None:
            sizes = BodySizes(
                request=len(self.request_body),
                primary=len(self.primary.body),
                candidate=len(self.candidate.body),
                secondary=None if self.secondary is None else len(self.secondary.body),
            )
            object.__setattr__(self, "body_sizes", sizes)
        names = frozenset(n.lower() for n in self.redact)
        object.__setattr__(self, "redact", names)
        object.__setattr__(self, "url", redact_url(self.url))
        object.__setattr__(self, "request_headers", redact(self.request_headers, names))
        object.__setattr__(self, "request_body", self.request_body[:MAX_BODY_BYTES])
        for side in ("primary", "candidate", "secondary"):
            reply: Reply | None = getattr(self, side)
            if reply is not None:
                kept = replace(
                    reply, headers=redact(reply.headers, names), body=reply.body[:MAX_BODY_BYTES]
                )
                object.__setattr__(self, side, kept)

    @property
    def sizes(self) -> BodySizes:
        """:attr:`body_sizes`, always set after construction."""
        assert self.body_sizes is not None  # set by __post_init__
        return self.body_sizes

    def to_json(self) -> dict[str, object]:
        """The sample as JSON-ready data::

            {"at": 1700000000.0, "method": "GET", "url": "/items/3?q=[redacted]",
             "paths": ["/price"],
             "request": {"headers": [[name, value], ...], "body": "...", "body_bytes": 0},
             "primary": {"status": 200, "headers": [[name, value], ...], "body": "...",
                         "body_bytes": 1234},
             "candidate": {...}, "secondary": {...} | null}

        Bodies are text (UTF-8, undecodable bytes replaced), at most 16 KiB each, with a
        ``…[N bytes cut]`` marker when the original was longer; ``body_bytes`` is the original
        size in bytes; headers and the URL's query values are already redacted.
        """
        sizes = self.sizes
        return {
            "at": self.at,
            "method": self.method,
            "url": self.url,
            "paths": list(self.paths),
            "request": {
                "headers": [[n, v] for n, v in self.request_headers],
                "body": body_text(self.request_body, size=sizes.request),
                "body_bytes": sizes.request,
            },
            "primary": _reply_json(self.primary, sizes.primary),
            "candidate": _reply_json(self.candidate, sizes.candidate),
            "secondary": (
                None
                if self.secondary is None
                else _reply_json(self.secondary, sizes.secondary or len(self.secondary.body))
            ),
        }
