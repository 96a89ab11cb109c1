"""A fake Kubernetes API server for tests, driven through the official ``kubernetes`` client.

Serves ``rollouts`` (sluice.dev/v1alpha1, status subresource), ``leases``
(coordination.k8s.io/v1), ``events`` (core v1 and events.k8s.io/v1, stored apart),
``endpointslices`` (discovery.k8s.io/v1), ``services`` and ``namespaces`` (core v1) with the
real server's semantics for resourceVersion (one global counter, from 1 as etcd's revision),
409 Conflict / AlreadyExists, 404 NotFound, the status subresource, merge / JSON /
strategic-merge patches (strategic as merge), label and field selectors, time fields
(MicroTime / Time re-encoded), and watches (ADDED replay from "0" or unset, resume from N,
an ERROR event with a 410 Expired Status once N is older than the retained history, selector
entry/exit as ADDED/DELETED, BOOKMARK before a ``timeoutSeconds`` end). Test controls inject
failures (``fail_next``), end watches (``close_watches``), stall them (``stall_watches``),
end each one at once (``flap_watches``), forget history (``compact``) and leave requests
unanswered (``hold``). ``install_crd`` adds the CRD's pruning, defaulting and validation.
Built-in kinds' list items omit apiVersion/kind and their DELETE answers a Success
``Status``, as the real server's do.

Not served: authentication and authorization (use ``fail_next(..., 403)``), admission,
finalizers and graceful deletion, server-side apply, namespace existence checks, pagination
(``limit`` / ``continue`` ignored), ``resourceVersionMatch`` on lists, deletecollection.

Source: https://kubernetes.io/docs/reference/using-api/api-concepts/
"""

from __future__ import annotations

import contextlib
import re
import socket
import threading
from pathlib import Path
from types import TracebackType
from typing import Any

import kubernetes.client
import yaml

from .crd import CustomResource, crd_version_schema
from .resources import parse_path
from .server import FailureRules, Server
from .store import Store

__all__ = ["FakeKube"]


class FakeKube:
    """A fake Kubernetes API server on 127.0.0.1:<port 0>, in a background thread."""

    def __init__(self, history_limit: int = 1000) -> None:
        self.store = Store(history_limit)
        self.requests: list[tuple[str, str, str]] = []
        self._requests_lock = threading.Lock()
        self._failures = FailureRules()
        self._cut_abrupt = False
        self._held = threading.Condition()
        self._holds: list[tuple[str, re.Pattern[str]]] = []
        self._server = Server(self)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._clients: list[kubernetes.client.ApiClient] = []

    @classmethod
    def start(cls, history_limit: int = 1000) -> FakeKube:
        """Start serving; ``history_limit`` changes are kept for watches to resume from."""
        kube = cls(history_limit)
        kube._thread.start()
        return kube

    def stop(self) -> None:
        """Close every watch and connection, free the port, join the server thread."""
        self.store.stop()
        self.release()
        self._server.shutdown()
        self._server.server_close()
        with self._server.conn_lock:
            conns = list(self._server.connections)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        self._thread.join(timeout=10)
        for client in self._clients:
            with contextlib.suppress(Exception):
                client.close()  # type: ignore[no-untyped-call]

    def __enter__(self) -> FakeKube:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- clients -------------------------------------------------------------------------
    def api_client(self) -> kubernetes.client.ApiClient:
        """A client for this server (no authentication); closed by :meth:`stop`."""
        config = kubernetes.client.Configuration(host=self.url)
        client = kubernetes.client.ApiClient(config)
        self._clients.append(client)
        return client

    def kubeconfig(self, path: Path, context: str = "fake", namespace: str | None = None) -> Path:
        """Write a kubeconfig naming this server (a token user, ``context`` current)."""
        ctx: dict[str, Any] = {"cluster": "fake-cluster", "user": "fake-user"}
        if namespace is not None:
            ctx["namespace"] = namespace
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "fake-cluster", "cluster": {"server": self.url}}],
            "users": [{"name": "fake-user", "user": {"token": "fake-token"}}],
            "contexts": [{"name": context, "context": ctx}],
            "current-context": context,
        }
        path.write_text(yaml.safe_dump(config))
        return path

    # -- controls for tests --------------------------------------------------------------
    def install_crd(self, crd: dict[str, Any]) -> None:
        """Install a CustomResourceDefinition (a dict, e.g. ``controller.k8s.crd.rollout_crd()``)
        for a kind the fake serves: its objects are then pruned, defaulted and validated
        against the served version's ``openAPIV3Schema`` on every write, as a cluster with
        the CRD applied does. Without it, objects are stored as sent."""
        spec = crd["spec"]
        group, plural = spec["group"], spec["names"]["plural"]
        for version in spec["versions"]:
            target = parse_path(f"/apis/{group}/{version['name']}/{plural}")
            schema = crd_version_schema(crd, version["name"])
            with self.store.cond:
                self.store.crds[target.resource.key] = CustomResource(target.resource, schema)

    def compact(self) -> None:
        """Forget the watch history: a watch from an older resourceVersion gets 410 Gone."""
        self.store.compact()

    def close_watches(self, abrupt: bool = False) -> None:
        """End every open watch stream: cleanly (terminating chunk, as a server timeout does)
        or, with ``abrupt``, by cutting the connection mid-stream (a network cut)."""
        self._cut_abrupt = abrupt
        self.store.close_watches()

    def stall_watches(self, on: bool = True) -> None:
        """With ``on``, every watch stream (open or opened later) stays connected but
        delivers nothing, not even its ``timeoutSeconds`` end (a half-open connection, a
        buffering proxy); ``on=False`` lets them deliver what they held back.
        :meth:`close_watches` and :meth:`stop` still end them."""
        self.store.stall(on)

    def flap_watches(self, on: bool = True) -> None:
        """With ``on``, every watch stream (open or opened later) is answered, then ends at
        once having delivered nothing (a proxy cutting streams, a server failing each one
        right after its headers); ``on=False`` serves them normally again."""
        self.store.flap(on)

    def hold(self, method: str, path_regex: str) -> None:
        """Leave every request whose method is ``method`` ("*" for any) and whose path matches
        ``path_regex`` unanswered (the connection open, no status line) until :meth:`release`
        (or :meth:`stop`)."""
        with self._held:
            self._holds.append((method.upper(), re.compile(path_regex)))

    def release(self) -> None:
        """Answer the held requests and hold no more."""
        with self._held:
            self._holds.clear()
            self._held.notify_all()

    def fail_next(self, method: str, path_regex: str, status: int, times: int = 1) -> None:
        """Answer the next ``times`` requests whose method is ``method`` ("*" for any) and
        whose path matches ``path_regex`` (``re.search``) with a ``Status`` of ``status``.
        ``times=0`` cancels the rules with this method and regex."""
        self._failures.add(method, path_regex, status, times)

    def open_watches(self) -> int:
        """How many watch streams are open now (registered: events from now on reach them)."""
        with self.store.cond:
            return self.store.open_watchers

    def objects(self, plural: str, namespace: str | None = None) -> list[dict[str, Any]]:
        """The stored objects of ``plural`` (every group serving it), in ``namespace`` or all."""
        return self.store.objects(plural, namespace)

    # -- used by the server --------------------------------------------------------------
    def _log_request(self, method: str, path: str, query: str) -> None:
        with self._requests_lock:
            self.requests.append((method, path, query))

    def _wait_held(self, method: str, path: str) -> None:
        with self._held:
            self._held.wait_for(
                lambda: (
                    self.store.stopping
                    or not any(m in (method, "*") and r.search(path) for m, r in self._holds)
                )
            )

    def _take_failure(self, method: str, path: str) -> int | None:
        return self._failures.take(method, path)
