"""What each replica's Envoys hold, published for the leader: one Lease per replica.

Envoys connect to any replica (a Service spreads them), but only the leader drives rollouts: a
push is confirmed when every Envoy holds the new weights, whichever replica it is connected
to. Each replica therefore publishes, every few seconds and after each change it serves, a
report on its own ``coordination.k8s.io/v1`` Lease ``sluice-replica-<identity>`` (label
``sluice.dev/replica``): how many Envoys subscribe to routes on it, whether every one of them
ACKed the route configuration it serves now, and the weights of each route it serves
(annotation ``sluice.dev/served``, JSON). ``renewTime`` and ``leaseDurationSeconds`` say how
long the report stands for a live replica: a replica that stopped renewing is gone, and its
Envoys with it (they reconnect to a live one).

Source: Kubernetes ``coordination.k8s.io/v1`` Lease (``holderIdentity``,
``leaseDurationSeconds``, ``renewTime`` as MicroTime), as kube-apiserver identity leases use it.
"""

from __future__ import annotations

import builtins
import json
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from controller.k8s.replica_report import LABEL, ReplicaReport, decode, encode


class ReplicaReports:
    """Publish this replica's report and read the others' (blocking: call from a thread).

    Args:
        api_client: a ``kubernetes.client.ApiClient``.
        namespace: where the report Leases live (the controller's namespace).
        identity: this replica.
        request_timeout_s: each API request's timeout, in seconds.
    """

    def __init__(
        self,
        api_client: client.ApiClient,
        namespace: str,
        identity: str,
        request_timeout_s: float = 5.0,
    ) -> None:
        # Any: raw JSON in and out (_preload_content=False), as the elector does.
        self._api: Any = client.CoordinationV1Api(api_client)
        self._namespace = namespace
        self.identity = identity
        self._timeout = request_timeout_s

    def publish(self, report: ReplicaReport) -> None:
        """Write ``report`` on this replica's Lease (created when missing). Only this replica
        writes it, so the write is a replace of whatever is there.

        Raises:
            kubernetes.client.exceptions.ApiException: the API refused or failed.
        """
        body = encode(report)
        name = body["metadata"]["name"]
        try:
            self._api.replace_namespaced_lease(
                name,
                self._namespace,
                body,
                _preload_content=False,
                _request_timeout=self._timeout,
            )
        except ApiException as exc:
            if exc.status != 404:
                raise
            self._api.create_namespaced_lease(
                self._namespace, body, _preload_content=False, _request_timeout=self._timeout
            )

    def others(self, now: float) -> builtins.list[ReplicaReport]:
        """The live reports of the other replicas (by ``now``, epoch seconds).

        Raises:
            kubernetes.client.exceptions.ApiException: the API refused or failed.
        """
        resp = self._api.list_namespaced_lease(
            self._namespace,
            label_selector=LABEL,
            _preload_content=False,
            _request_timeout=self._timeout,
        )
        items = json.loads(resp.data).get("items") or []
        reports = [decode(item) for item in items]
        return [r for r in reports if r is not None and r.identity != self.identity and r.live(now)]
