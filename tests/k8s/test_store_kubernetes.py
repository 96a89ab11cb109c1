"""The Kubernetes rollout store through the fake API server (tests/fakekube), driven by the
official client: the store contract (tests/store_contract.py), and what is Kubernetes' own."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from fakekube import FakeKube
from kubernetes import client as k8s_client
from store_contract import SOURCE, RolloutStoreContract, event, pending, policy

from controller.k8s.crd import GROUP, PLURAL, VERSION
from controller.k8s.status_codec import MAX_POLICY_TEXT, parse_time
from controller.k8s.store import METADATA_RETRIES, KubernetesRolloutStore
from controller.rollout.machine import start
from controller.rollout.state import Phase
from controller.store.rollouts import (
    CorruptRecordError,
    PolicySource,
    RevisionConflictError,
    RolloutExistsError,
    RolloutNotFoundError,
    RolloutStore,
    RouteBusyError,
    StoreError,
)

NS = "sluice"
STATUS = rf"/namespaces/{NS}/rollouts/[^/]+/status$"


@pytest.fixture
def store(kube: FakeKube) -> Iterator[KubernetesRolloutStore]:
    s = KubernetesRolloutStore(kube.api_client(), NS, identity="pod-a")
    yield s
    s.close()


class TestKubernetesRolloutStore(RolloutStoreContract):
    """The store contract on Rollout objects: reading with GET/LIST, and reading from a
    watch (synced first, so that reads do come from it)."""

    updates_per_thread = 8  # each update is 3-4 HTTP requests to the fake

    @pytest.fixture(params=["direct", "watching"])
    def store(self, request: pytest.FixtureRequest, kube: FakeKube) -> Iterator[RolloutStore]:
        watching = request.param == "watching"
        s = KubernetesRolloutStore(kube.api_client(), NS, identity="pod-a", watch=watching)
        try:
            if watching:
                assert s.wait_synced(10)
                assert s.serving_from_watch
            yield s
        finally:
            s.close()


def objects_api(kube: FakeKube) -> k8s_client.CustomObjectsApi:
    return k8s_client.CustomObjectsApi(kube.api_client())


def rollout(kube: FakeKube, name: str) -> dict[str, Any]:
    found = [o for o in kube.objects(PLURAL, NS) if o["metadata"]["name"] == name]
    assert len(found) == 1
    return found[0]


def events_of(kube: FakeKube, name: str) -> list[dict[str, Any]]:
    return [e for e in kube.objects("events", NS) if e["involvedObject"]["name"] == name]


def test_the_object_as_stored(kube: FakeKube, store: KubernetesRolloutStore) -> None:
    store.create("comments-v2", policy(), SOURCE, pending(), event(100.0))
    progressing = pending().model_copy(update={"phase": Phase.PROGRESSING, "stage": 0})
    store.update("comments-v2", 1, progressing, [event(110.0, "pending → progressing")])
    obj = rollout(kube, "comments-v2")
    assert obj["spec"]["route"] == "comments"
    assert obj["metadata"]["annotations"]["sluice.dev/policy-path"] == "policies/comments.yaml"
    status = obj["status"]
    assert status["phase"] == "progressing"
    assert status["revision"] == 2
    assert status["observedGeneration"] == obj["metadata"]["generation"] == 1
    assert [h["transition"] for h in status["history"]] == ["pending", "pending → progressing"]
    assert status["historySeq"] == 2


def test_events_are_created(kube: FakeKube, store: KubernetesRolloutStore) -> None:
    store.create("c", policy(), SOURCE, pending(), event(100.0))
    rolling = pending().model_copy(update={"phase": Phase.ROLLING_BACK})
    store.update(
        "c",
        1,
        rolling,
        [event(110.0, "pending → progressing"), event(111.0, "progressing → rolling_back")],
    )
    uid = rollout(kube, "c")["metadata"]["uid"]
    got = sorted(events_of(kube, "c"), key=lambda e: e["metadata"]["name"])
    assert [(e["reason"], e["type"]) for e in got] == [
        ("Pending", "Normal"),
        ("Progressing", "Normal"),
        ("RollingBack", "Warning"),
    ]
    for e in got:
        assert e["involvedObject"]["uid"] == uid
        assert e["involvedObject"]["kind"] == "Rollout"
        assert e["reportingInstance"] == "pod-a"
        assert e["source"] == {"component": "sluice"}


def test_an_event_failure_does_not_fail_the_write(
    kube: FakeKube, store: KubernetesRolloutStore
) -> None:
    store.create("c", policy(), SOURCE, pending(), event(100.0))
    kube.fail_next("POST", r"/events$", 500)
    done = store.update("c", 1, pending(), [event(110.0, "pending")])
    assert done.revision == 2
    assert [e.seq for e in store.history("c")] == [1, 2]
    assert len(events_of(kube, "c")) == 1  # the first; the second was refused


def test_an_object_applied_without_status_reads_as_pending(
    kube: FakeKube, store: KubernetesRolloutStore
) -> None:
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Rollout",
        "metadata": {"name": "applied", "namespace": NS},
        "spec": policy().model_dump(mode="json", by_alias=True, exclude_none=True)["spec"],
        "status": {"phase": "succeeded"},  # dropped by the server: a status subresource
    }
    created = objects_api(kube).create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, body)
    assert isinstance(created, dict)
    at = parse_time(created["metadata"]["creationTimestamp"])
    got = store.get("applied")
    state, first = start(policy().model_copy(update={"metadata": got.policy.metadata}), at, "x")
    assert got.state == state
    assert got.revision == 1
    assert got.created_at == at
    assert got.active
    [creation] = store.history("applied")
    assert (creation.seq, creation.actor, creation.at) == (1, "kubernetes", at)
    assert creation.reason == first.reason
    # the controller drives it like any other: the synthesized creation event is kept
    progressing = state.model_copy(update={"phase": Phase.PROGRESSING})
    assert (
        store.update("applied", 1, progressing, [event(at + 1, "pending → progressing")]).revision
        == 2
    )
    assert [e.seq for e in store.history("applied")] == [1, 2]
    assert store.history("applied")[0] == creation
    reasons = sorted(e["reason"] for e in events_of(kube, "applied"))
    assert reasons == ["Pending", "Progressing"]  # its creation gets an Event too


def test_a_forbidden_status_write_still_creates_a_pending_rollout(
    kube: FakeKube, store: KubernetesRolloutStore
) -> None:
    kube.fail_next("PUT", STATUS, 403)
    created = store.create("c", policy(), SOURCE, pending(), event(100.0, actor="alice"))
    assert "status" not in rollout(kube, "c") or not rollout(kube, "c")["status"]
    assert created == store.get("c")
    assert created.state.phase is Phase.PENDING
    assert created.revision == 1
    assert store.history("c")[0].actor == "alice"  # from the created-by annotation
    assert [e["reason"] for e in events_of(kube, "c")] == ["Pending"]
    with pytest.raises(RolloutExistsError):
        store.create("c", policy(), SOURCE, pending(), event(200.0))
    assert store.update("c", 1, pending(), [event(300.0)]).revision == 2


def test_another_failed_status_write_leaves_nothing(
    kube: FakeKube, store: KubernetesRolloutStore
) -> None:
    kube.fail_next("PUT", STATUS, 500)
    with pytest.raises(StoreError, match="500"):
        store.create("c", policy(), SOURCE, pending(), event(100.0))
    with pytest.raises(RolloutNotFoundError):
        store.get("c")
    store.create("c", policy(), SOURCE, pending(), event(200.0))
    assert store.get("c").created_at == 200.0


def test_replacing_a_terminal_rollout_keeps_metadata_and_renews_annotations(
    kube: FakeKube, store: KubernetesRolloutStore
) -> None:
    store.create("c", policy(), SOURCE, pending(), event(100.0))
    objects_api(kube).patch_namespaced_custom_object(
        GROUP,
        VERSION,
        NS,
        PLURAL,
        "c",
        {"metadata": {"labels": {"team": "web"}, "annotations": {"owner": "bob"}}},
    )
    store.update("c", 1, pending().model_copy(update={"phase": Phase.ABORTED}), [event(150.0)])
    uid = rollout(kube, "c")["metadata"]["uid"]
    huge = PolicySource(None, None, False, "x" * MAX_POLICY_TEXT)
    replaced = store.create("c", policy(candidate="comments-rust"), huge, pending(), event(300.0))
    assert replaced.revision == 3
    assert replaced.source == PolicySource(None, None, False, "")  # too long to keep
    obj = rollout(kube, "c")
    assert obj["metadata"]["uid"] == uid
    assert obj["metadata"]["labels"] == {"team": "web"}
    notes = obj["metadata"]["annotations"]
    assert notes["owner"] == "bob"
    assert "sluice.dev/policy-text" not in notes  # the old rollout's text is not kept
    assert "sluice.dev/policy-path" not in notes
    assert obj["spec"]["candidate"] == {"cluster": "comments-rust"}
    assert obj["metadata"]["generation"] == 2
    assert obj["status"]["observedGeneration"] == 2
    assert obj["status"]["phase"] == "pending"
    assert sorted(e["metadata"]["name"] for e in events_of(kube, "c")) == [
        f"c.{uid[:8]}.{n}" for n in (1, 2, 3)
    ]


def test_a_name_taken_between_list_and_create(
    kube: FakeKube, store: KubernetesRolloutStore
) -> None:
    kube.fail_next("POST", rf"/namespaces/{NS}/rollouts$", 409)
    with pytest.raises(StoreError, match="created and deleted meanwhile"):
        store.create("c", policy(), SOURCE, pending(), event(100.0))
    assert kube.objects(PLURAL, NS) == []


def test_a_conflict_from_a_metadata_edit_is_retried(
    kube: FakeKube, store: KubernetesRolloutStore
) -> None:
    store.create("c", policy(), SOURCE, pending(), event(100.0))
    # someone labels the object; the store's next status write meets a 409 (the fake answers
    # it, as the server would had the label landed between the store's read and its write)
    objects_api(kube).patch_namespaced_custom_object(
        GROUP, VERSION, NS, PLURAL, "c", {"metadata": {"labels": {"team": "web"}}}
    )
    kube.fail_next("PUT", STATUS, 409)
    before = len(kube.requests)
    done = store.update("c", 1, pending(), [event(110.0, "pending")])
    assert done.revision == 2
    calls = [(m, p.rsplit("/", 1)[-1]) for m, p, _ in kube.requests[before:]]
    assert calls[:4] == [("GET", "c"), ("PUT", "status"), ("GET", "c"), ("PUT", "status")]
    obj = rollout(kube, "c")
    assert obj["metadata"]["labels"] == {"team": "web"}
    assert obj["status"]["revision"] == 2
    assert [e.seq for e in store.history("c")] == [1, 2]


def test_a_conflict_while_creating_is_retried(
    kube: FakeKube, store: KubernetesRolloutStore
) -> None:
    kube.fail_next("PUT", STATUS, 409)
    created = store.create("c", policy(), SOURCE, pending(), event(100.0))
    assert created.created_at == 100.0  # from the status written, not synthesized
    assert rollout(kube, "c")["status"]["revision"] == 1


def test_the_server_refuses_a_stale_resource_version(kube: FakeKube) -> None:
    """What the store relies on: a write on an old resourceVersion is a 409, not a win."""
    store = KubernetesRolloutStore(kube.api_client(), NS)
    store.create("c", policy(), SOURCE, pending(), event(100.0))
    api = objects_api(kube)
    stale = api.get_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, "c")
    assert isinstance(stale, dict)
    store.update("c", 1, pending(), [event(110.0)])
    stale["status"]["revision"] = 7
    with pytest.raises(k8s_client.ApiException) as info:
        api.replace_namespaced_custom_object_status(GROUP, VERSION, NS, PLURAL, "c", stale)
    assert info.value.status == 409
    assert store.get("c").revision == 2


def test_a_conflict_from_another_writer_is_a_revision_conflict(
    kube: FakeKube, store: KubernetesRolloutStore
) -> None:
    store.create("c", policy(), SOURCE, pending(), event(100.0))
    other = KubernetesRolloutStore(kube.api_client(), NS)
    other.update("c", 1, pending(), [event(105.0, "pending", actor="other")])
    with pytest.raises(RevisionConflictError) as info:
        store.update("c", 1, pending(), [event(110.0)])
    assert (info.value.expected, info.value.current) == (1, 2)
    assert [e.actor for e in store.history("c")] == ["alice", "other"]


def test_endless_conflicts_give_up(kube: FakeKube, store: KubernetesRolloutStore) -> None:
    store.create("c", policy(), SOURCE, pending(), event(100.0))
    kube.fail_next("PUT", STATUS, 409, times=METADATA_RETRIES + 1)
    with pytest.raises(StoreError, match="kept changing"):
        store.update("c", 1, pending(), [event(110.0)])
    assert store.get("c").revision == 1


def test_concurrent_store_instances_lose_no_update(kube: FakeKube) -> None:
    stores = [KubernetesRolloutStore(kube.api_client(), NS, identity=f"pod-{i}") for i in range(3)]
    stores[0].create("c", policy(), SOURCE, pending(), event(100.0))
    per_thread = 8
    conflicts = [0] * len(stores)

    def work(worker: int) -> None:
        store = stores[worker]
        done = 0
        while done < per_thread:
            current = store.get("c")
            state = current.state.model_copy(update={"push_seq": current.state.push_seq + 1})
            try:
                store.update("c", current.revision, state, [event(1.0, "t", worker=worker, n=done)])
            except RevisionConflictError:
                conflicts[worker] += 1
                continue
            done += 1

    threads = [threading.Thread(target=work, args=(w,)) for w in range(len(stores))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads)
    total = len(stores) * per_thread
    final = stores[1].get("c")
    assert final.revision == 1 + total
    assert final.state.push_seq == total
    history = stores[2].history("c")
    assert [e.seq for e in history] == list(range(1, total + 2))  # no gap, no duplicate
    seen = sorted((e.details["worker"], e.details["n"]) for e in history[1:])
    assert seen == [(w, n) for w in range(len(stores)) for n in range(per_thread)]


def race(stores: list[KubernetesRolloutStore], route: str) -> list[str]:
    """Every store creates a rollout of ``route`` at once; what each got."""
    outcomes: list[str] = []
    barrier = threading.Barrier(len(stores))

    def create(i: int) -> None:
        barrier.wait()
        try:
            stores[i].create(f"{route}-{i}", policy(route), SOURCE, pending(), event(1.0))
            outcomes.append("created")
        except RouteBusyError:
            outcomes.append("busy")

    threads = [threading.Thread(target=create, args=(i,)) for i in range(len(stores))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    return outcomes


def test_racing_creators_never_both_hold_a_route(kube: FakeKube) -> None:
    stores = [KubernetesRolloutStore(kube.api_client(), NS) for _ in range(3)]
    for round_ in range(6):
        route = f"r{round_}"
        outcomes = race(stores, route)
        holders = [r.name for r in stores[0].list(active_only=True) if r.route == route]
        assert len(outcomes) == len(stores)
        assert outcomes.count("created") == len(holders) <= 1, (outcomes, holders)


def test_history_in_status_is_bounded(kube: FakeKube) -> None:
    store = KubernetesRolloutStore(kube.api_client(), NS, history_limit=3)
    store.create("c", policy(), SOURCE, pending(), event(100.0))
    for rev in range(1, 5):
        store.update("c", rev, pending(), [event(100.0 + rev, f"t{rev}")])
    assert [(e.seq, e.transition) for e in store.history("c")] == [(3, "t2"), (4, "t3"), (5, "t4")]
    assert rollout(kube, "c")["status"]["historySeq"] == 5
    assert len(events_of(kube, "c")) == 5  # the Events keep what status let go


def test_an_invalid_spec_is_a_corrupt_record(kube: FakeKube, store: KubernetesRolloutStore) -> None:
    store.create("ok", policy("orders"), SOURCE, pending(), event(100.0))
    spec = policy().model_dump(mode="json", by_alias=True, exclude_none=True)["spec"]
    spec["stages"][0]["weight"] = "lots"
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Rollout",
        "metadata": {"name": "broken", "namespace": NS},
        "spec": spec,
    }
    objects_api(kube).create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, body)
    with pytest.raises(
        CorruptRecordError, match=r"'broken' \(Rollout sluice/broken\): spec.stages.0.weight"
    ):
        store.get("broken")
    # One bad object must not stop the controller: it is left out of lists (and logged).
    assert [r.name for r in store.list()] == ["ok"]
    assert store.get("ok").revision == 1


def test_api_errors_are_store_errors(kube: FakeKube, store: KubernetesRolloutStore) -> None:
    kube.fail_next("GET", rf"/namespaces/{NS}/rollouts$", 500)
    with pytest.raises(StoreError, match="500"):
        store.list()
    kube.fail_next("GET", r"/rollouts/c$", 403)
    with pytest.raises(StoreError, match="403"):
        store.get("c")
    gone = KubernetesRolloutStore(
        k8s_client.ApiClient(k8s_client.Configuration(host="http://127.0.0.1:9")),
        NS,
        request_timeout_s=2.0,
    )
    with pytest.raises(StoreError, match="unreachable"):
        gone.list()
