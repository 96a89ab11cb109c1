"""A tiny HTTP/1.1 upstream for the end-to-end suite (run as a script, not imported by tests).

    python upstream_server.py NAME

Binds 127.0.0.1 on a free port, prints ``{"event": "ready", "name": ..., "port": ...}`` on
stdout, then answers every GET/POST/HEAD with 200, the header ``x-upstream: NAME`` and a small
JSON body naming itself. Keep-alive (HTTP/1.1), one thread per connection. Stops on SIGTERM.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def make_handler(name: str) -> type[BaseHTTPRequestHandler]:
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
            body = json.dumps({"upstream": name, "path": self.path}).encode()
            self.send_response(200)
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
    name = sys.argv[1]
    server = Server(("127.0.0.1", 0), make_handler(name))

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
