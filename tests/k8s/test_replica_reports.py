"""Replica reports on Leases, through the fake API server and the official client."""

from __future__ import annotations

from fakekube import FakeKube

from controller.k8s.replica_report import ReplicaReport, decode, encode, lease_name
from controller.k8s.replica_reports import ReplicaReports

NS = "sluice"


def report(identity: str, at: float, **kw: object) -> ReplicaReport:
    fields: dict[str, object] = {"ttl_s": 3.0, "nodes": 2, "held": True, "routes": {}}
    fields.update(kw)
    return ReplicaReport(identity, at, **fields)  # type: ignore[arg-type]


def test_a_report_round_trips_through_its_lease_body() -> None:
    sent = report("Pod_A.1", 1_800_000_000.25, routes={"comments": {"py": 9_000, "go": 1_000}})
    body = encode(sent)
    assert body["metadata"]["name"] == lease_name("Pod_A.1") == "sluice-replica-pod-a.1"
    assert decode(body) == sent


def test_a_damaged_report_reads_as_none() -> None:
    body = encode(report("a", 1.0))
    body["metadata"]["annotations"]["sluice.dev/served"] = "{not json"
    assert decode(body) is None


def test_replicas_see_each_others_live_reports_not_their_own_nor_stale_ones(
    kube: FakeKube,
) -> None:
    api = kube.api_client()
    a, b, c = (ReplicaReports(api, NS, name) for name in ("a", "b", "c"))
    a.publish(report("a", 100.0, routes={"comments": {"py": 5_000, "go": 5_000}}))
    b.publish(report("b", 100.0, nodes=0))
    c.publish(report("c", 90.0))  # renewed 10 s ago, ttl 3 s: gone
    seen = {r.identity: r for r in a.others(101.0)}
    assert set(seen) == {"b"}
    assert {r.identity for r in b.others(101.0)} == {"a"}
    # A second publish replaces the first (one Lease per replica).
    a.publish(report("a", 101.0, held=False, routes={"comments": {"py": 0, "go": 10_000}}))
    (latest,) = b.others(101.5)
    assert latest.routes == {"comments": {"py": 0, "go": 10_000}}
    assert not latest.held
    assert (
        len([o for o in kube.objects("leases", NS) if o["metadata"]["name"] == "sluice-replica-a"])
        == 1
    )


def test_holds_means_every_envoy_of_the_replica_has_the_weights() -> None:
    want = {"py": 4_000, "go": 6_000}
    assert report("a", 1.0, routes={"comments": want}).holds("comments", want)
    assert not report("a", 1.0, held=False, routes={"comments": want}).holds("comments", want)
    assert not report("a", 1.0, routes={"comments": {"py": 10_000, "go": 0}}).holds(
        "comments", want
    )
    assert report("a", 1.0, nodes=0, held=False).holds("comments", want)
