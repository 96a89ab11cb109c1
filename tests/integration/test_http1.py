"""The comparator's HTTP/1.1 client against real sockets: a scripted server on 127.0.0.1 answers
each request with the bytes a test gives (framings, codings, closes), and aiohttp's server for
the ordinary case."""

from __future__ import annotations

import asyncio
import gzip
import tracemalloc
import zlib
from collections.abc import AsyncIterator, Callable

import pytest
from aiohttp import web

from controller.parity.http1 import DEFAULT_MAX_BODY_BYTES, Pool, ProtocolError, encode_request

Script = Callable[[bytes, int], tuple[bytes, bool]]
"""(request head, request number on the connection) -> (reply bytes, close after)."""


class Scripted:
    """A server that answers each request's head with scripted bytes."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.requests: list[bytes] = []
        self.connections = 0
        self.server: asyncio.Server | None = None
        self.port = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        n = 0
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                body = await reader.readexactly(length) if length else b""
                self.requests.append(head + body)
                reply, close = self.script(head, n)
                n += 1
                writer.write(reply)
                await writer.drain()
                if close:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def __aenter__(self) -> Scripted:
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()


@pytest.fixture
async def pool() -> AsyncIterator[Pool]:
    p = Pool()
    yield p
    p.close()


GET = encode_request("GET", "/x?a=1", (("host", "shop-shadow"), ("x-request-id", "r1")), b"")


async def test_content_length_keep_alive_and_the_request_as_encoded(pool: Pool) -> None:
    reply = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello"
    async with Scripted(lambda head, n: (reply, False)) as server:
        for _ in range(3):
            status, headers, body = await pool.request(
                "127.0.0.1", server.port, GET, method="GET", deadline_s=5
            )
            assert (status, body) == (200, b"hello")
            assert headers == (("content-type", "text/plain"), ("content-length", "5"))
        assert server.connections == 1  # kept alive
        assert server.requests[0] == (
            b"GET /x?a=1 HTTP/1.1\r\nhost: shop-shadow\r\nx-request-id: r1\r\n\r\n"
        )


async def test_chunked_with_extensions_and_trailers_and_an_interim_reply(pool: Pool) -> None:
    reply = (
        b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n"
        b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"4;ext=1\r\nWiki\r\n6\r\npedia \r\nE\r\nin \r\n\r\nchunks.\r\n0\r\nx-trailer: 1\r\n\r\n"
    )
    async with Scripted(lambda head, n: (reply, False)) as server:
        for _ in range(2):
            status, _, body = await pool.request(
                "127.0.0.1", server.port, GET, method="GET", deadline_s=5
            )
            assert (status, body) == (201, b"Wikipedia in \r\n\r\nchunks.")
        assert server.connections == 1


async def test_gzip_and_deflate_bodies_are_decoded(pool: Pool) -> None:
    doc = b'{"a": [1, 2, 3]}'
    for coding, data in (
        ("gzip", gzip.compress(doc)),
        ("deflate", zlib.compress(doc)),
        ("deflate", _raw_deflate(doc)),
    ):
        reply = (
            f"HTTP/1.1 200 OK\r\nContent-Encoding: {coding}\r\nContent-Length: {len(data)}\r\n\r\n"
        ).encode() + data

        def answer(head: bytes, n: int, r: bytes = reply) -> tuple[bytes, bool]:
            return r, False

        async with Scripted(answer) as server:
            _, _, body = await pool.request(
                "127.0.0.1", server.port, GET, method="GET", deadline_s=5
            )
            assert body == doc


def _raw_deflate(data: bytes) -> bytes:
    c = zlib.compressobj(wbits=-15)
    return c.compress(data) + c.flush()


async def test_head_204_and_a_body_to_the_close(pool: Pool) -> None:
    head_reply = b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n"
    async with Scripted(lambda head, n: (head_reply, False)) as server:
        data = encode_request("HEAD", "/", (("host", "h"),), b"")
        status, _, body = await pool.request(
            "127.0.0.1", server.port, data, method="HEAD", deadline_s=5
        )
        assert (status, body) == (200, b"")
    async with Scripted(lambda head, n: (b"HTTP/1.1 204 No Content\r\n\r\n", False)) as server:
        status, _, body = await pool.request(
            "127.0.0.1", server.port, GET, method="GET", deadline_s=5
        )
        assert (status, body) == (204, b"")
    to_close = b"HTTP/1.0 200 OK\r\n\r\nuntil the end"
    async with Scripted(lambda head, n: (to_close, True)) as server:
        for _ in range(2):
            status, _, body = await pool.request(
                "127.0.0.1", server.port, GET, method="GET", deadline_s=5
            )
            assert (status, body) == (200, b"until the end")
        assert server.connections == 2  # never reused


async def test_a_stale_keep_alive_connection_is_retried_for_safe_methods_only(pool: Pool) -> None:
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"

    def drop_second(head: bytes, n: int) -> tuple[bytes, bool]:
        # The second request on a connection is read and the connection closed without a
        # reply, as when a server's idle timeout races a reused connection.
        return (ok, False) if n == 0 else (b"", True)

    async with Scripted(drop_second) as server:
        for _ in range(3):
            status, _, _ = await pool.request(
                "127.0.0.1", server.port, GET, method="GET", deadline_s=5
            )
            assert status == 200
        assert server.connections == 3  # each stale connection was replaced once
        post = encode_request("POST", "/w", (("host", "h"),), b"{}")
        with pytest.raises(ConnectionResetError):  # a write is never sent twice
            await pool.request("127.0.0.1", server.port, post, method="POST", deadline_s=5)
        assert server.requests[-1].endswith(b"content-length: 2\r\n\r\n{}")
        assert sum(r.startswith(b"POST") for r in server.requests) == 1


async def test_timeout_unreachable_and_garbage(pool: Pool) -> None:
    async with Scripted(
        lambda head, n: (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", False)
    ) as server:
        with pytest.raises(TimeoutError):
            await pool.request("127.0.0.1", server.port, GET, method="GET", deadline_s=0.2)
    async with Scripted(lambda head, n: (b"SSH-2.0-OpenSSH\r\n\r\n", False)) as server:
        with pytest.raises(ProtocolError):
            await pool.request("127.0.0.1", server.port, GET, method="GET", deadline_s=5)
    async with Scripted(lambda head, n: (b"", True)) as server:
        with pytest.raises(ConnectionResetError):
            await pool.request("127.0.0.1", server.port, GET, method="GET", deadline_s=5)
    with pytest.raises(ConnectionRefusedError):
        await pool.request("127.0.0.1", 9, GET, method="GET", deadline_s=5)


async def test_against_aiohttp_server(pool: Pool) -> None:
    async def handle(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"x-n": request.query.get("n", "")})
        response.enable_chunked_encoding()
        response.enable_compression()
        await response.prepare(request)
        for part in range(3):
            await response.write(f"part {part};".encode())
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_get("/s", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port = runner.addresses[0][1]
    try:
        headers = (("host", "x"), ("accept-encoding", "gzip"))
        results = await asyncio.gather(
            *(
                pool.request(
                    "127.0.0.1",
                    port,
                    encode_request("GET", f"/s?n={n}", headers, b""),
                    method="GET",
                    deadline_s=5,
                )
                for n in range(20)
            )
        )
        for n, (status, got, body) in enumerate(results):
            assert status == 200
            assert dict(got)["x-n"] == str(n)
            assert dict(got)["content-encoding"] == "gzip"
            assert body == b"part 0;part 1;part 2;"
    finally:
        await runner.cleanup()


LIMIT = 64 * 1024


@pytest.fixture
async def small() -> AsyncIterator[Pool]:
    p = Pool(max_body_bytes=LIMIT)
    yield p
    p.close()


def _reply(head: str, body: bytes) -> Script:
    data = head.encode() + b"\r\n\r\n" + body

    def answer(_head: bytes, _n: int) -> tuple[bytes, bool]:
        return data, False  # kept open: only the limit can end the read

    return answer


async def test_a_content_length_over_the_limit_fails_before_the_body(small: Pool) -> None:
    # The body never comes: the length alone decides, without waiting for the deadline.
    script = _reply(f"HTTP/1.1 200 OK\r\nContent-Length: {400 * 1024**2}", b"")
    async with Scripted(script) as server:
        with pytest.raises(ProtocolError, match=f"body over {LIMIT} bytes"):
            await small.request("127.0.0.1", server.port, GET, method="GET", deadline_s=30)
    exact = _reply(f"HTTP/1.1 200 OK\r\nContent-Length: {LIMIT}", b"a" * LIMIT)
    async with Scripted(exact) as server:
        _, _, body = await small.request("127.0.0.1", server.port, GET, method="GET", deadline_s=5)
        assert len(body) == LIMIT  # at the limit is within it


async def test_chunked_and_close_framed_bodies_stop_at_the_limit(small: Pool) -> None:
    chunk = b"%x\r\n%s\r\n" % (LIMIT // 4, b"c" * (LIMIT // 4))
    # Five chunks of a quarter of the limit and no last chunk: the fifth one's size is refused.
    chunked = _reply("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked", chunk * 5)
    to_close = _reply("HTTP/1.0 200 OK", b"z" * (LIMIT + 1))
    for script in (chunked, to_close):
        async with Scripted(script) as server:
            with pytest.raises(ProtocolError, match=f"body over {LIMIT} bytes"):
                await small.request("127.0.0.1", server.port, GET, method="GET", deadline_s=30)


async def test_a_gzip_bomb_is_inflated_no_further_than_the_limit() -> None:
    inflated = 64 * 1024**2
    bomb = gzip.compress(bytes(inflated), compresslevel=9)  # ~64 KiB on the wire
    pool = Pool()  # the default limit, 4 MiB
    script = _reply(
        f"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: {len(bomb)}", bomb
    )
    try:
        async with Scripted(script) as server:
            tracemalloc.start()
            try:
                with pytest.raises(ProtocolError, match=f"body over {DEFAULT_MAX_BODY_BYTES} "):
                    await pool.request("127.0.0.1", server.port, GET, method="GET", deadline_s=30)
                _, peak = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
        # Never the 64 MiB it expands to: the limit plus zlib's buffers and copies.
        assert peak < 4 * DEFAULT_MAX_BODY_BYTES, peak
    finally:
        pool.close()


async def test_multi_member_gzip_and_the_decode_limit(small: Pool) -> None:
    members = gzip.compress(b'{"a": ') + gzip.compress(b"[1, 2]}") + b"\0\0"
    script = _reply(
        f"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: {len(members)}", members
    )
    async with Scripted(script) as server:
        _, _, body = await small.request("127.0.0.1", server.port, GET, method="GET", deadline_s=5)
        assert body == b'{"a": [1, 2]}'
    # Over the limit only across members: each is within it, together they are not.
    half = gzip.compress(b"h" * (LIMIT // 2 + 1))
    script = _reply(
        f"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: {2 * len(half)}", half * 2
    )
    async with Scripted(script) as server:
        with pytest.raises(ProtocolError, match="once decoded"):
            await small.request("127.0.0.1", server.port, GET, method="GET", deadline_s=5)
    exact = gzip.compress(b"e" * LIMIT)
    script = _reply(
        f"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: {len(exact)}", exact
    )
    async with Scripted(script) as server:
        _, _, body = await small.request("127.0.0.1", server.port, GET, method="GET", deadline_s=5)
        assert body == b"e" * LIMIT


async def test_a_bad_coding_in_a_body_ended_by_the_close_fails_at_once(small: Pool) -> None:
    # The body ends with the connection (connection_lost decodes it): a corrupt or oversized
    # coding must fail the request then, not leave it waiting for its deadline.
    bomb = gzip.compress(bytes(2 * LIMIT))
    for body in (b"not gzip at all", gzip.compress(b"cut short")[:-6], bomb):
        data = b"HTTP/1.0 200 OK\r\nContent-Encoding: gzip\r\n\r\n" + body

        def answer(_head: bytes, _n: int, reply: bytes = data) -> tuple[bytes, bool]:
            return reply, True

        async with Scripted(answer) as server:
            with pytest.raises(ProtocolError):
                await small.request("127.0.0.1", server.port, GET, method="GET", deadline_s=60)
