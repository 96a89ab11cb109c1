"""A lean HTTP/1.1 client for the comparator's fan-out: keep-alive pools, whole replies.

Why not aiohttp's client: it costs ~240 us of CPU per request (measured with
``benchmarks/parity_throughput.py``'s upstream), i.e. two sends per mirrored request would
leave no room for the 2,000 compared requests/s per core the comparator targets. Here a
request is encoded once per mirrored request (the same bytes go to every target: the Host is
the one received) and written on an idle keep-alive connection; the reply is parsed in one
``data_received`` pass per chunk.

What it implements (RFC 9112): the status line and header fields; a body framed by
``Transfer-Encoding: chunked`` (extensions and trailers skipped), ``Content-Length``, or the
connection's end; no body for HEAD, 1xx, 204 and 304; interim 1xx replies skipped;
``Connection: close`` and HTTP/1.0 replies end the connection after the reply. Bodies with
``Content-Encoding`` gzip or deflate are decoded (so JSON is compared, not compressed
bytes; every member of a multi-member gzip body); other codings are kept as bytes.

Bounded: a reply body over ``max_body_bytes`` (:data:`DEFAULT_MAX_BODY_BYTES`) fails with
:class:`ProtocolError` as soon as that is known, whatever the framing (a ``Content-Length``
over it before any byte of the body is read), and so does a body that decodes to more than
that (a decompression bomb is inflated at most ``max_body_bytes + 1`` bytes, through
``zlib.decompressobj().decompress(data, max_length)``): the comparator shares its event loop
and memory with the controller. A reused keep-alive connection that closes before any
byte of the reply arrives (the upstream's idle timeout racing the request) is retried once on
a new connection, for safe methods only (RFC 9110 section 9.2.2).
"""

from __future__ import annotations

import asyncio
import zlib
from collections import defaultdict

_NO_BODY_STATUS = frozenset({204, 304})
_SAFE = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})

DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024
"""A reply body's size limit, bytes (4 MiB), as received and as decoded."""


class ProtocolError(Exception):
    """The reply is not HTTP/1.1 as this client reads it."""


class _Closed(Exception):
    """The connection closed before the reply; ``fresh`` when it had carried no byte of it."""

    def __init__(self, fresh: bool) -> None:
        super().__init__("the upstream closed the connection before replying")
        self.fresh = fresh


RawReply = tuple[int, tuple[tuple[str, str], ...], bytes]
"""``(status, headers (lowercased names, in order), body decoded from its content-coding)``."""


def encode_request(
    method: str, target: str, headers: tuple[tuple[str, str], ...], body: bytes
) -> bytes:
    """The request's bytes (RFC 9112 section 3): ``headers`` as given (they must hold
    ``host``), plus ``content-length`` when there is a body or the method usually has one."""
    lines = [f"{method} {target} HTTP/1.1"]
    lines += [f"{name}: {value}" for name, value in headers]
    if body or method not in _SAFE:
        lines.append(f"content-length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class _Connection(asyncio.Protocol):
    """One keep-alive connection reading one reply at a time."""

    def __init__(self, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES) -> None:
        self.transport: asyncio.Transport | None = None
        self._max_body = max_body_bytes
        self.closed = False
        self.reusable = False
        self._buffer = bytearray()
        self._waiter: asyncio.Future[RawReply] | None = None
        self._head = False
        self._received = False
        self._status = 0
        self._headers: tuple[tuple[str, str], ...] = ()
        self._framing = ""  # "" before the head; then "length", "chunked", "close", "none"
        self._remaining = 0
        self._body = bytearray()
        self._keep_alive = True

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def send(self, data: bytes, head: bool) -> asyncio.Future[RawReply]:
        assert self.transport is not None
        assert self._waiter is None
        self._waiter = asyncio.get_running_loop().create_future()
        self._head = head
        self._received = False
        self._framing = ""
        self.reusable = False
        self.transport.write(data)
        return self._waiter

    def data_received(self, data: bytes) -> None:
        if self._waiter is None:  # bytes nobody asked for: the connection is unusable
            self._abort()
            return
        self._received = True
        self._buffer += data
        try:
            self._parse()
        except (ProtocolError, ValueError, zlib.error) as exc:
            self._fail(ProtocolError(str(exc)))
            self._abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._waiter is None or self._waiter.done():
            return
        if self._framing == "close":
            self._done()
        else:
            self._fail(_Closed(fresh=not self._received))

    def _abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    def _fail(self, exc: Exception) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(exc)
        self._waiter = None

    def _parse(self) -> None:
        buffer = self._buffer
        while True:
            if not self._framing:
                end = buffer.find(b"\r\n\r\n")
                if end < 0:
                    if len(buffer) > 256 * 1024:
                        raise ProtocolError("reply header section over 256 KiB")
                    return
                head = bytes(buffer[:end]).decode("latin-1").split("\r\n")
                del buffer[: end + 4]
                if not self._start(head):
                    continue  # an interim 1xx reply: the final one follows
            if self._framing == "length":
                take = min(self._remaining, len(buffer))
                self._body += buffer[:take]
                del buffer[:take]
                self._remaining -= take
                if self._remaining:
                    return
            elif self._framing == "chunked":
                if not self._chunks():
                    return
            elif self._framing == "close":
                self._body += buffer
                buffer.clear()
                if len(self._body) > self._max_body:
                    raise ProtocolError(f"body over {self._max_body} bytes")
                return
            self._done()
            return

    def _start(self, head: list[str]) -> bool:
        """Read a reply's head; False for an interim (1xx) reply."""
        version, _, rest = head[0].partition(" ")
        if not version.startswith("HTTP/1."):
            raise ProtocolError(f"not an HTTP/1.x status line: {head[0][:80]!r}")
        status = int(rest[:3])
        headers = []
        length: int | None = None
        chunked = False
        keep_alive = version == "HTTP/1.1"
        for line in head[1:]:
            name, sep, value = line.partition(":")
            if not sep:
                raise ProtocolError(f"not a header field: {line[:80]!r}")
            name, value = name.strip().lower(), value.strip()
            headers.append((name, value))
            if name == "content-length":
                length = int(value)
            elif name == "transfer-encoding":
                chunked = value.lower().endswith("chunked")
            elif name == "connection":
                tokens = {t.strip().lower() for t in value.split(",")}
                keep_alive = "close" not in tokens and (keep_alive or "keep-alive" in tokens)
        if 100 <= status < 200:
            return False
        self._status, self._headers, self._keep_alive = status, tuple(headers), keep_alive
        self._body = bytearray()
        if self._head or status in _NO_BODY_STATUS:
            self._framing = "none"
        elif chunked:
            self._framing, self._remaining = "chunked", -1
        elif length is not None:
            if length < 0:
                raise ProtocolError(f"negative content-length {length}")
            if length > self._max_body:
                raise ProtocolError(f"body over {self._max_body} bytes (content-length {length})")
            self._framing, self._remaining = "length", length
        else:
            self._framing, self._keep_alive = "close", False
        return True

    def _chunks(self) -> bool:
        """Consume chunks from the buffer; True once the last chunk and trailers are read.
        ``_remaining``: bytes left of the current chunk (+2 for its CRLF); -1 between chunks;
        -2 in the trailer section."""
        buffer = self._buffer
        while True:
            if self._remaining == -2:
                end = buffer.find(b"\r\n")
                if end < 0:
                    return False
                del buffer[: end + 2]
                if end == 0:
                    return True
                continue
            if self._remaining == -1:
                end = buffer.find(b"\r\n")
                if end < 0:
                    return False
                size = int(bytes(buffer[:end]).split(b";", 1)[0], 16)
                if len(self._body) + size > self._max_body:
                    raise ProtocolError(f"body over {self._max_body} bytes")
                del buffer[: end + 2]
                self._remaining = size + 2 if size else -2
                continue
            take = min(self._remaining, len(buffer))
            self._body += buffer[:take]
            del buffer[:take]
            self._remaining -= take
            if self._remaining:
                return False
            del self._body[-2:]  # the chunk's CRLF
            self._remaining = -1

    def _done(self) -> None:
        waiter, self._waiter = self._waiter, None
        try:
            body = self._decoded()
        except (ProtocolError, zlib.error) as exc:
            # Resolve the waiter now (also when called from connection_lost, where nothing
            # else would catch it and the request would wait for its deadline).
            self.reusable = False
            self._abort()
            if waiter is not None and not waiter.done():
                waiter.set_exception(ProtocolError(f"{type(exc).__name__}: {exc}"))
            return
        self.reusable = self._keep_alive and not self.closed and not self._buffer
        if waiter is not None and not waiter.done():
            waiter.set_result((self._status, self._headers, body))

    def _decoded(self) -> bytes:
        body = bytes(self._body)
        coding = next((v.lower() for n, v in self._headers if n == "content-encoding"), "")
        if coding in ("gzip", "x-gzip", "deflate") and body:
            return decode(body, coding, self._max_body)
        return body


def decode(body: bytes, coding: str, max_bytes: int = DEFAULT_MAX_BODY_BYTES) -> bytes:
    """``body`` decoded from content-coding ``coding`` (``gzip``/``x-gzip``: every member, RFC
    1952; ``deflate``: zlib-wrapped as RFC 9110 section 8.4.1.2 says, or raw as some servers
    send), inflating at most ``max_bytes + 1`` bytes.

    Raises:
        ProtocolError: it decodes to more than ``max_bytes`` bytes.
        zlib.error: it is not valid in that coding (truncated, corrupt).
    """
    if coding == "deflate":
        try:
            return _inflate(body, zlib.MAX_WBITS, max_bytes, members=False)
        except zlib.error:
            return _inflate(body, -zlib.MAX_WBITS, max_bytes, members=False)
    return _inflate(body, 16 + zlib.MAX_WBITS, max_bytes, members=True)


def _inflate(data: bytes, wbits: int, max_bytes: int, *, members: bool) -> bytes:
    out = bytearray()
    while True:
        inflater = zlib.decompressobj(wbits)
        pending = data
        while pending:
            # Ask for one byte more than allowed: getting it means the body is over the limit;
            # getting less means zlib holds no more output for the input given.
            out += inflater.decompress(pending, max_bytes + 1 - len(out))
            if len(out) > max_bytes:
                raise ProtocolError(f"body over {max_bytes} bytes once decoded")
            pending = inflater.unconsumed_tail
        if not inflater.eof:
            raise zlib.error("incomplete or truncated stream")
        data = inflater.unused_data
        # A gzip body may be several members (RFC 1952 section 2.2), each decoded in turn;
        # zero padding after the last one is ignored, as gzip(1) does.
        if not members or not data.strip(b"\x00"):
            return bytes(out)


class Pool:
    """Idle keep-alive connections per ``(host, port)``, opened on demand.

    Args:
        max_idle: idle connections kept per upstream; more are closed when they free up.
        max_body_bytes: a reply body's limit in bytes, as received and once decoded (module
            doc); a reply over it fails with :class:`ProtocolError`.

    Raises:
        ValueError: ``max_body_bytes`` is below 1.
    """

    def __init__(self, max_idle: int = 256, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES) -> None:
        if max_body_bytes < 1:
            raise ValueError(f"max_body_bytes must be at least 1 (got {max_body_bytes})")
        self._max_body = max_body_bytes
        self._idle: defaultdict[tuple[str, int], list[_Connection]] = defaultdict(list)
        self._max_idle = max_idle
        self._busy: set[_Connection] = set()

    async def request(
        self, host: str, port: int, data: bytes, *, method: str, deadline_s: float
    ) -> RawReply:
        """Send the encoded request ``data`` to ``host:port`` and read the whole reply.

        Raises:
            TimeoutError: no whole reply within ``deadline_s`` seconds (the connection is
                closed: a late reply must not be read as the next request's).
            OSError: the upstream cannot be reached, or closed the connection.
            ProtocolError: the reply is not HTTP/1.x, its body (as received or decoded) is
                over ``max_body_bytes``, or its content-coding is corrupt.
        """
        async with asyncio.timeout(deadline_s):
            for attempt in (0, 1):
                conn, reused = await self._acquire(host, port)
                self._busy.add(conn)
                try:
                    reply = await conn.send(data, head=method == "HEAD")
                except _Closed as exc:
                    if reused and exc.fresh and method in _SAFE and attempt == 0:
                        continue
                    raise ConnectionResetError(str(exc)) from exc
                except BaseException:
                    conn._abort()
                    raise
                finally:
                    self._busy.discard(conn)
                self._release(host, port, conn)
                return reply
        raise AssertionError("unreachable")  # pragma: no cover

    async def _acquire(self, host: str, port: int) -> tuple[_Connection, bool]:
        idle = self._idle.get((host, port))
        while idle:
            conn = idle.pop()
            if not conn.closed:
                return conn, True
        loop = asyncio.get_running_loop()
        max_body = self._max_body
        _, conn = await loop.create_connection(lambda: _Connection(max_body), host, port)
        return conn, False

    def _release(self, host: str, port: int, conn: _Connection) -> None:
        idle = self._idle[(host, port)]
        if conn.reusable and len(idle) < self._max_idle:
            idle.append(conn)
        else:
            conn._abort()

    def close(self) -> None:
        """Close every connection (replies under way fail)."""
        for idle in self._idle.values():
            for conn in idle:
                conn._abort()
        self._idle.clear()
        for conn in list(self._busy):
            conn._abort()
