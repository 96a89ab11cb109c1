"""xDS fan-out: how long one weight change takes to be ACKed by N Envoys, against a floor.

Method
------
For each N (default 100, 1,000 and 2,000) the benchmark starts two servers, each with its own
N simulated Envoys, and alternates weight changes between them (controller, floor, floor,
controller, ...) so that both see the same background load; the idle one costs nothing:

* **controller**: the real ``sluice serve`` body, ``controller.runtime.controller.run`` (SQLite
  weight store and its persist hook, ``SnapshotCache``, ``WeightController``, the ADS server
  on 127.0.0.1:0, the admin API) serving the embedded default gateway, alone in its own
  process so that its CPU time and peak RSS are its own. The benchmark only catches the objects
  ``run`` builds. A change is ``WeightController.set_weights("comments", {...})``: persist,
  build the new snapshot (serializing the one route table that changed), wake every stream,
  push RDS, return when every node has ACKed (``outcome == "acked"``).
* **floor**: a bare ``grpc.aio`` server in its own process, same generic-handler style, same
  server options, same raw-bytes streams. It answers the initial subscriptions and, on a
  trigger, writes the *same* ``DiscoveryResponse`` bytes the controller sends (built before the
  run from the same snapshot; only a per-stream nonce appended; the RDS versions are checked
  equal) to every stream and counts the ACKs without parsing them. It is what grpcio alone
  costs for this fan-out: the ratio says how much the controller adds.

The simulated Envoys live in ``--clients-procs`` worker processes, each holding N/K SotW ADS
streams (``--streams-per-channel`` streams per TCP connection), every stream with its own
``node.id``. By default they speak gRPC over HTTP/2 through the ``h2`` library (``_h2ads.py``);
``--client grpcio`` runs them on ``grpc.aio`` channels instead (``_adsclients.py``), which
costs the clients ~1.7x the CPU on the cores the server needs. A stream subscribes to CDS
(wildcard) and RDS (the listener's route table ``http``), sends its node on every request
(Envoy's default), ACKs every response with its version and nonce, and reconnects with a
jittered backoff when the server rejects or ends it (as Envoy does). Every node has ACKed the
initial version (warm-up) before ``--changes`` weight changes are made on each server, one at a
time.

Measures
--------
* **latency** (p50/p99/max, ms): per node and change, from ``t0`` (taken in the server process
  just before ``set_weights`` / the trigger) to the moment that node's ACK of the new RDS
  version was handed to gRPC, on ``CLOCK_MONOTONIC`` (system-wide on Linux, so comparable
  across processes). Distribution over all N x changes samples.
* **all-acked** (ms): what the server saw: ``set_weights`` returned (every ACK received and
  processed); for the floor, the last ACK read. p50 and max over the changes.
* **cpu**: the server process's CPU seconds (user + system, all threads) per change, and the
  client processes' (the simulated Envoys share the machine); **peak RSS**: the server's
  ``VmHWM`` at the end of its run (a fresh process per N and server).
* **serializations/change**: resources serialized with betterproto2 (misses of the builders'
  memo in ``controller.xds.resources``) plus ``DiscoveryResponse`` bodies assembled (entries of
  the new snapshot's ``TypeSnapshot._views`` memo). It must not grow with N: a push to N
  streams appends N nonces to one body. ``build_snapshot`` ms is the time that step took.
* **gc**: the cyclic garbage collector in the server during the changes: CPU ms per change,
  longest pause, full collections; **stream retries**: streams the server rejected while
  N clients connected at once (gRPC's pending-call backlog protection), retried by the client.

How to read the figures: the targets are, at N = 1,000, p99 <= 250 ms and <= 1.5x the floor's
p99, peak RSS <= 150 MB, and serializations/change equal at every N. CPU and latency growing
linearly in N is expected (N writes, N ACK reads); serializations/change growing with N is a
bug. The clients share the machine's cores with the server (``--pin`` gives the server a core
of its own), so absolute figures are pessimistic compared with Envoys on other hosts, and the
floor suffers the same contention; the load average is printed because other work on the
machine skews everything. The last line printed is one JSON object with every figure.

Usage::

    python3 benchmarks/xds_fanout.py                 # N = 100, 1000, 2000; about a minute
    python3 benchmarks/xds_fanout.py --quick         # N = 100 only, a smoke run (< 60 s)
    python3 benchmarks/xds_fanout.py --profile /tmp/prof   # cProfile both servers' changes
    python3 benchmarks/xds_fanout.py --gc-freeze     # the floor gets the same GC settings
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import math
import multiprocessing.connection
import os
import platform
import signal
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's controller
sys.path.insert(0, str(Path(__file__).resolve().parent))
import _adsclients as ads

ROUTE_NAME = "comments"  # the route under migration in the default gateway
ROUTE_CONFIG = "http"  # its listener, hence its route configuration name
OLD, NEW = "comments-python", "comments-go"
GRPC_OPTIONS = [  # as controller.xds.server.start_server, so the floor pays the same
    ("grpc.so_reuseport", 0),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.max_receive_message_length", 16 * 1024 * 1024),
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
]
TARGET_N = 1000
TARGET_P99_MS = 250.0
TARGET_RATIO = 1.5
TARGET_RSS_MB = 150.0


def change_weights(count: int) -> list[dict[str, int]]:
    """Distinct rollout steps (a repeated step would hit the route memo and serialize nothing)."""
    steps = [1, 5, 10, 25, 50, 75, 100, 2, 3, 4]
    steps += [s for s in range(6, 100) if s not in steps]
    return [{OLD: 100 - s, NEW: s} for s in steps[:count]]


def _load_gateway() -> Any:
    from importlib import resources

    import yaml

    from controller.policy.gateway import Gateway

    text = resources.files("controller.defaults").joinpath("gateway.yaml").read_text()
    return Gateway.model_validate(yaml.safe_load(text))


# --- the controller process ---------------------------------------------------------------


def _gc_freeze() -> None:
    """The GC settings of ``sluice serve`` (``--gc-freeze``: for the floor too).

    ``gc.freeze()`` moves everything allocated at startup (envoy-data-plane and pydantic
    modules, the first snapshot) out of the cyclic GC's reach, so that a full collection during
    a push traverses only what was allocated since; the youngest generation is collected every
    20,000 allocations instead of 700."""
    import gc

    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 20, 20)


def controller_main(conn: multiprocessing.connection.Connection, gc_freeze: bool) -> None:
    """The controller under test: what ``sluice serve`` runs, plus a control pipe."""
    ads.child_setup()
    sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - run()'s "ready" line is not a figure
    asyncio.run(_controller(conn, gc_freeze))


async def _controller(conn: multiprocessing.connection.Connection, gc_freeze: bool) -> None:
    import cProfile
    import tempfile

    from controller.runtime import controller as runtime
    from controller.xds import resources, typeurls, weights

    # Run the real `sluice serve` body (controller.runtime.controller.run: SQLite weight store
    # with its persist hook, SnapshotCache, WeightController, ADS server, admin API), only
    # catching the objects it builds so that changes can be made and counted in-process.
    captured: dict[str, Any] = {}
    real_weight_controller = runtime.WeightController
    real_start_server = runtime.start_server

    class CapturingWeightController(real_weight_controller):  # type: ignore[misc,valid-type]
        def __init__(self, gateway: Any, cache: Any, *args: Any, **kwargs: Any) -> None:
            super().__init__(gateway, cache, *args, **kwargs)
            captured["cache"] = cache
            captured["weights"] = self

    async def capturing_start_server(cache: Any, address: str) -> Any:
        server, port = await real_start_server(cache, address)
        captured["port"] = port
        return server, port

    runtime.WeightController = CapturingWeightController  # type: ignore[misc]
    runtime.start_server = capturing_start_server  # type: ignore[assignment]
    state_dir = tempfile.TemporaryDirectory(prefix="xds-fanout-")
    gateway = _load_gateway()
    # By keyword, and only the fields ServeConfig has: it grows as `sluice serve` does.
    known = {
        "gateway": gateway,
        "gateway_path": None,  # the embedded default gateway
        "xds_address": "127.0.0.1:0",
        "admin_address": "127.0.0.1:0",
        "state_path": Path(state_dir.name) / "state.db",
    }
    fields = {f.name for f in dataclasses.fields(runtime.ServeConfig)}
    config = runtime.ServeConfig(**{k: v for k, v in known.items() if k in fields})
    stop = asyncio.Event()
    serving = asyncio.create_task(runtime.run(config, stop))
    while "port" not in captured:
        if serving.done():
            serving.result()  # raises the startup error
            raise RuntimeError("the controller stopped before serving")
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.2)  # the admin API starts right after the ADS server
    cache = captured["cache"]
    controller = captured["weights"]
    port = captured["port"]
    if gc_freeze:
        _gc_freeze()
    idle_rss = ads.rss_mb()
    profiler: list[cProfile.Profile] = []

    # Time build_snapshot (the serialization step) from outside: weights.py looks the name up
    # in its module globals at each call.
    build_times: list[float] = []
    real_build = weights.build_snapshot

    def timed_build(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return real_build(*args, **kwargs)
        finally:
            build_times.append(time.perf_counter() - start)

    weights.build_snapshot = timed_build  # type: ignore[assignment]

    def memo_misses(names: str) -> int:
        # RESOURCE_MEMOS: a miss is a resource built (a route table assembled, a cluster or a
        # listener encoded). ENCODING_MEMOS: a miss is a betterproto2 encoding of part of a
        # route table (a ClusterWeight at a new weight, ...).
        return sum(f.cache_info().misses for f in getattr(resources, names))

    def bodies_assembled() -> int | None:
        memos = [getattr(ts, "_views", None) for ts in cache.snapshot.types.values()]
        return None if any(m is None for m in memos) else sum(len(m) for m in memos)

    async def start() -> dict[str, Any]:
        return {
            "port": port,
            "pid": os.getpid(),
            "idle_rss_mb": idle_rss,
            "clusters": sorted(gateway.cluster_names()),
        }

    async def ready() -> int:
        version = cache.snapshot.version(typeurls.ROUTE)
        count = 0
        for node in cache.nodes():
            status = node.types.get(typeurls.ROUTE)
            if node.streams > 0 and status is not None and status.acked_version == version:
                count += 1
        return count

    gc_timer = ads.GcTimer()

    async def change(new_weights: dict[str, int]) -> dict[str, Any]:
        misses = memo_misses("RESOURCE_MEMOS")
        encodings = memo_misses("ENCODING_MEMOS")
        build_times.clear()
        gc_timer.take()
        if profiler:
            profiler[0].enable()
        cpu0 = ads.cpu_s()
        t0 = time.monotonic()
        result = await controller.set_weights(ROUTE_NAME, new_weights, timeout_s=60.0)
        t1 = time.monotonic()
        cpu1 = ads.cpu_s()
        if profiler:
            profiler[0].disable()
        snapshot = cache.snapshot
        return {
            "t0": t0,
            "all_acked_s": t1 - t0,
            "ack_elapsed_s": result.ack.elapsed_s,
            "outcome": result.ack.outcome,
            "acked": len(result.ack.acked),
            "pending": len(result.ack.pending),
            "version": snapshot.version(typeurls.ROUTE),
            "cpu_s": cpu1 - cpu0,
            "resources_serialized": memo_misses("RESOURCE_MEMOS") - misses,
            "part_encodings": memo_misses("ENCODING_MEMOS") - encodings,
            "bodies_assembled": bodies_assembled(),
            "build_snapshot_ms": 1000 * sum(build_times),
            "gc": gc_timer.take(),
        }

    async def profile(path: str | None) -> None:
        if path is None:
            profiler.append(cProfile.Profile())
        else:
            profiler.pop().dump_stats(path)

    async def stats() -> dict[str, Any]:
        return ads.process_stats()

    try:
        await ads.command_loop(
            conn,
            {"start": start, "ready": ready, "change": change, "profile": profile, "stats": stats},
        )
    finally:
        sys.stderr = sys.stdout  # devnull: run()'s "stopped" line is not a figure either
        stop.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(serving, 5)
        state_dir.cleanup()


# --- the floor process --------------------------------------------------------------------


class _FloorStream:
    __slots__ = ("awaiting_ack", "event", "id", "nonce", "out", "route_acked")

    def __init__(self, stream_id: int) -> None:
        self.id = stream_id
        self.event = asyncio.Event()
        self.out: list[bytes] = []
        self.nonce = 0
        self.awaiting_ack = False
        self.route_acked = False


def floor_main(
    conn: multiprocessing.connection.Connection, steps: list[dict[str, int]], gc_freeze: bool
) -> None:
    """The floor: a bare grpc.aio server pushing pre-serialized bytes."""
    ads.child_setup()
    asyncio.run(_floor(conn, steps, gc_freeze))


async def _floor(
    conn: multiprocessing.connection.Connection, steps: list[dict[str, int]], gc_freeze: bool
) -> None:
    import cProfile

    import grpc

    from controller.xds import resources, typeurls, wire

    gateway = _load_gateway()
    initial = resources.build_snapshot(gateway, {})
    route_names = frozenset({ROUTE_CONFIG})
    # Everything pushed during the measurement is serialized here, before it.
    pushes = []
    for step in steps:
        ts = resources.build_snapshot(gateway, {ROUTE_NAME: step}).types[typeurls.ROUTE]
        pushes.append((ts.version, ts.sotw_body(route_names)))

    streams: set[_FloorStream] = set()
    counter = {"acks": 0, "target": 0, "ready": 0, "next_id": 0}
    all_acked = asyncio.Event()

    def nonce_of(stream: _FloorStream) -> bytes:
        stream.nonce += 1
        return wire.nonce_field(f"{stream.id}-{stream.nonce}")

    async def handler(requests: Any, context: grpc.aio.ServicerContext) -> None:
        counter["next_id"] += 1
        stream = _FloorStream(counter["next_id"])
        streams.add(stream)

        async def read() -> None:
            try:
                async for raw in requests:
                    if stream.awaiting_ack:  # the measured path: receive, count, nothing else
                        stream.awaiting_ack = False
                        counter["acks"] += 1
                        if counter["acks"] >= counter["target"]:
                            all_acked.set()
                        continue
                    req = wire.parse_sotw_request(raw)  # warm-up only
                    if not req.response_nonce:
                        names = (
                            None
                            if req.type_url in typeurls.WILDCARD_TYPES and not req.resource_names
                            else frozenset(req.resource_names)
                        )
                        ts = initial.types[req.type_url]
                        stream.out.append(ts.sotw_body(names) + nonce_of(stream))
                        stream.event.set()
                    elif req.type_url == typeurls.ROUTE and not stream.route_acked:
                        stream.route_acked = True
                        counter["ready"] += 1
            finally:
                stream.event.set()
                stream.out.append(b"")  # end marker

        reader = asyncio.create_task(read())
        try:
            while True:
                await stream.event.wait()
                stream.event.clear()
                out, stream.out = stream.out, []
                for response in out:
                    if not response:
                        return
                    await context.write(response)
        finally:
            reader.cancel()
            streams.discard(stream)

    gc_timer = ads.GcTimer()
    server = grpc.aio.server(options=GRPC_OPTIONS)
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                "envoy.service.discovery.v3.AggregatedDiscoveryService",
                {"StreamAggregatedResources": grpc.stream_stream_rpc_method_handler(handler)},
            ),
        )
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    if gc_freeze:
        _gc_freeze()
    idle_rss = ads.rss_mb()

    async def start() -> dict[str, Any]:
        return {
            "port": port,
            "pid": os.getpid(),
            "idle_rss_mb": idle_rss,
            "clusters": sorted(gateway.cluster_names()),
        }

    async def ready() -> int:
        return counter["ready"]

    profiler: list[cProfile.Profile] = []

    async def change(index: int) -> dict[str, Any]:
        version, body = pushes[index]
        counter["acks"] = 0
        counter["target"] = len(streams)
        all_acked.clear()
        gc_timer.take()
        if profiler:
            profiler[0].enable()
        cpu0 = ads.cpu_s()
        t0 = time.monotonic()
        for stream in streams:
            stream.awaiting_ack = True
            stream.out.append(body + nonce_of(stream))
            stream.event.set()
        try:
            await asyncio.wait_for(all_acked.wait(), 60.0)
            outcome = "acked"
        except TimeoutError:
            outcome = "timeout"
        t1 = time.monotonic()
        cpu1 = ads.cpu_s()
        if profiler:
            profiler[0].disable()
        return {
            "t0": t0,
            "all_acked_s": t1 - t0,
            "outcome": outcome,
            "acked": counter["acks"],
            "version": version,
            "cpu_s": cpu1 - cpu0,
            "gc": gc_timer.take(),
        }

    async def profile(path: str | None) -> None:
        if path is None:
            profiler.append(cProfile.Profile())
        else:
            profiler.pop().dump_stats(path)

    async def stats() -> dict[str, Any]:
        return ads.process_stats()

    try:
        await ads.command_loop(
            conn,
            {"start": start, "ready": ready, "change": change, "profile": profile, "stats": stats},
        )
    finally:
        await server.stop(grace=None)


# --- the driver ---------------------------------------------------------------------------


def source_digest() -> str:
    """12 hex digits of SHA-256 over controller/xds/*.py: which code the figures are for."""
    import hashlib
    import importlib.util

    spec = importlib.util.find_spec("controller.xds")
    assert spec is not None
    assert spec.submodule_search_locations
    digest = hashlib.sha256()
    for path in sorted(Path(next(iter(spec.submodule_search_locations))).glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


def percentile(sorted_values: list[float], p: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    if not sorted_values:
        return float("nan")
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def _r(value: float, digits: int = 1) -> float | None:
    return None if math.isnan(value) else round(value, digits)


def _set_affinity(pid: int, cpus: set[int] | None) -> None:
    if cpus:
        with contextlib.suppress(OSError):
            os.sched_setaffinity(pid, cpus)


KINDS = ("controller", "floor")


class _Side:
    """One server at one N and what was measured against it."""

    def __init__(self, kind: str, n: int, server: ads.Child) -> None:
        self.kind = kind
        self.n = n
        self.server = server
        self.info: dict[str, Any] = {}
        self.shares: list[list[str]] = []
        self.warmup_s = 0.0
        self.retries = 0
        self.reasons: dict[str, int] = {}
        self.samples: list[float] = []
        self.arrivals: list[float] = []
        self.changes: list[dict[str, Any]] = []
        self.clients_cpu = 0.0
        self.stats: dict[str, Any] = {}


def _connect(side: _Side, workers: list[ads.Child], args: argparse.Namespace) -> None:
    """Connect N simulated Envoys to one server and wait until every one ACKed its routes."""
    n, kind = side.n, side.kind
    side.info = side.server.call("start", timeout=60)
    target = f"127.0.0.1:{side.info['port']}"
    names = {"cds": (), "lds": (), "eds": tuple(side.info["clusters"]), "rds": (ROUTE_CONFIG,)}
    subscriptions = [(ads.TYPES[t], names[t]) for t in args.subscribe.split(",")]
    node_ids = [f"{kind}-{n}-{i:05d}" for i in range(n)]
    side.shares = [node_ids[w :: len(workers)] for w in range(len(workers))]
    connect_start = time.monotonic()
    for worker, ids in zip(workers, side.shares, strict=True):
        worker.send(
            "connect", kind, args.client, target, ids, subscriptions, args.streams_per_channel
        )
    for worker in workers:
        worker.reply(60)
    deadline = time.monotonic() + 30 + n / 20
    while (acked := side.server.call("ready")) < n:
        failed = [f for w in workers for f in w.call("status", kind)["failed"]]
        if failed or time.monotonic() > deadline:
            raise ads.ChildError(
                f"{kind} N={n}: {acked} of {n} nodes warmed up; failed streams: {failed}"
            )
        time.sleep(0.1)
    side.warmup_s = time.monotonic() - connect_start
    for status in (w.call("status", kind) for w in workers):
        side.retries += status["retries"]
        for reason, count in status["retry_reasons"].items():
            side.reasons[reason] = side.reasons.get(reason, 0) + count


def _change(side: _Side, workers: list[ads.Child], index: int, step: dict[str, int]) -> None:
    """Make one weight change on one server and collect every node's ACK time."""
    n, kind = side.n, side.kind
    side.clients_cpu -= sum(w.call("cpu") for w in workers)
    result = side.server.call("change", step if kind == "controller" else index, timeout=90)
    if result["outcome"] != "acked" or result["acked"] != n:
        raise ads.ChildError(f"{kind} N={n} change {index}: {result}")
    for worker, ids in zip(workers, side.shares, strict=True):
        worker.send("route_results", kind, result["version"], len(ids))
    for worker, ids in zip(workers, side.shares, strict=True):
        times = worker.reply(30)
        if len(times) != len(ids):
            raise ads.ChildError(
                f"{kind} N={n}: {len(times)} of {len(ids)} ACK times from {worker.name}"
            )
        side.samples.extend(1000 * (ack - result["t0"]) for _, ack in times)
        side.arrivals.extend(1000 * (arrived - result["t0"]) for arrived, _ in times)
    side.clients_cpu += sum(w.call("cpu") for w in workers)
    side.changes.append(result)


def run_size(
    n: int,
    workers: list[ads.Child],
    args: argparse.Namespace,
    steps: list[dict[str, int]],
    server_cpus: set[int] | None,
) -> dict[str, dict[str, Any]]:
    """Both servers at one N: connect N clients to each, then alternate their changes.

    Alternating (controller, floor, floor, controller, ...) exposes both to the same
    background load, which matters on a shared machine; an idle server and its idle clients
    cost nothing meanwhile.
    """
    sides = {
        "controller": _Side(
            "controller", n, ads.Child(f"controller-{n}", controller_main, args.gc_freeze)
        ),
        "floor": _Side("floor", n, ads.Child(f"floor-{n}", floor_main, steps, args.gc_freeze)),
    }
    try:
        for side in sides.values():
            _set_affinity(side.server.pid, server_cpus)
        for side in sides.values():
            _connect(side, workers, args)
        time.sleep(0.3)  # let the warm-up traffic drain
        if args.profile:
            for side in sides.values():
                side.server.call("profile", None)
        for index, step in enumerate(steps):
            for kind in KINDS if index % 2 == 0 else reversed(KINDS):
                _change(sides[kind], workers, index, step)
                time.sleep(0.1)
        if args.profile:
            for kind, side in sides.items():
                side.server.call("profile", str(Path(args.profile) / f"{kind}-{n}.pstats"))
        for side in sides.values():
            retries = sum(w.call("status", side.kind)["retries"] for w in workers)
            if retries != side.retries:
                raise ads.ChildError(f"{side.kind} N={n}: streams reconnected during the changes")
            side.stats = side.server.call("stats")
    finally:
        for worker in workers:
            with contextlib.suppress(ads.ChildError):
                worker.call("close", None, timeout=30)
        for side in sides.values():
            side.server.stop()
    return {kind: _summary(side) for kind, side in sides.items()}


def _summary(side: _Side) -> dict[str, Any]:
    samples = sorted(side.samples)
    arrivals = sorted(side.arrivals)
    changes = side.changes
    all_acked = sorted(1000 * c["all_acked_s"] for c in changes)
    cpu = [c["cpu_s"] for c in changes]
    out: dict[str, Any] = {
        "p50_ms": _r(percentile(samples, 50)),
        "p99_ms": _r(percentile(samples, 99)),
        "max_ms": _r(samples[-1]),
        "push_arrival_p99_ms": _r(percentile(arrivals, 99)),
        "all_acked_p50_ms": _r(percentile(all_acked, 50)),
        "all_acked_max_ms": _r(all_acked[-1]),
        "cpu_s_per_change": _r(sum(cpu) / len(cpu), 4),
        "cpu_s_changes": _r(sum(cpu), 3),
        "clients_cpu_s_per_change": _r(side.clients_cpu / len(changes), 4),
        "gc_pause_max_ms": _r(max(c["gc"]["max_ms"] for c in changes)),
        "gc_cpu_ms_per_change": _r(sum(c["gc"]["cpu_ms"] for c in changes) / len(changes)),
        "gc_full_collections": sum(c["gc"]["gen2"] for c in changes),
        "cpu_s_process": _r(side.stats["cpu_s"], 2),
        "gc_tracked_objects": side.stats["gc_tracked_objects"],
        "peak_rss_mb": _r(side.stats["peak_rss_mb"]),
        "idle_rss_mb": _r(side.info["idle_rss_mb"]),
        "warmup_s": _r(side.warmup_s, 2),
        "connect_retries": side.retries,
        "connect_retry_reasons": side.reasons,
        "samples": len(samples),
        "versions": [c["version"] for c in changes],
    }
    if side.kind == "controller":
        per_change = [c["resources_serialized"] + (c["bodies_assembled"] or 0) for c in changes]
        # None when the response-body memo could not be read (then the count is incomplete).
        complete = all(c["bodies_assembled"] is not None for c in changes)
        out["serializations_per_change"] = max(per_change) if complete else None
        out["resources_serialized_per_change"] = [c["resources_serialized"] for c in changes]
        out["part_encodings_per_change"] = [c["part_encodings"] for c in changes]
        out["bodies_assembled_per_change"] = [c["bodies_assembled"] for c in changes]
        out["build_snapshot_ms"] = [_r(c["build_snapshot_ms"], 2) for c in changes]
        out["build_snapshot_ms_max"] = _r(max(c["build_snapshot_ms"] for c in changes), 2)
    return out


def _lines(n: int, kind: str, r: dict[str, Any]) -> str:
    text = (
        f"N={n:<5} {kind:<10} p50 {r['p50_ms']:7.1f}  p99 {r['p99_ms']:7.1f}"
        f"  max {r['max_ms']:7.1f} ms | all-acked p50 {r['all_acked_p50_ms']:.1f}"
        f" max {r['all_acked_max_ms']:.1f} ms | cpu {r['cpu_s_per_change']:.3f} s/change"
        f" (clients {r['clients_cpu_s_per_change']:.3f}) | peak RSS {r['peak_rss_mb']:.1f} MB\n"
        f"{'':18} gc {r['gc_cpu_ms_per_change']:.1f} ms cpu/change, longest pause"
        f" {r['gc_pause_max_ms']:.1f} ms, {r['gc_full_collections']} full"
        f" | warm-up {r['warmup_s']:.1f} s, {r['connect_retries']} stream retries"
    )
    if "serializations_per_change" in r:
        text += (
            f" | serializations/change {r['serializations_per_change']}"
            f" ({max(r['resources_serialized_per_change'])} resource,"
            f" {max(b or 0 for b in r['bodies_assembled_per_change'])} body;"
            f" route table parts encoded <= {max(r['part_encodings_per_change'])};"
            f" build_snapshot max {r['build_snapshot_ms_max']:.1f} ms)"
        )
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--sizes", default="100,1000,2000", help="numbers of Envoys (N)")
    parser.add_argument("--changes", type=int, default=5, help="weight changes per N")
    parser.add_argument("--clients-procs", type=int, default=4, help="client worker processes")
    parser.add_argument("--streams-per-channel", type=int, default=100)
    parser.add_argument(
        "--client",
        choices=("h2", "grpcio"),
        default="h2",
        help="simulated Envoys on h2 (~160 us CPU per response) or grpc.aio (~260 us)",
    )
    parser.add_argument(
        "--subscribe", default="cds,rds", help="types each client subscribes to (cds,eds,lds,rds)"
    )
    parser.add_argument(
        "--pin",
        action="store_true",
        help="pin the server to CPU 0 and the clients to the other CPUs",
    )
    parser.add_argument(
        "--gc-freeze",
        action="store_true",
        help="gc.freeze() after startup in the floor too (sluice serve always does it)",
    )
    parser.add_argument("--quick", action="store_true", help="N = 100 and 3 changes: a smoke run")
    parser.add_argument(
        "--profile", metavar="DIR", help="cProfile the changes (DIR/controller-N.pstats, floor-N)"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes = "100"
        args.changes = min(args.changes, 3)
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    subscribe = args.subscribe.split(",")
    if "rds" not in subscribe or not set(subscribe) <= set(ads.TYPES):
        parser.error("--subscribe: a comma list of cds, eds, lds, rds that includes rds")
    if not 1 <= args.changes <= 90:
        parser.error("--changes: 1 to 90")
    if args.profile:
        Path(args.profile).mkdir(parents=True, exist_ok=True)
    steps = change_weights(args.changes)
    cpus = sorted(os.sched_getaffinity(0))
    server_cpus = {cpus[0]} if args.pin and len(cpus) > 1 else None
    client_cpus = set(cpus[1:]) if server_cpus else None

    ads.raise_fd_limit()
    # grpc core logs every GOAWAY at info level when a phase's server stops; keep the output
    # to the figures (children inherit the environment).
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    print(
        f"xds_fanout: Python {platform.python_version()}, {len(cpus)} CPUs"
        f"{' (server pinned to CPU ' + str(cpus[0]) + ')' if server_cpus else ''},"
        f" {args.clients_procs} client processes ({args.client}),"
        f" {args.streams_per_channel} streams per"
        f" channel, subscribe {args.subscribe}, {args.changes} changes per N"
        f"{', PROFILED (cProfile slows both servers)' if args.profile else ''}"
        f"{', EXPERIMENT gc.freeze() in the servers' if args.gc_freeze else ''}",
        flush=True,
    )
    load_before = os.getloadavg()
    digest = source_digest()
    print(
        f"controller/xds sources {digest}; load average before: "
        + " ".join(f"{x:.2f}" for x in load_before)
        + " (other work on this machine skews every figure)",
        flush=True,
    )
    results: dict[str, Any] = {}
    workers: list[ads.Child] = []
    started = time.monotonic()
    try:
        for w in range(args.clients_procs):
            workers.append(ads.Child(f"clients-{w}", ads.client_worker_main))
        for worker in workers:
            _set_affinity(worker.pid, client_cpus)
            worker.call("pid", timeout=60)
        for n in sizes:
            row: dict[str, Any] = run_size(n, workers, args, steps, server_cpus)
            for kind in KINDS:
                print(_lines(n, kind, row[kind]), flush=True)
            if row["controller"]["versions"] != row["floor"]["versions"]:
                raise ads.ChildError("the floor did not push the controller's RDS versions")
            ctl, floor = row["controller"], row["floor"]
            row["ratio_p99"] = _r(ctl["p99_ms"] / floor["p99_ms"], 2) if floor["p99_ms"] else None
            row["ratio_cpu"] = _r(ctl["cpu_s_per_change"] / floor["cpu_s_per_change"], 2)
            print(
                f"N={n:<5} controller / floor: p99 {row['ratio_p99']}x, cpu {row['ratio_cpu']}x",
                flush=True,
            )
            results[str(n)] = row
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except ads.ChildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        for worker in workers:
            worker.stop()

    targets: dict[str, Any] = {}
    serial = {n: r["controller"]["serializations_per_change"] for n, r in results.items()}
    known = None not in serial.values()
    targets["serializations_constant_in_n"] = (
        len(set(serial.values())) == 1 if len(serial) > 1 and known else None
    )
    at = results.get(str(TARGET_N))
    if at is not None:
        c = at["controller"]
        targets["n"] = TARGET_N
        targets["p99_le_250ms"] = c["p99_ms"] <= TARGET_P99_MS
        targets["p99_le_1_5x_floor"] = at["ratio_p99"] is not None and (
            at["ratio_p99"] <= TARGET_RATIO
        )
        targets["peak_rss_le_150mb"] = c["peak_rss_mb"] <= TARGET_RSS_MB
        print(
            f"targets at N={TARGET_N}:"
            f" p99 {c['p99_ms']} ms <= {TARGET_P99_MS:.0f}: {targets['p99_le_250ms']};"
            f" p99 {at['ratio_p99']}x floor <= {TARGET_RATIO}: {targets['p99_le_1_5x_floor']};"
            f" peak RSS {c['peak_rss_mb']} MB <= {TARGET_RSS_MB:.0f}:"
            f" {targets['peak_rss_le_150mb']}",
        )
    print(
        f"serializations per change by N: {serial}"
        f" (constant: {targets['serializations_constant_in_n']})"
    )
    load_after = os.getloadavg()
    print(
        f"total {time.monotonic() - started:.1f} s; load average after: "
        + " ".join(f"{x:.2f}" for x in load_after)
    )
    report = {
        "benchmark": "xds_fanout",
        "cpus": len(cpus),
        "client_processes": args.clients_procs,
        "client": args.client,
        "streams_per_channel": args.streams_per_channel,
        "subscribe": subscribe,
        "changes": args.changes,
        "pinned": bool(server_cpus),
        "profiled": bool(args.profile),
        "gc_freeze": args.gc_freeze,
        "controller_xds_sha256": digest,
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in load_after],
        "results": results,
        "targets": targets,
    }
    print(json.dumps(report, separators=(",", ":")), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
