"""A tiny HTTP/1.1 upstream for the end-to-end suite (run as a script, not imported by tests).

    python upstream_server.py NAME [--median-ms M --sigma S --error-rate E
                                    --slow-share P --slow-factor F] [--record]

Binds 127.0.0.1 on a free port, prints ``{"event": "ready", "name": ..., "port": ...}`` on
stdout, then answers every GET/POST/HEAD (but the fault switch below) with 200, the header
``x-upstream: NAME`` and a small JSON body naming itself. Keep-alive (HTTP/1.1), one thread
per connection. Stops on SIGTERM.

Behaviour for analysis tests (all off by default): each request waits a log-normal time
(median ``--median-ms``, shape ``--sigma``); the slowest ``--slow-share`` of those draws (the
draws above the distribution's ``1 - slow-share`` quantile) wait ``--slow-factor`` times
longer; ``--error-rate`` of the requests answer 503.

Runtime fault switch (for benchmarks such as ``benchmarks/rollback_latency.py``):
``POST /__sluice/fault`` with a JSON object of behaviour fields (``error_rate``, ``median_ms``,
``sigma``, ``slow_share``, ``slow_factor``) replaces those fields for every request answered
from then on; ``GET /__sluice/fault`` shows the behaviour in force. Both answer 200 at once
(no delay, never an injected error) with the behaviour and ``applied_at`` (``time.time()`` when
it took effect); an unknown field or a bad value answers 400. Nothing else changes.

Recording (``--record``, for mirroring tests: the upstream standing for the comparator): every
request answered (but the ``/__sluice/`` ones) is kept, in arrival order: ``method``, ``path``,
``host`` and ``headers`` (``[name, value]`` pairs as received), at most ``RECORD_LIMIT`` (the
oldest are dropped). ``GET /__sluice/requests`` answers ``{"requests": [...], "dropped": N}``.
Without ``--record`` that path is answered like any other.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import random
import signal
import statistics
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass(frozen=True)
class Behaviour:
    """Latency and errors of the upstream (see the module docstring)."""

    median_ms: float = 0.0
    sigma: float = 0.5
    error_rate: float = 0.0
    slow_share: float = 0.0
    slow_factor: float = 1.0

    def delay_s(self) -> float:
        if self.median_ms <= 0:
            return 0.0
        z = random.gauss(0.0, 1.0)
        delay = self.median_ms * math.exp(self.sigma * z)
        if self.slow_share > 0:
            cut = statistics.NormalDist().inv_cdf(1 - self.slow_share)
            if z > cut:
                delay *= self.slow_factor
        return delay / 1000

    def fails(self) -> bool:
        return self.error_rate > 0 and random.random() < self.error_rate

    def changed(self, fields: object) -> Behaviour:
        """This behaviour with ``fields`` (a JSON object) replaced; ValueError when invalid."""
        if not isinstance(fields, dict):
            raise ValueError("expected a JSON object of behaviour fields")
        known = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(fields) - known)
        if unknown:
            raise ValueError(f"unknown fields {unknown}; known: {sorted(known)}")
        values: dict[str, float] = {}
        for key, value in fields.items():
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"{key}: expected a number, got {value!r}")
            values[key] = float(value)
        new = dataclasses.replace(self, **values)
        if not (0.0 <= new.error_rate <= 1.0 and 0.0 <= new.slow_share < 1.0):
            raise ValueError("error_rate must be in [0, 1] and slow_share in [0, 1)")
        if new.median_ms < 0 or new.sigma < 0 or new.slow_factor <= 0:
            raise ValueError("median_ms and sigma must be >= 0, slow_factor > 0")
        return new


FAULT_PATH = "/__sluice/fault"
REQUESTS_PATH = "/__sluice/requests"
RECORD_LIMIT = 10_000


@dataclass
class _Recorder:
    """The requests received (``--record``), bounded."""

    requests: list[dict[str, object]] = dataclasses.field(default_factory=list)
    dropped: int = 0
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)

    def add(self, entry: dict[str, object]) -> None:
        with self.lock:
            self.requests.append(entry)
            if len(self.requests) > RECORD_LIMIT:
                del self.requests[0]
                self.dropped += 1

    def snapshot(self) -> dict[str, object]:
        with self.lock:
            return {"requests": list(self.requests), "dropped": self.dropped}


@dataclass
class _InForce:
    """The behaviour in force, replaced as a whole by ``POST FAULT_PATH`` (each request reads
    ``how`` once, so it never sees half a change)."""

    how: Behaviour
    applied_at: float
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)


def make_handler(
    name: str, behaviour: Behaviour | None = None, record: bool = False
) -> type[BaseHTTPRequestHandler]:
    current = _InForce(behaviour or Behaviour(), time.time())
    recorder = _Recorder() if record else None

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = f"e2e-upstream/{name}"
        # Headers and body are separate writes: without TCP_NODELAY, Nagle's algorithm and
        # Envoy's delayed ACK would add ~40 ms to every response.
        disable_nagle_algorithm = True

        def _fault(self, body: bytes | None) -> None:
            """``GET`` / ``POST`` ``FAULT_PATH``: show or change the behaviour (module doc)."""
            status = 200
            answer: dict[str, object]
            with current.lock:
                try:
                    if body is not None:
                        current.how = current.how.changed(json.loads(body or b"{}"))
                        current.applied_at = time.time()
                    answer = {**dataclasses.asdict(current.how), "applied_at": current.applied_at}
                except ValueError as exc:  # json.JSONDecodeError is a ValueError
                    status, answer = 400, {"error": str(exc)}
            data = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _requests(self) -> None:
            """``GET REQUESTS_PATH``: the recorded requests (module doc)."""
            assert recorder is not None
            data = json.dumps(recorder.snapshot()).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _reply(self, with_body: bool) -> None:
            length = int(self.headers.get("content-length") or 0)
            payload = self.rfile.read(length) if length else b""
            if self.path == FAULT_PATH and self.command in ("GET", "POST"):
                self._fault(payload if self.command == "POST" else None)
                return
            if recorder is not None:
                if self.path == REQUESTS_PATH and self.command == "GET":
                    self._requests()
                    return
                recorder.add(
                    {
                        "method": self.command,
                        "path": self.path,
                        "host": self.headers.get("host"),
                        "headers": [[k.lower(), v] for k, v in self.headers.items()],
                        "at": time.time(),
                    }
                )
            how = current.how
            delay = how.delay_s()
            if delay:
                time.sleep(delay)
            failed = how.fails()
            body = json.dumps({"upstream": name, "path": self.path, "failed": failed}).encode()
            self.send_response(503 if failed else 200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.send_header("x-upstream", name)
            self.end_headers()
            if with_body:
                self.wfile.write(body)

        def do_GET(self) -> None:
            self._reply(True)

        def do_POST(self) -> None:
            self._reply(True)

        def do_HEAD(self) -> None:
            self._reply(False)

        def log_message(self, format: str, *args: object) -> None:
            pass  # one line per request would dominate the test's CPU budget

    return Handler


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("name")
    parser.add_argument("--median-ms", type=float, default=0.0)
    parser.add_argument("--sigma", type=float, default=0.5)
    parser.add_argument("--error-rate", type=float, default=0.0)
    parser.add_argument("--slow-share", type=float, default=0.0)
    parser.add_argument("--slow-factor", type=float, default=1.0)
    parser.add_argument("--record", action="store_true", help="keep the requests received")
    args = parser.parse_args()
    behaviour = Behaviour(
        args.median_ms, args.sigma, args.error_rate, args.slow_share, args.slow_factor
    )
    name = args.name
    server = Server(("127.0.0.1", 0), make_handler(name, behaviour, record=args.record))

    def stop(_signum: int, _frame: object) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    port = server.server_address[1]
    print(json.dumps({"event": "ready", "name": name, "port": port}), flush=True)
    try:
        server.serve_forever(poll_interval=0.1)
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
