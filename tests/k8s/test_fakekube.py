"""The fake API server (tests/fakekube), driven through the official ``kubernetes`` client:
the semantics other tests rely on, as the real API server has them."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import kubernetes.client
import kubernetes.config
import pytest
import yaml
from fakekube import FakeKube
from kubernetes import watch
from kubernetes.client import ApiException

from controller.k8s.crd import rollout_crd

GROUP, VERSION, PLURAL, NS = "sluice.dev", "v1alpha1", "rollouts", "team"


def new_watch() -> Any:
    """A ``kubernetes.watch.Watch`` (the client does not type it)."""
    return watch.Watch()  # type: ignore[no-untyped-call]


def rollout(name: str, spec: dict[str, Any] | None = None, **meta: Any) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Rollout",
        "metadata": {"name": name, **meta},
        "spec": spec if spec is not None else {"route": name},
    }


@pytest.fixture
def api(kube: FakeKube) -> kubernetes.client.CustomObjectsApi:
    return kubernetes.client.CustomObjectsApi(kube.api_client())


class Rollouts:
    """Shorthands for the custom-object calls on rollouts in NS."""

    def __init__(self, api: kubernetes.client.CustomObjectsApi) -> None:
        self.api: Any = api

    def create(self, body: dict[str, Any], ns: str = NS) -> dict[str, Any]:
        return self.api.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, body)  # type: ignore[no-any-return]

    def get(self, name: str) -> dict[str, Any]:
        return self.api.get_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, name)  # type: ignore[no-any-return]

    def replace(self, body: dict[str, Any]) -> dict[str, Any]:
        name = body["metadata"]["name"]
        return self.api.replace_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, name, body)  # type: ignore[no-any-return]

    def replace_status(self, body: dict[str, Any]) -> dict[str, Any]:
        name = body["metadata"]["name"]
        return self.api.replace_namespaced_custom_object_status(  # type: ignore[no-any-return]
            GROUP, VERSION, NS, PLURAL, name, body
        )

    def patch(self, name: str, body: Any) -> dict[str, Any]:
        return self.api.patch_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, name, body)  # type: ignore[no-any-return]

    def patch_status(self, name: str, body: Any) -> dict[str, Any]:
        return self.api.patch_namespaced_custom_object_status(  # type: ignore[no-any-return]
            GROUP, VERSION, NS, PLURAL, name, body
        )

    def delete(self, name: str) -> Any:
        return self.api.delete_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, name)

    def list(self, **kw: Any) -> dict[str, Any]:
        return self.api.list_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, **kw)  # type: ignore[no-any-return]


@pytest.fixture
def ro(api: kubernetes.client.CustomObjectsApi) -> Rollouts:
    return Rollouts(api)


def api_error(exc: pytest.ExceptionInfo[ApiException]) -> dict[str, Any]:
    assert exc.value.body is not None
    body = json.loads(exc.value.body)
    assert body["kind"] == "Status"
    assert body["status"] == "Failure"
    assert body["code"] == exc.value.status
    return body  # type: ignore[no-any-return]


# -- create / get / list / delete ---------------------------------------------------------


def test_create_sets_metadata_and_drops_status(ro: Rollouts) -> None:
    created = ro.create({**rollout("a"), "status": {"phase": "done"}})
    meta = created["metadata"]
    assert meta["namespace"] == NS
    assert meta["generation"] == 1
    assert meta["resourceVersion"].isdigit()
    assert len(meta["uid"]) == 36
    assert meta["creationTimestamp"].endswith("Z")
    assert "status" not in created
    assert ro.get("a") == created


def test_resource_version_is_one_global_counter(kube: FakeKube, ro: Rollouts) -> None:
    a = ro.create(rollout("a"))
    coord: Any = kubernetes.client.CoordinationV1Api(kube.api_client())
    lease = coord.create_namespaced_lease(
        NS, kubernetes.client.V1Lease(metadata=kubernetes.client.V1ObjectMeta(name="l"))
    )
    b = ro.create(rollout("b"))
    rvs = [int(a["metadata"]["resourceVersion"]), int(lease.metadata.resource_version)]
    rvs.append(int(b["metadata"]["resourceVersion"]))
    assert rvs == sorted(rvs)
    assert len(set(rvs)) == 3


def test_generate_name(ro: Rollouts) -> None:
    body = rollout("")
    body["metadata"] = {"generateName": "canary-"}
    first, second = ro.create(body), ro.create(body)
    assert first["metadata"]["name"].startswith("canary-")
    assert len(first["metadata"]["name"]) == len("canary-") + 5
    assert first["metadata"]["name"] != second["metadata"]["name"]


def test_already_exists_and_not_found(ro: Rollouts) -> None:
    ro.create(rollout("a"))
    with pytest.raises(ApiException) as exc:
        ro.create(rollout("a"))
    body = api_error(exc)
    assert (exc.value.status, body["reason"]) == (409, "AlreadyExists")
    assert body["details"]["name"] == "a"
    with pytest.raises(ApiException) as exc:
        ro.get("missing")
    body = api_error(exc)
    assert (exc.value.status, body["reason"]) == (404, "NotFound")
    assert body["message"] == 'rollouts.sluice.dev "missing" not found'


def test_delete_then_get_is_not_found(ro: Rollouts) -> None:
    ro.create(rollout("a"))
    deleted = ro.delete("a")
    assert deleted["metadata"]["name"] == "a"
    with pytest.raises(ApiException) as exc:
        ro.get("a")
    assert exc.value.status == 404
    with pytest.raises(ApiException) as exc:
        ro.delete("a")
    assert exc.value.status == 404


def test_list_has_items_and_resource_version(ro: Rollouts) -> None:
    ro.create(rollout("b"))
    last = ro.create(rollout("a"))
    ro.create(rollout("c"), ns="other")
    listed = ro.list()
    assert [i["metadata"]["name"] for i in listed["items"]] == ["a", "b"]
    assert listed["metadata"]["resourceVersion"] == str(
        int(last["metadata"]["resourceVersion"]) + 1
    )
    everywhere = ro.api.list_cluster_custom_object(GROUP, VERSION, PLURAL)
    assert sorted(i["metadata"]["name"] for i in everywhere["items"]) == ["a", "b", "c"]


def test_label_and_field_selectors(ro: Rollouts) -> None:
    ro.create(rollout("a", labels={"app": "web", "tier": "front"}))
    ro.create(rollout("b", labels={"app": "web"}))
    ro.create(rollout("c", labels={"app": "db"}))

    def names(**kw: Any) -> list[str]:
        return [i["metadata"]["name"] for i in ro.list(**kw)["items"]]

    assert names(label_selector="app=web") == ["a", "b"]
    assert names(label_selector="app==web,tier=front") == ["a"]
    assert names(label_selector="app!=web") == ["c"]
    assert names(label_selector="tier") == ["a"]
    assert names(label_selector="!tier") == ["b", "c"]
    assert names(label_selector="app in (db, web),tier notin (front)") == ["b", "c"]
    assert names(field_selector="metadata.name=b") == ["b"]
    assert names(field_selector=f"metadata.namespace={NS},metadata.name!=b") == ["a", "c"]


# -- replace / patch / status subresource / conflicts -------------------------------------


def test_replace_bumps_generation_on_spec_change_only(ro: Rollouts) -> None:
    created = ro.create(rollout("a", spec={"n": 1}))
    labelled = ro.replace({**created, "metadata": {**created["metadata"], "labels": {"x": "1"}}})
    assert labelled["metadata"]["generation"] == 1
    assert int(labelled["metadata"]["resourceVersion"]) > int(
        created["metadata"]["resourceVersion"]
    )
    changed = ro.replace({**labelled, "spec": {"n": 2}})
    assert changed["metadata"]["generation"] == 2
    assert changed["metadata"]["uid"] == created["metadata"]["uid"]
    unchanged = ro.replace(changed)
    assert unchanged["metadata"]["resourceVersion"] == changed["metadata"]["resourceVersion"]


def test_replace_with_stale_resource_version_is_conflict(ro: Rollouts) -> None:
    created = ro.create(rollout("a"))
    ro.replace({**created, "spec": {"n": 2}})
    with pytest.raises(ApiException) as exc:
        ro.replace({**created, "spec": {"n": 3}})
    body = api_error(exc)
    assert (exc.value.status, body["reason"]) == (409, "Conflict")
    assert "the object has been modified" in body["message"]
    assert ro.get("a")["spec"] == {"n": 2}
    # Without a resourceVersion the update is unconditional, as the real server allows.
    blind = {**created, "metadata": {"name": "a"}, "spec": {"n": 4}}
    assert ro.replace(blind)["spec"] == {"n": 4}


def test_replace_missing_is_not_found(ro: Rollouts) -> None:
    with pytest.raises(ApiException) as exc:
        ro.replace(rollout("ghost"))
    assert exc.value.status == 404


def test_status_subresource(ro: Rollouts) -> None:
    created = ro.create(rollout("a", spec={"n": 1}))
    # /status changes only status: spec and labels in the body are ignored.
    body = {**created, "spec": {"n": 99}, "status": {"phase": "Progressing"}}
    body["metadata"] = {**created["metadata"], "labels": {"x": "y"}}
    with_status = ro.replace_status(body)
    assert with_status["status"] == {"phase": "Progressing"}
    assert with_status["spec"] == {"n": 1}
    assert "labels" not in with_status["metadata"]
    assert with_status["metadata"]["generation"] == 1
    # The main resource keeps the stored status whatever the body says.
    main = ro.replace({**with_status, "spec": {"n": 2}, "status": {"phase": "Bogus"}})
    assert main["status"] == {"phase": "Progressing"}
    assert main["spec"] == {"n": 2}
    # A stale resourceVersion on /status is a conflict too.
    with pytest.raises(ApiException) as exc:
        ro.replace_status({**with_status, "status": {"phase": "Late"}})
    assert exc.value.status == 409
    # Patches on /status change only status; on the main resource status is dropped.
    patched = ro.patch_status("a", {"status": {"weight": 5}, "spec": {"n": 7}})
    assert patched["status"] == {"phase": "Progressing", "weight": 5}
    assert patched["spec"] == {"n": 2}
    patched = ro.patch("a", {"spec": {"n": 3}, "status": {"phase": "Bogus"}})
    assert patched["status"]["phase"] == "Progressing"
    assert patched["spec"] == {"n": 3}
    assert patched["metadata"]["generation"] == 3


def test_merge_patch_and_precondition(ro: Rollouts) -> None:
    created = ro.create(rollout("a", spec={"keep": 1, "drop": 2}, labels={"a": "1"}))
    patched = ro.patch("a", {"spec": {"drop": None, "add": 3}, "metadata": {"labels": {"b": "2"}}})
    assert patched["spec"] == {"keep": 1, "add": 3}
    assert patched["metadata"]["labels"] == {"a": "1", "b": "2"}
    stale = {"metadata": {"resourceVersion": created["metadata"]["resourceVersion"]}, "spec": {}}
    with pytest.raises(ApiException) as exc:
        ro.patch("a", stale)
    assert exc.value.status == 409
    fresh = {"metadata": {"resourceVersion": patched["metadata"]["resourceVersion"]}}
    assert ro.patch("a", {**fresh, "spec": {"keep": 9}})["spec"]["keep"] == 9


def test_json_patch(ro: Rollouts) -> None:
    ro.create(rollout("a", spec={"list": [1, 2], "n": 1}))
    ops = [
        {"op": "add", "path": "/spec/list/-", "value": 3},
        {"op": "replace", "path": "/spec/n", "value": 2},
        {"op": "test", "path": "/spec/n", "value": 2},
    ]
    patched = ro.api.patch_namespaced_custom_object(
        GROUP, VERSION, NS, PLURAL, "a", ops, _content_type="application/json-patch+json"
    )
    assert patched["spec"] == {"list": [1, 2, 3], "n": 2}
    with pytest.raises(ApiException) as exc:
        ro.api.patch_namespaced_custom_object(
            GROUP,
            VERSION,
            NS,
            PLURAL,
            "a",
            [{"op": "test", "path": "/spec/n", "value": 1}],
            _content_type="application/json-patch+json",
        )
    assert exc.value.status == 422


# -- an installed CRD: pruning, defaulting, validation ----------------------------------------


def policy_spec(name: str = "search.yaml") -> dict[str, Any]:
    path = Path(__file__).resolve().parents[2] / "policies" / name
    spec: dict[str, Any] = yaml.safe_load(path.read_text())["spec"]
    return spec


def test_installed_crd_prunes_defaults_and_validates(kube: FakeKube, ro: Rollouts) -> None:
    kube.install_crd(rollout_crd())
    spec = policy_spec()
    created = ro.create(rollout("a", spec={**spec, "notInSchema": 1}))
    assert "notInSchema" not in created["spec"]  # pruned, as without fieldValidation=Strict
    assert set(spec) < set(created["spec"])  # schema defaults filled in
    assert {k: created["spec"][k] for k in spec} == spec
    with pytest.raises(ApiException) as exc:
        ro.api.create_namespaced_custom_object(
            GROUP,
            VERSION,
            NS,
            PLURAL,
            rollout("b", spec={**spec, "notInSchema": 1}),
            field_validation="Strict",
        )
    assert exc.value.status == 400
    assert 'unknown field "spec.notInSchema"' in api_error(exc)["message"]
    missing = {k: v for k, v in spec.items() if k != "route"}
    with pytest.raises(ApiException) as exc:
        ro.create(rollout("c", spec=missing))
    body = api_error(exc)
    assert (exc.value.status, body["reason"]) == (422, "Invalid")
    assert body["details"]["causes"] == [
        {"reason": "FieldValueRequired", "message": "Required value", "field": "spec.route"}
    ]
    # Status writes are validated against the status schema too.
    with pytest.raises(ApiException) as exc:
        ro.patch_status("a", {"status": {"phase": "bogus"}})
    assert exc.value.status == 422
    assert api_error(exc)["details"]["causes"][0]["field"] == "status.phase"
    assert "status" not in ro.get("a")


def test_without_installed_crd_objects_are_stored_as_sent(ro: Rollouts) -> None:
    assert ro.create(rollout("a", spec={"anything": [1]}))["spec"] == {"anything": [1]}


# -- leases (CAS), events, endpointslices, services, namespaces --------------------------


def test_lease_compare_and_swap(kube: FakeKube) -> None:
    coord: Any = kubernetes.client.CoordinationV1Api(kube.api_client())
    spec = kubernetes.client.V1LeaseSpec(holder_identity="a", lease_duration_seconds=15)
    lease = kubernetes.client.V1Lease(
        metadata=kubernetes.client.V1ObjectMeta(name="sluice-controller"), spec=spec
    )
    created = coord.create_namespaced_lease("sluice", lease)
    # Two candidates read the same version; the first write wins, the second gets 409.
    first, second = (coord.read_namespaced_lease("sluice-controller", "sluice") for _ in range(2))
    first.spec.holder_identity = "b"
    coord.replace_namespaced_lease("sluice-controller", "sluice", first)
    second.spec.holder_identity = "c"
    with pytest.raises(ApiException) as exc:
        coord.replace_namespaced_lease("sluice-controller", "sluice", second)
    assert exc.value.status == 409
    now = coord.read_namespaced_lease("sluice-controller", "sluice")
    assert now.spec.holder_identity == "b"
    assert now.metadata.resource_version != created.metadata.resource_version
    patched = coord.patch_namespaced_lease(
        "sluice-controller", "sluice", {"spec": {"leaseTransitions": 1}}
    )
    assert patched.spec.lease_transitions == 1
    assert patched.spec.holder_identity == "b"


def test_time_fields_are_reencoded_as_the_server_stores_them(kube: FakeKube) -> None:
    """MicroTime comes back with six fractional digits in UTC, Time in whole seconds; a value
    that is not RFC 3339 with a zone is refused (400)."""
    coord: Any = kubernetes.client.CoordinationV1Api(kube.api_client())
    body = {
        "metadata": {"name": "l"},
        "spec": {"holderIdentity": "a", "renewTime": "2026-11-22T01:00:00.5+01:00"},
    }
    created = coord.create_namespaced_lease(NS, body, _preload_content=False)
    assert json.loads(created.data)["spec"]["renewTime"] == "2026-11-22T00:00:00.500000Z"
    with pytest.raises(ApiException) as exc:
        coord.patch_namespaced_lease("l", NS, {"spec": {"acquireTime": "1700000000"}})
    assert exc.value.status == 400
    with pytest.raises(ApiException) as exc:
        coord.patch_namespaced_lease("l", NS, {"spec": {"acquireTime": "2026-11-22T00:00:00"}})
    assert exc.value.status == 400
    core: Any = kubernetes.client.CoreV1Api(kube.api_client())
    event = {
        "metadata": {"name": "e"},
        "involvedObject": {"kind": "Rollout", "name": "a"},
        "firstTimestamp": "2026-11-22T00:00:00.987654Z",
    }
    core.create_namespaced_event(NS, event)
    (stored,) = kube.objects("events", NS)
    assert stored["firstTimestamp"] == "2026-11-22T00:00:00Z"


def test_events_create_core_and_events_api(kube: FakeKube) -> None:
    client = kube.api_client()
    core: Any = kubernetes.client.CoreV1Api(client)
    ev = kubernetes.client.CoreV1Event(
        metadata=kubernetes.client.V1ObjectMeta(generate_name="a."),
        involved_object=kubernetes.client.V1ObjectReference(kind="Rollout", name="a"),
        reason="Promoted",
        message="stage 2",
        type="Normal",
    )
    created = core.create_namespaced_event(NS, ev)
    assert created.metadata.name.startswith("a.")
    assert created.reason == "Promoted"
    events_v1: Any = kubernetes.client.EventsV1Api(client)
    ev2 = kubernetes.client.EventsV1Event(
        metadata=kubernetes.client.V1ObjectMeta(name="b"),
        event_time=datetime.now(UTC),
        reporting_controller="sluice.dev/controller",
        reporting_instance="test",
        action="Abort",
        reason="Aborted",
        note="by alice",
        type="Warning",
    )
    events_v1.create_namespaced_event(NS, ev2)
    listed = core.list_namespaced_event(NS)
    assert [e.reason for e in listed.items] == ["Promoted"]
    assert {e["reason"] for e in kube.objects("events", NS)} == {"Promoted", "Aborted"}


def slice_body(name: str, service: str, ip: str) -> dict[str, Any]:
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": name, "labels": {"kubernetes.io/service-name": service}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": [ip], "conditions": {"ready": True}}],
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
    }


def test_endpointslices_list_and_watch_with_label_selector(kube: FakeKube) -> None:
    disc: Any = kubernetes.client.DiscoveryV1Api(kube.api_client())
    disc.create_namespaced_endpoint_slice(NS, slice_body("web-1", "web", "10.0.0.1"))
    disc.create_namespaced_endpoint_slice(NS, slice_body("db-1", "db", "10.0.0.9"))
    sel = "kubernetes.io/service-name in (web)"
    listed = disc.list_namespaced_endpoint_slice(NS, label_selector=sel)
    assert [s.metadata.name for s in listed.items] == ["web-1"]
    rv = listed.metadata.resource_version
    disc.create_namespaced_endpoint_slice(NS, slice_body("db-2", "db", "10.0.0.8"))
    disc.create_namespaced_endpoint_slice(NS, slice_body("web-2", "web", "10.0.0.2"))
    disc.delete_namespaced_endpoint_slice("web-1", NS)
    seen = [
        (e["type"], e["object"].metadata.name, e["object"].endpoints[0].addresses)
        for e in new_watch().stream(
            disc.list_namespaced_endpoint_slice,
            NS,
            label_selector=sel,
            resource_version=rv,
            timeout_seconds=1,
        )
    ]
    assert seen == [("ADDED", "web-2", ["10.0.0.2"]), ("DELETED", "web-1", ["10.0.0.1"])]


def test_builtin_lists_omit_kind_and_delete_answers_status(kube: FakeKube) -> None:
    """As the real server: items of a built-in kind's list carry no apiVersion/kind (custom
    resources' do), and DELETE of a built-in answers a Success Status, not the object."""
    disc: Any = kubernetes.client.DiscoveryV1Api(kube.api_client())
    disc.create_namespaced_endpoint_slice(NS, slice_body("web-1", "web", "10.0.0.1"))
    raw = disc.list_namespaced_endpoint_slice(NS, _preload_content=False)
    listed = json.loads(raw.data)
    assert listed["kind"] == "EndpointSliceList"
    assert listed["apiVersion"] == "discovery.k8s.io/v1"
    assert "kind" not in listed["items"][0]
    assert "apiVersion" not in listed["items"][0]
    status = disc.delete_namespaced_endpoint_slice("web-1", NS)  # v37 returns it as a dict
    assert (status["kind"], status["status"]) == ("Status", "Success")
    assert status["details"]["name"] == "web-1"
    assert kube.objects("endpointslices") == []


def test_services_and_namespaces(kube: FakeKube) -> None:
    core: Any = kubernetes.client.CoreV1Api(kube.api_client())
    core.create_namespace(
        kubernetes.client.V1Namespace(metadata=kubernetes.client.V1ObjectMeta(name="sluice"))
    )
    assert core.read_namespace("sluice").metadata.name == "sluice"
    svc = kubernetes.client.V1Service(
        metadata=kubernetes.client.V1ObjectMeta(name="web"),
        spec=kubernetes.client.V1ServiceSpec(ports=[kubernetes.client.V1ServicePort(port=80)]),
    )
    core.create_namespaced_service("sluice", svc)
    assert [s.metadata.name for s in core.list_service_for_all_namespaces().items] == ["web"]


# -- watch ----------------------------------------------------------------------------------


def stream(ro: Rollouts, **kw: Any) -> Iterator[dict[str, Any]]:
    events: Iterator[dict[str, Any]] = new_watch().stream(
        ro.api.list_namespaced_custom_object, GROUP, VERSION, NS, PLURAL, **kw
    )
    return events


def test_watch_from_zero_replays_then_follows(ro: Rollouts) -> None:
    ro.create(rollout("a"))
    ro.create(rollout("b"))
    w = new_watch()
    seen: list[tuple[str, str]] = []
    for event in w.stream(
        ro.api.list_namespaced_custom_object, GROUP, VERSION, NS, PLURAL, resource_version="0"
    ):
        seen.append((event["type"], event["raw_object"]["metadata"]["name"]))
        if len(seen) == 2:
            ro.patch("a", {"spec": {"n": 1}})
            ro.delete("b")
        if len(seen) == 4:
            w.stop()
    assert seen == [("ADDED", "a"), ("ADDED", "b"), ("MODIFIED", "a"), ("DELETED", "b")]


def test_watch_from_resource_version_serves_history(ro: Rollouts) -> None:
    a = ro.create(rollout("a"))
    ro.create(rollout("b"))
    ro.patch("a", {"spec": {"n": 1}})
    deleted = ro.delete("b")
    events = list(stream(ro, resource_version=a["metadata"]["resourceVersion"], timeout_seconds=1))
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [
        ("ADDED", "b"),
        ("MODIFIED", "a"),
        ("DELETED", "b"),
    ]
    rvs = [int(e["object"]["metadata"]["resourceVersion"]) for e in events]
    assert rvs == sorted(rvs)
    # The DELETED event carries the deletion's resourceVersion.
    assert (
        events[-1]["object"]["metadata"]["resourceVersion"]
        == deleted["metadata"]["resourceVersion"]
    )


def test_watch_timeout_seconds_ends_stream_with_bookmark(kube: FakeKube, ro: Rollouts) -> None:
    ro.create(rollout("a"))
    events = list(stream(ro, resource_version="0", timeout_seconds=1, allow_watch_bookmarks=True))
    assert [e["type"] for e in events] == ["ADDED", "BOOKMARK"]
    assert (
        events[1]["raw_object"]["metadata"]["resourceVersion"]
        == ro.list()["metadata"]["resourceVersion"]
    )
    assert any("timeoutSeconds=1" in q for _, _, q in kube.requests)


def test_watch_resumes_after_close_watches(kube: FakeKube, ro: Rollouts) -> None:
    """The client resumes a cleanly closed stream from the last resourceVersion it saw: no
    event lost or repeated."""
    start = ro.list()["metadata"]["resourceVersion"]
    ro.create(rollout("a"))
    w = new_watch()
    seen: list[str] = []
    for event in w.stream(
        ro.api.list_namespaced_custom_object, GROUP, VERSION, NS, PLURAL, resource_version=start
    ):
        seen.append(event["raw_object"]["metadata"]["name"])
        if len(seen) == 1:
            kube.close_watches()
            ro.create(rollout("b"))
        if len(seen) == 2:
            w.stop()
    assert seen == ["a", "b"]
    watches = [q for m, _, q in kube.requests if m == "GET" and "watch=true" in q]
    assert len(watches) == 2
    assert f"resourceVersion={start}" in watches[0]


def test_watch_after_abrupt_cut_resumes_without_loss(kube: FakeKube, ro: Rollouts) -> None:
    start = ro.list()["metadata"]["resourceVersion"]
    first = stream(ro, resource_version=start)
    ro.create(rollout("a"))
    event = next(first)
    assert event["raw_object"]["metadata"]["name"] == "a"
    assert kube.open_watches() == 1
    kube.close_watches(abrupt=True)
    ro.create(rollout("b"))
    with pytest.raises(Exception):  # noqa: B017, PT011 - urllib3's ProtocolError
        next(first)
    last = event["raw_object"]["metadata"]["resourceVersion"]
    resumed = list(stream(ro, resource_version=last, timeout_seconds=1))
    assert [(e["type"], e["raw_object"]["metadata"]["name"]) for e in resumed] == [("ADDED", "b")]


def test_watch_from_compacted_resource_version_is_410(kube: FakeKube, ro: Rollouts) -> None:
    old = ro.create(rollout("a"))["metadata"]["resourceVersion"]
    ro.create(rollout("b"))
    kube.compact()
    with pytest.raises(ApiException) as exc:
        list(stream(ro, resource_version=old, timeout_seconds=1))
    assert exc.value.status == 410
    assert "Expired" in str(exc.value.reason)
    # The raw stream: one ERROR event with a Status, then the end.
    resp = ro.api.list_namespaced_custom_object(
        GROUP, VERSION, NS, PLURAL, watch=True, resource_version=old, _preload_content=False
    )
    lines = [json.loads(line) for line in resp.read().splitlines() if line]
    assert len(lines) == 1
    assert lines[0]["type"] == "ERROR"
    assert lines[0]["object"]["code"] == 410
    assert lines[0]["object"]["reason"] == "Expired"
    # The current resourceVersion is still fine.
    now = ro.list()["metadata"]["resourceVersion"]
    assert list(stream(ro, resource_version=now, timeout_seconds=1)) == []


def test_history_limit_expires_old_versions() -> None:
    with FakeKube.start(history_limit=2) as kube:
        ro = Rollouts(kubernetes.client.CustomObjectsApi(kube.api_client()))
        first = ro.create(rollout("a"))["metadata"]["resourceVersion"]
        second = ro.create(rollout("b"))["metadata"]["resourceVersion"]
        ro.create(rollout("c"))
        ro.create(rollout("d"))
        # Two changes retained (c, d): a watch from b's version still gets everything after.
        with pytest.raises(ApiException) as exc:
            list(stream(ro, resource_version=first, timeout_seconds=1))
        assert exc.value.status == 410
        events = list(stream(ro, resource_version=second, timeout_seconds=1))
        assert [e["object"]["metadata"]["name"] for e in events] == ["c", "d"]


def test_watch_selector_entering_and_leaving_is_added_and_deleted(ro: Rollouts) -> None:
    ro.create(rollout("a", labels={"app": "web"}))
    start = ro.list()["metadata"]["resourceVersion"]
    ro.patch("a", {"metadata": {"labels": {"app": "db"}}})
    ro.patch("a", {"metadata": {"labels": {"app": "web"}}})
    events = list(stream(ro, resource_version=start, label_selector="app=web", timeout_seconds=1))
    assert [e["type"] for e in events] == ["DELETED", "ADDED"]


def test_concurrent_watches_all_see_every_event(ro: Rollouts) -> None:
    start = ro.list()["metadata"]["resourceVersion"]
    results: list[list[str]] = [[] for _ in range(5)]

    def run(out: list[str]) -> None:
        w = new_watch()
        for e in w.stream(
            ro.api.list_namespaced_custom_object, GROUP, VERSION, NS, PLURAL, resource_version=start
        ):
            out.append(e["raw_object"]["metadata"]["name"])
            if len(out) == 10:
                w.stop()

    threads = [threading.Thread(target=run, args=(r,)) for r in results]
    for t in threads:
        t.start()
    for i in range(10):
        ro.create(rollout(f"r{i}"))
    for t in threads:
        t.join(timeout=10)
    assert all(r == [f"r{i}" for i in range(10)] for r in results)


# -- controls ------------------------------------------------------------------------------


def test_fail_next(kube: FakeKube, ro: Rollouts) -> None:
    ro.create(rollout("a"))
    kube.fail_next("PUT", r".*/status$", 403)
    with pytest.raises(ApiException) as exc:
        ro.replace_status({**ro.get("a"), "status": {"p": 1}})
    assert exc.value.status == 403
    assert api_error(exc)["reason"] == "Forbidden"
    assert ro.replace_status({**ro.get("a"), "status": {"p": 1}})["status"] == {"p": 1}
    kube.fail_next("GET", "rollouts", 500, times=2)
    for _ in range(2):
        with pytest.raises(ApiException) as exc:
            ro.get("a")
        assert exc.value.status == 500
    assert ro.get("a")["metadata"]["name"] == "a"
    kube.fail_next("*", "rollouts", 503, times=100)
    kube.fail_next("*", "rollouts", 503, times=0)
    assert ro.get("a")["metadata"]["name"] == "a"
    assert ("PUT", f"/apis/{GROUP}/{VERSION}/namespaces/{NS}/{PLURAL}/a/status", "") in (
        kube.requests
    )


def test_kubeconfig_loads_with_official_loader(kube: FakeKube, tmp_path: Path) -> None:
    path = kube.kubeconfig(tmp_path / "config", context="ctx", namespace="sluice")
    client = kubernetes.config.new_client_from_config(  # type: ignore[no-untyped-call]
        config_file=str(path), context="ctx"
    )
    try:
        assert client.configuration.host == kube.url
        core: Any = kubernetes.client.CoreV1Api(client)
        core.create_namespace(
            kubernetes.client.V1Namespace(metadata=kubernetes.client.V1ObjectMeta(name="x"))
        )
        assert kube.objects("namespaces")[0]["metadata"]["name"] == "x"
    finally:
        client.close()


def test_stop_ends_open_watches_and_frees_port() -> None:
    kube = FakeKube.start()
    ro = Rollouts(kubernetes.client.CustomObjectsApi(kube.api_client()))
    ended = threading.Event()

    def run() -> None:
        try:
            for _ in stream(ro, resource_version="0", timeout_seconds=60):
                pass
        except Exception:  # the end is what matters, not how
            pass
        ended.set()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    import time

    deadline = time.monotonic() + 5
    while not kube.requests and time.monotonic() < deadline:
        time.sleep(0.01)
    kube.stop()
    t.join(timeout=10)
    assert ended.is_set()
    import socket

    port = int(kube.url.rsplit(":", 1)[1])
    with socket.socket() as s, pytest.raises(ConnectionRefusedError):
        s.connect(("127.0.0.1", port))
