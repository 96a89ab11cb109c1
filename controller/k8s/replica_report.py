"""A replica's report to the leader, and its encoding on a Lease (pure: no I/O).

See :mod:`controller.k8s.replica_reports` for the why and the I/O.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from controller.k8s.lease import format_micro_time, parse_micro_time

log = logging.getLogger(__name__)

LABEL = "sluice.dev/replica"
"""Label of every replica's report Lease (its value: the identity, cut to a label value)."""
ANNOTATION = "sluice.dev/served"
"""Annotation holding the report (JSON)."""
PREFIX = "sluice-replica-"


def lease_name(identity: str) -> str:
    """The report Lease of ``identity``: ``sluice-replica-`` and the identity made a DNS-1123
    subdomain (lower case; other characters become ``-``; at most 253 characters)."""
    tail = re.sub(r"[^a-z0-9.-]+", "-", identity.lower()).strip("-.") or "replica"
    return (PREFIX + tail)[:253].rstrip("-.")


@dataclass(frozen=True)
class ReplicaReport:
    """One replica's report.

    Attributes:
        identity: the replica (its Lease holder).
        renewed_at: when it was written (epoch seconds, the Lease's ``renewTime``).
        ttl_s: how long it stands (``leaseDurationSeconds``).
        nodes: Envoys subscribed to routes on that replica.
        held: every one of them ACKed the route configuration the replica serves.
        routes: route → cluster → weight, as the replica serves them.
    """

    identity: str
    renewed_at: float
    ttl_s: float
    nodes: int
    held: bool
    routes: dict[str, dict[str, int]] = field(default_factory=dict)

    def live(self, now: float) -> bool:
        """The replica renewed its report within ``ttl_s`` of ``now`` (epoch seconds)."""
        return now < self.renewed_at + self.ttl_s

    def holds(self, route: str, weights: Mapping[str, int]) -> bool:
        """Every Envoy on this replica has ``weights`` on ``route`` (true with no Envoy)."""
        return self.nodes == 0 or (self.held and self.routes.get(route) == dict(weights))


def encode(report: ReplicaReport) -> dict[str, Any]:
    """The report as a Lease body (``metadata`` without ``resourceVersion``)."""
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {
            "name": lease_name(report.identity),
            "labels": {LABEL: lease_name(report.identity)[-63:].lstrip("-.") or "replica"},
            "annotations": {
                ANNOTATION: json.dumps(
                    {"nodes": report.nodes, "held": report.held, "routes": report.routes},
                    sort_keys=True,
                )
            },
        },
        "spec": {
            "holderIdentity": report.identity,
            "leaseDurationSeconds": max(1, math.ceil(report.ttl_s)),
            "renewTime": format_micro_time(report.renewed_at),
        },
    }


def decode(lease: Mapping[str, Any]) -> ReplicaReport | None:
    """A report from a Lease body; None when it is not one (or is damaged: logged)."""
    spec = lease.get("spec") or {}
    annotations = (lease.get("metadata") or {}).get("annotations") or {}
    try:
        body = json.loads(annotations[ANNOTATION])
        return ReplicaReport(
            identity=str(spec["holderIdentity"]),
            renewed_at=parse_micro_time(str(spec["renewTime"])),
            ttl_s=float(spec["leaseDurationSeconds"]),
            nodes=int(body["nodes"]),
            held=bool(body["held"]),
            routes={
                str(r): {str(c): int(w) for c, w in ws.items()} for r, ws in body["routes"].items()
            },
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        name = (lease.get("metadata") or {}).get("name")
        log.warning("replica report %s cannot be read: %r", name, exc)
        return None
