"""Sending one mirrored request to one target and reading its whole reply.

Which request headers travel on: the ones Envoy received from the user, minus

* hop-by-hop headers (RFC 9110 section 7.6.1: ``Connection`` and the names it lists,
  ``Keep-Alive``, ``TE``, ``Trailer``, ``Transfer-Encoding``, ``Upgrade``, ``Proxy-*``), which
  belong to the connection from Envoy, not to the request;
* ``Content-Length`` (recomputed from the body sent) and ``x-envoy-*`` (Envoy's own
  instructions, e.g. ``x-envoy-expected-rq-timeout-ms``, meaningless to an upstream reached
  directly);
* the route header Envoy adds to mirrored requests (:data:`ROUTE_HEADER`).

``Host`` is kept as received: with Envoy's default it carries the ``-shadow`` suffix (RouteAction
``RequestMirrorPolicy``; the policy's ``shadowSuffix: false`` turns it off at Envoy).
"""

from __future__ import annotations

from dataclasses import dataclass

import aiohttp
from yarl import URL

from controller.parity.diff import Reply

ROUTE_HEADER = "x-sluice-parity-route"
"""Added by Envoy's mirror policy (``request_headers_mutations``): the route under comparison."""

HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "te", "trailer", "transfer-encoding", "upgrade"}
)
"""RFC 9110 section 7.6.1 (plus every ``proxy-*`` header, see :func:`forwarded_headers`)."""

_DROPPED = HOP_BY_HOP | {"content-length", ROUTE_HEADER}

SKIP_AUTO_HEADERS = frozenset({"User-Agent", "Accept-Encoding", "Content-Type"})
"""Headers aiohttp would add on its own: the targets get the user's request, nothing more."""


def forwarded_headers(raw: tuple[tuple[bytes, bytes], ...]) -> tuple[tuple[str, str], ...]:
    """The headers to forward from a received request's raw headers (see the module doc).

    Args:
        raw: ``(name, value)`` pairs as received (aiohttp's ``request.raw_headers``).

    Returns:
        ``(lowercased name, value)`` pairs in the order received (latin-1, as HTTP/1.1 headers
        are octets: RFC 9110 section 5.5).
    """
    listed: frozenset[str] = frozenset()
    out: list[tuple[str, str]] = []
    for name_b, value_b in raw:
        name = name_b.decode("latin-1").lower()
        if name in _DROPPED or name.startswith(("x-envoy-", "proxy-")):
            if name == "connection":
                listed = listed | {t.strip().lower() for t in value_b.decode("latin-1").split(",")}
            continue
        out.append((name, value_b.decode("latin-1")))
    if listed:
        out = [(n, v) for n, v in out if n not in listed]
    return tuple(out)


@dataclass(frozen=True)
class Failure:
    """A target that gave no reply: unreachable, reset, or slower than the policy's timeout.

    Attributes:
        target: the cluster's base URL tried.
        reason: why, e.g. ``timeout after 5.0 s`` or the client error's text.
    """

    target: str
    reason: str


async def send(
    session: aiohttp.ClientSession,
    base_url: str,
    method: str,
    path_qs: str,
    headers: tuple[tuple[str, str], ...],
    body: bytes,
    limit: aiohttp.ClientTimeout,
) -> Reply | Failure:
    """Send one request to ``base_url`` + ``path_qs`` and read the whole reply.

    Args:
        session: the comparator's client session (keep-alive pool).
        base_url: ``http://host:port`` of one endpoint.
        method: the HTTP method as received.
        path_qs: the request target as received (already percent-encoded; sent as is).
        headers: from :func:`forwarded_headers`.
        body: the request body (empty: none sent).
        limit: the whole exchange's bound (the policy's ``timeout``, seconds).

    Returns:
        The reply (any status: a 5xx is a reply; the body decompressed when the target used a
        ``Content-Encoding`` aiohttp knows, so that JSON is compared, not gzip bytes; header
        names lowercased, in order received), or a :class:`Failure`.
    """
    try:
        async with session.request(
            method,
            URL(base_url + path_qs, encoded=True),
            headers=headers,
            data=body or None,
            timeout=limit,
            allow_redirects=False,
            skip_auto_headers=SKIP_AUTO_HEADERS,
        ) as response:
            data = await response.read()
            return Reply(
                response.status,
                tuple(
                    (name.decode("latin-1").lower(), value.decode("latin-1"))
                    for name, value in response.raw_headers
                ),
                data,
            )
    except TimeoutError:
        return Failure(base_url, f"timeout after {limit.total} s")
    except (aiohttp.ClientError, OSError, ValueError) as exc:
        # ValueError: a reply aiohttp cannot parse (e.g. a bad Content-Encoding).
        return Failure(base_url, f"{type(exc).__name__}: {exc}")
