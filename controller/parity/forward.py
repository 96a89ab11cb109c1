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

import zlib
from dataclasses import dataclass

from controller.parity.diff import Reply
from controller.parity.http1 import Pool, ProtocolError
from controller.policy.parity import ROUTE_HEADER as ROUTE_HEADER

HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "te", "trailer", "transfer-encoding", "upgrade"}
)
"""RFC 9110 section 7.6.1 (plus every ``proxy-*`` header, see :func:`forwarded_headers`)."""

_DROPPED = HOP_BY_HOP | {"content-length", ROUTE_HEADER}


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
        target: the endpoint tried, ``host:port``.
        reason: why, e.g. ``timeout after 5.0 s`` or the client error's text.
    """

    target: str
    reason: str


async def send(
    pool: Pool, target: tuple[str, int], method: str, data: bytes, deadline_s: float
) -> Reply | Failure:
    """Send one encoded request (:func:`controller.parity.http1.encode_request`) to
    ``target`` and read the whole reply.

    Args:
        pool: the comparator's keep-alive connections.
        target: ``(host, port)`` of one endpoint.
        method: the request's method (a HEAD reply has no body; only safe methods are retried
            on a stale keep-alive connection).
        data: the request's bytes.
        deadline_s: the whole exchange's bound (the policy's ``timeout``), seconds.

    Returns:
        The reply (any status: a 5xx is a reply; the body decoded from gzip or deflate, so that
        JSON is compared, not compressed bytes; header names lowercased, in order received), or
        a :class:`Failure`.
    """
    host, port = target
    try:
        status, headers, body = await pool.request(
            host, port, data, method=method, deadline_s=deadline_s
        )
    except TimeoutError:
        return Failure(f"{host}:{port}", f"timeout after {deadline_s:g} s")
    except (OSError, ProtocolError, ValueError, zlib.error) as exc:
        # ValueError: a malformed number in the reply's framing.
        return Failure(f"{host}:{port}", f"{type(exc).__name__}: {exc}")
    return Reply(status, headers, body)
