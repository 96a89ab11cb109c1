"""Simulated Envoy ADS clients and the plumbing the xDS benchmarks share.

A client worker is a separate process holding many SotW ``StreamAggregatedResources`` streams
over ``grpc.aio``; each stream is one simulated Envoy (its own ``node.id``). A stream
subscribes to the configured types, ACKs every response with its ``version_info`` and
``nonce`` (like Envoy, it sends its node on every request: ``set_node_on_first_message_only``
defaults to false), and records for every route-table (RDS) response the moment it arrived and
the moment its ACK was handed to gRPC, on ``CLOCK_MONOTONIC`` (``time.monotonic`` is
system-wide on Linux, so these times compare with the server process's).

The codec here is written independently of ``controller.xds.wire`` on purpose: the simulated
Envoys must not share code with the server under test.

Processes talk to the benchmark driver over a ``multiprocessing`` pipe: ``(command, *args)``
in, ``("ok", result)`` or ``("error", traceback)`` out (see :func:`command_loop` and
:class:`Child`). This module imports no ``grpc`` at top level, so the driver stays light.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import multiprocessing.connection
import os
import random
import resource
import signal
import time
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

SOTW_METHOD = "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources"
CLUSTER = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
ENDPOINT = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
LISTENER = "type.googleapis.com/envoy.config.listener.v3.Listener"
ROUTE = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
TYPES = {"cds": CLUSTER, "eds": ENDPOINT, "lds": LISTENER, "rds": ROUTE}

MAX_ATTEMPTS = 10
"""Reconnection attempts in a row before a simulated Envoy gives up (and the run fails)."""

Handler = Callable[..., Awaitable[Any]]


# --- process plumbing ---------------------------------------------------------------------


def raise_fd_limit() -> None:
    """Raise RLIMIT_NOFILE's soft limit (thousands of streams, sockets and pipes)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 65536 if hard == resource.RLIM_INFINITY else min(hard, 65536)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def child_setup() -> None:
    """For a child process: Ctrl-C is the driver's business (it stops us), more fds."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise_fd_limit()


async def command_loop(conn: multiprocessing.connection.Connection, handlers: dict[str, Handler]):
    """Serve ``(command, *args)`` messages from ``conn`` on the running loop until ``exit``.

    The pipe is watched with ``add_reader`` (no thread). A closed pipe (the driver died) ends
    the loop like ``exit``.
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[Any, ...]] = asyncio.Queue()

    def on_readable() -> None:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            loop.remove_reader(conn.fileno())
            message = ("exit",)
        queue.put_nowait(message)

    loop.add_reader(conn.fileno(), on_readable)
    try:
        while True:
            command, *args = await queue.get()
            if command == "exit":
                with contextlib.suppress(OSError):
                    conn.send(("ok", None))
                return
            try:
                result = await handlers[command](*args)
            except Exception:
                conn.send(("error", traceback.format_exc()))
            else:
                conn.send(("ok", result))
    finally:
        with contextlib.suppress(Exception):
            loop.remove_reader(conn.fileno())


class ChildError(RuntimeError):
    """A child process failed a command, died or did not answer in time."""


class Child:
    """A spawned child process driven over a pipe (see :func:`command_loop`)."""

    def __init__(self, name: str, target: Callable[..., None], *args: Any) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.name = name
        self._conn, child_conn = ctx.Pipe()
        self.process = ctx.Process(target=target, args=(child_conn, *args), name=name, daemon=True)
        self.process.start()
        child_conn.close()

    @property
    def pid(self) -> int:
        assert self.process.pid is not None
        return self.process.pid

    def send(self, command: str, *args: Any) -> None:
        """Send a command without waiting (pair with :meth:`reply`)."""
        self._conn.send((command, *args))

    def reply(self, timeout: float) -> Any:
        """Wait for the answer to the last command sent."""
        deadline = time.monotonic() + timeout
        while not self._conn.poll(0.2):
            if not self.process.is_alive():
                raise ChildError(f"{self.name} died (exit code {self.process.exitcode})")
            if time.monotonic() > deadline:
                raise ChildError(f"{self.name} did not answer within {timeout:.0f} s")
        try:
            status, result = self._conn.recv()
        except (EOFError, OSError) as exc:
            self.process.join(1)
            raise ChildError(
                f"{self.name} closed its pipe (exit code {self.process.exitcode})"
            ) from exc
        if status != "ok":
            raise ChildError(f"{self.name} failed:\n{result}")
        return result

    def call(self, command: str, *args: Any, timeout: float = 60.0) -> Any:
        """Send a command and wait for its result."""
        self.send(command, *args)
        return self.reply(timeout)

    def stop(self) -> None:
        """Ask the process to exit; terminate, then kill it if it does not. Idempotent."""
        if self.process.is_alive():
            with contextlib.suppress(Exception):
                self._conn.send(("exit",))
            self.process.join(3)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(3)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(3)
        self._conn.close()


def peak_rss_mb(pid: int | str = "self") -> float:
    """Peak resident set size (``VmHWM``) of a process, in MiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def rss_mb(pid: int | str = "self") -> float:
    """Current resident set size (``VmRSS``) of a process, in MiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def cpu_s() -> float:
    """CPU seconds (user + system, every thread) this process used so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def process_stats() -> dict[str, Any]:
    """Peak and current RSS (MiB), CPU seconds, objects tracked by the cyclic GC."""
    import gc

    return {
        "peak_rss_mb": peak_rss_mb(),
        "rss_mb": rss_mb(),
        "cpu_s": cpu_s(),
        "gc_tracked_objects": len(gc.get_objects()),
    }


class GcTimer:
    """Times the cyclic garbage collector (``gc.callbacks``): wall-clock pauses and CPU time.

    The pause is what a latency sees; the CPU time (``time.thread_time``) is what the
    collection cost, without the time the process waited for a core on a busy machine.
    """

    def __init__(self) -> None:
        import gc

        self.runs: list[tuple[int, float, float]] = []  # (generation, wall s, cpu s)
        self._wall = self._cpu = 0.0
        gc.callbacks.append(self._callback)

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._wall = time.perf_counter()
            self._cpu = time.thread_time()
        else:
            self.runs.append(
                (
                    info["generation"],
                    time.perf_counter() - self._wall,
                    time.thread_time() - self._cpu,
                )
            )

    def take(self) -> dict[str, Any]:
        """Collections since the last call: count, longest pause and CPU (ms), full ones."""
        runs, self.runs = self.runs, []
        return {
            "count": len(runs),
            "max_ms": 1000 * max((wall for _, wall, _ in runs), default=0.0),
            "cpu_ms": 1000 * sum(cpu for _, _, cpu in runs),
            "gen2": sum(1 for gen, _, _ in runs if gen == 2),
        }


# --- a minimal protobuf codec for the client side -----------------------------------------


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _len_field(number: int, payload: bytes) -> bytes:
    return _varint((number << 3) | 2) + _varint(len(payload)) + payload


def encode_node(node_id: str, cluster: str = "sluice-bench") -> bytes:
    """``envoy.config.core.v3.Node``: id=1, cluster=2, user_agent_name=6, user_agent_version=7."""
    return (
        _len_field(1, node_id.encode())
        + _len_field(2, cluster.encode())
        + _len_field(6, b"envoy")
        + _len_field(7, b"1.40.0-sim")
    )


def encode_request(
    node: bytes, type_url: str, names: tuple[str, ...], version: str = "", nonce: str = ""
) -> bytes:
    """``DiscoveryRequest``: version_info=1, node=2, resource_names=3, type_url=4,
    response_nonce=5."""
    parts = []
    if version:
        parts.append(_len_field(1, version.encode()))
    parts.append(_len_field(2, node))
    parts.extend(_len_field(3, n.encode()) for n in names)
    parts.append(_len_field(4, type_url.encode()))
    if nonce:
        parts.append(_len_field(5, nonce.encode()))
    return b"".join(parts)


def parse_response(buf: bytes) -> tuple[str, str, str]:
    """``(version_info, type_url, nonce)`` of a ``DiscoveryResponse`` (resources skipped)."""
    version = type_url = nonce = ""
    pos, end = 0, len(buf)
    while pos < end:
        key = 0
        shift = 0
        while True:
            byte = buf[pos]
            pos += 1
            key |= (byte & 0x7F) << shift
            if not byte & 0x80:
                break
            shift += 7
        number, wire_type = key >> 3, key & 7
        if wire_type == 0:
            while buf[pos] & 0x80:
                pos += 1
            pos += 1
            continue
        if wire_type != 2:
            raise ValueError(f"unexpected wire type {wire_type} in DiscoveryResponse")
        length = 0
        shift = 0
        while True:
            byte = buf[pos]
            pos += 1
            length |= (byte & 0x7F) << shift
            if not byte & 0x80:
                break
            shift += 7
        if number == 1:
            version = buf[pos : pos + length].decode()
        elif number == 4:
            type_url = buf[pos : pos + length].decode()
        elif number == 5:
            nonce = buf[pos : pos + length].decode()
        pos += length
    return version, type_url, nonce


# --- the client worker --------------------------------------------------------------------


@dataclass
class ClientTally:
    """What a group of simulated Envoys records, whichever client runs them (this module's
    :class:`_ClientGroup` on ``grpc.aio``, ``_h2ads.H2ClientGroup`` on ``h2``)."""

    # RDS version -> [(arrived, ACK written)] over this worker's streams, CLOCK_MONOTONIC
    route_times: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    retries: int = 0
    retry_reasons: dict[str, int] = field(default_factory=dict)
    failed: list[str] = field(default_factory=list)

    def backoff_s(self, node_id: str, attempt: int, reason: str) -> float | None:
        """Count the ``attempt``-th retry (from 1) of ``node_id``'s stream, ended for
        ``reason``: the seconds to wait first, Envoy's jittered exponential backoff (ADS
        default: 500 ms base, here capped at 4 s); None past :data:`MAX_ATTEMPTS`, the
        stream then counted as failed."""
        self.retry_reasons[reason] = self.retry_reasons.get(reason, 0) + 1
        if attempt > MAX_ATTEMPTS:
            self.failed.append(f"{node_id}: {reason}")
            return None
        self.retries += 1
        return random.uniform(0, min(4.0, 0.5 * 2 ** (attempt - 1)))

    async def route_results(
        self, version: str, expected: int, wait_s: float = 5.0
    ) -> list[tuple[float, float]]:
        """The (arrived, ACK written) times of RDS ``version`` once ``expected`` streams
        recorded them, or what was recorded after ``wait_s`` seconds. An ACK may reach the
        server a moment before its writer records it here."""
        for _ in range(int(wait_s / 0.01)):
            if len(self.route_times.get(version, ())) >= expected:
                break
            await asyncio.sleep(0.01)
        return list(self.route_times.get(version, ()))

    def figures(self, streams: int) -> dict[str, Any]:
        """The group's status: ``streams`` open now, retries and failures."""
        return {
            "streams": streams,
            "retries": self.retries,
            "retry_reasons": dict(self.retry_reasons),
            "failed": self.failed[:5],
            "failed_count": len(self.failed),
        }

    async def connect(
        self,
        target: str,
        node_ids: list[str],
        subscriptions: list[tuple[str, tuple[str, ...]]],
        streams_per_channel: int,
    ) -> int:
        """Open one stream per node id to ``target`` (``host:port``), ``streams_per_channel``
        per TCP connection; returns how many."""
        raise NotImplementedError

    async def status(self) -> dict[str, Any]:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError


@dataclass
class _ClientGroup(ClientTally):
    """The simulated Envoys of one worker process connected to one server (``grpc.aio``)."""

    channels: list[Any] = field(default_factory=list)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def stream(
        self, channel: Any, node_id: str, subscriptions: list[tuple[str, tuple[str, ...]]]
    ) -> None:
        """One simulated Envoy: subscribe, ACK everything, reconnect with backoff like Envoy.

        A stream the server ends or rejects (e.g. gRPC's pending-call backlog protection during
        a connection storm) is retried after a jittered exponential backoff (Envoy's ADS
        default: 500 ms base), re-sending the versions it already holds.
        """
        import grpc

        node = encode_node(node_id)
        names_of = dict(subscriptions)
        held: dict[str, str] = {}  # type URL -> last ACKed version
        monotonic = time.monotonic
        attempt = 0
        try:
            while True:
                call = channel.stream_stream(SOTW_METHOD)()
                try:
                    for type_url, names in subscriptions:
                        await call.write(
                            encode_request(node, type_url, names, held.get(type_url, ""))
                        )
                    while True:
                        message = await call.read()
                        if message is grpc.aio.EOF:
                            reason = "the server ended the stream"
                            break
                        arrived = monotonic()
                        version, type_url, nonce = parse_response(message)
                        await call.write(
                            encode_request(node, type_url, names_of[type_url], version, nonce)
                        )
                        if type_url == ROUTE:
                            self.route_times.setdefault(version, []).append((arrived, monotonic()))
                        held[type_url] = version
                        attempt = 0
                except (grpc.aio.AioRpcError, asyncio.InvalidStateError) as exc:
                    # A write on a call the server already ended fails as INTERNAL; say so.
                    reason = (
                        f"{exc.code().name}: {exc.details()}"
                        if isinstance(exc, grpc.aio.AioRpcError)
                        else "ended by the server before the request was written"
                    )
                call.cancel()
                attempt += 1
                delay = self.backoff_s(node_id, attempt, reason)
                if delay is None:
                    return
                await asyncio.sleep(delay)
        except asyncio.CancelledError:
            with contextlib.suppress(NameError):
                call.cancel()
            raise
        except Exception as exc:  # a bug in this simulator: report it, do not hide it
            self.failed.append(f"{node_id}: {exc!r}")

    async def connect(
        self,
        target: str,
        node_ids: list[str],
        subscriptions: list[tuple[str, tuple[str, ...]]],
        streams_per_channel: int,
    ) -> int:
        import grpc

        options = [
            # One TCP connection per channel: without this, channels to the same target
            # share subchannels (and so one connection) process-wide.
            ("grpc.use_local_subchannel_pool", 1),
            ("grpc.max_receive_message_length", 64 * 1024 * 1024),
        ]
        for start in range(0, len(node_ids), streams_per_channel):
            channel = grpc.aio.insecure_channel(target, options=options)
            self.channels.append(channel)
            for node_id in node_ids[start : start + streams_per_channel]:
                self.tasks.append(asyncio.create_task(self.stream(channel, node_id, subscriptions)))
        return len(self.tasks)

    async def status(self) -> dict[str, Any]:
        return self.figures(len(self.tasks))

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(BaseException):
                await task
        for channel in self.channels:
            await channel.close(grace=None)
        self.tasks.clear()
        self.channels.clear()


class _Worker:
    """A client worker process: groups of simulated Envoys, one per server (by tag)."""

    def __init__(self) -> None:
        self.groups: dict[str, ClientTally] = {}

    async def connect(self, tag: str, client: str, *args: Any) -> int:
        """Connect a group of simulated Envoys: ``client`` is ``"h2"`` or ``"grpcio"``."""
        await self.close(tag)
        if client == "h2":
            from _h2ads import H2ClientGroup

            group: ClientTally = H2ClientGroup()
        elif client == "grpcio":
            group = _ClientGroup()
        else:
            raise ValueError(f"unknown client {client!r}")
        self.groups[tag] = group
        return await group.connect(*args)

    async def route_results(self, tag: str, version: str, expected: int) -> list[Any]:
        return await self.groups[tag].route_results(version, expected)

    async def status(self, tag: str) -> dict[str, Any]:
        return await self.groups[tag].status()

    async def close(self, tag: str | None = None) -> None:
        for key in [tag] if tag is not None else list(self.groups):
            group = self.groups.pop(key, None)
            if group is not None:
                await group.close()


def client_worker_main(conn: multiprocessing.connection.Connection) -> None:
    """Entry point of a client worker process."""
    child_setup()

    async def main() -> None:
        worker = _Worker()
        try:
            await command_loop(
                conn,
                {
                    "connect": worker.connect,
                    "route_results": worker.route_results,
                    "status": worker.status,
                    "close": worker.close,
                    "pid": _pid,
                    "cpu": _cpu,
                },
            )
        finally:
            await worker.close()

    asyncio.run(main())


async def _pid() -> int:
    return os.getpid()


async def _cpu() -> float:
    return cpu_s()
