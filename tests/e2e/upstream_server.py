"""A tiny HTTP/1.1 upstream for the end-to-end suite (run as a script, not imported by tests).

    python upstream_server.py NAME [--median-ms M --sigma S --error-rate E
                                    --slow-share P --slow-factor F]

Binds 127.0.0.1 on a free port, prints ``{"event": "ready", "name": ..., "port": ...}`` on
stdout, then answers every GET/POST/HEAD with 200, the header ``x-upstream: NAME`` and a small
JSON body naming itself. Keep-alive (HTTP/1.1), one thread per connection. Stops on SIGTERM.

Behaviour for analysis tests (all off by default): each request waits a log-normal time
(median ``--median-ms``, shape ``--sigma``); the slowest ``--slow-share`` of those draws (the
draws above the distribution's ``1 - slow-share`` quantile) wait ``--slow-factor`` times
longer; ``--error-rate`` of the requests answer 503.
"""

from __future__ import annotations

import argparse
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


def make_handler(name: str, behaviour: Behaviour | None = None) -> type[BaseHTTPRequestHandler]:
    how = behaviour or Behaviour()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = f"e2e-upstream/{name}"
        # Headers and body are separate writes: without TCP_NODELAY, Nagle's algorithm and
        # Envoy's delayed ACK would add ~40 ms to every response.
        disable_nagle_algorithm = True

        def _reply(self, with_body: bool) -> None:
            length = int(self.headers.get("content-length") or 0)
            if length:
                self.rfile.read(length)
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
    args = parser.parse_args()
    behaviour = Behaviour(
        args.median_ms, args.sigma, args.error_rate, args.slow_share, args.slow_factor
    )
    name = args.name
    server = Server(("127.0.0.1", 0), make_handler(name, behaviour))

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
