"""The HTTP layer of the fake API server: a threaded HTTP/1.1 server on 127.0.0.1, JSON in and
out, errors as ``Status`` objects, watches as chunked newline-delimited JSON events."""

from __future__ import annotations

import contextlib
import json
import re
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlsplit

from .errors import ApiError, expired
from .resources import PathError, Target, parse_path
from .selectors import SelectorError, field_selector, label_selector
from .watchers import Watcher

if TYPE_CHECKING:
    from . import FakeKube

# The real server picks a random duration in [min-request-timeout, 2x) (1800 s by default).
DEFAULT_WATCH_TIMEOUT_S = 1800.0


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, kube: FakeKube) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.kube = kube
        self.connections: set[socket.socket] = set()
        self.conn_lock = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes: with Nagle's algorithm the second one waits
    # for the client's delayed ACK, ~40 ms per request on a kept-alive connection.
    disable_nagle_algorithm = True
    server: Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def setup(self) -> None:
        super().setup()
        with self.server.conn_lock:
            self.server.connections.add(self.connection)

    def finish(self) -> None:
        with contextlib.suppress(OSError):
            super().finish()
        with self.server.conn_lock:
            self.server.connections.discard(self.connection)

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def do_PATCH(self) -> None:
        self._handle("PATCH")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    # ------------------------------------------------------------------------------------
    def _send_json(self, code: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if not raw:
            return None
        try:
            return json.loads(raw)
        except ValueError:
            raise ApiError(400, "the request body is not valid JSON") from None

    def _handle(self, method: str) -> None:
        kube = self.server.kube
        url = urlsplit(self.path)
        kube._log_request(method, url.path, url.query)
        kube._wait_held(method, url.path)
        params = dict(parse_qsl(url.query, keep_blank_values=True))
        try:
            body = self._body()
            failure = kube._take_failure(method, url.path)
            if failure is not None:
                raise ApiError(failure, f"injected failure {failure} for {method} {url.path}")
            try:
                target = parse_path(url.path)
            except PathError:
                raise ApiError(404, "the server could not find the requested resource") from None
            self._dispatch(method, target, params, body)
        except ApiError as exc:
            self._send_json(exc.code, exc.status())
        except SelectorError as exc:
            self._send_json(400, ApiError(400, f"unable to parse selector: {exc}").status())

    def _dispatch(self, method: str, t: Target, params: dict[str, str], body: Any) -> None:
        store = self.server.kube.store
        res, ns, name, sub = t.resource, t.namespace, t.name, t.subresource
        strict = params.get("fieldValidation") == "Strict"
        if name is None:
            if method == "GET":
                pred_l = label_selector(params.get("labelSelector"))
                pred_f = field_selector(params.get("fieldSelector"))

                def pred(o: dict[str, Any]) -> bool:
                    return pred_l(o) and pred_f(o)

                if params.get("watch") in ("true", "1"):
                    self._watch(t, params, pred)
                    return
                items, rv = store.select(res, ns, pred)
                if not res.custom:
                    for item in items:
                        item.pop("apiVersion", None)
                        item.pop("kind", None)
                self._send_json(
                    200,
                    {
                        "kind": f"{res.kind}List",
                        "apiVersion": res.api_version,
                        "metadata": {"resourceVersion": str(rv)},
                        "items": items,
                    },
                )
            elif method == "POST" and (ns is not None or not res.namespaced):
                self._send_json(201, store.create(res, ns, body, strict))
            else:
                raise ApiError(405, f"{method} is not supported on a collection here")
            return
        if method == "GET":
            self._send_json(200, store.get(res, ns, name))
        elif method == "PUT":
            self._send_json(200, store.replace(res, ns, name, body, sub, strict))
        elif method == "PATCH":
            ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip()
            self._send_json(200, store.patch(res, ns, name, ctype, body, sub, strict))
        elif method == "DELETE" and sub is None:
            gone = store.delete(res, ns, name, body)
            if res.custom:
                self._send_json(200, gone)
            else:
                details = {"name": name, "group": res.group, "kind": res.plural}
                details["uid"] = gone["metadata"]["uid"]
                status = {"kind": "Status", "apiVersion": "v1", "metadata": {}}
                self._send_json(200, {**status, "status": "Success", "details": details})
        else:
            raise ApiError(405, f"{method} is not supported here")

    # ------------------------------------------------------------------------------------
    def _chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def _event(self, type_: str, obj: dict[str, Any]) -> None:
        self._chunk(json.dumps({"type": type_, "object": obj}).encode() + b"\n")

    def _watch(self, t: Target, params: dict[str, str], pred: Any) -> None:
        kube = self.server.kube
        store = kube.store
        timeout = params.get("timeoutSeconds")
        deadline = time.monotonic() + (float(timeout) if timeout else DEFAULT_WATCH_TIMEOUT_S)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            try:
                w = store.open_watch(t.resource, t.namespace, pred, params.get("resourceVersion"))
            except ApiError as exc:
                # The real server answers a too old resourceVersion with 200 and one ERROR
                # event carrying the 410 Status, then ends the stream.
                self._event("ERROR", exc.status())
                self._chunk(b"")
                return
            try:
                self._stream(w, t, params, deadline)
            finally:
                store.close_watcher(w)
        except OSError:
            self.close_connection = True

    def _stream(self, w: Watcher, t: Target, params: dict[str, str], deadline: float) -> None:
        kube = self.server.kube
        store = kube.store
        for type_, obj in w.initial:
            self._event(type_, obj)
        while True:
            events, end = store.next_events(w, deadline)
            for type_, obj in events:
                self._event(type_, obj)
            if end is None:
                continue
            if end == "closed" and kube._cut_abrupt:
                # A network cut: no terminating chunk, the connection just goes.
                self.close_connection = True
                with contextlib.suppress(OSError):
                    self.connection.shutdown(socket.SHUT_RDWR)
                return
            if end == "expired":
                self._event("ERROR", _expired_status(w.last, store.floor))
            if end == "timeout" and params.get("allowWatchBookmarks") in ("true", "1"):
                rv = str(store.resource_version)
                self._event(
                    "BOOKMARK",
                    {
                        "kind": t.resource.kind,
                        "apiVersion": t.resource.api_version,
                        "metadata": {"resourceVersion": rv},
                    },
                )
            self._chunk(b"")
            if end == "closed":
                self.close_connection = True
            return


def _expired_status(requested: int, floor: int) -> dict[str, Any]:
    return expired(requested, floor + 1).status()


class FailureRules:
    """``fail_next`` rules: the next ``times`` requests matching (method, path regex) are
    answered with ``status``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rules: list[list[Any]] = []

    def add(self, method: str, path_regex: str, status: int, times: int) -> None:
        with self._lock:
            if times <= 0:
                self._rules = [
                    r for r in self._rules if (r[0], r[1].pattern) != (method.upper(), path_regex)
                ]
                return
            self._rules.append([method.upper(), re.compile(path_regex), status, times])

    def take(self, method: str, path: str) -> int | None:
        with self._lock:
            for rule in self._rules:
                if rule[0] in (method, "*") and rule[1].search(path):
                    rule[3] -= 1
                    if rule[3] <= 0:
                        self._rules.remove(rule)
                    return int(rule[2])
            return None
