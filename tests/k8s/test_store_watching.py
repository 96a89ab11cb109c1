"""The Kubernetes rollout store reading from a watch (``watch=True``), through the fake API
server: reads make no request once synced, other writers' changes arrive through the watch,
a 410 re-lists, and reads go to the API whenever the watch cannot be trusted. (The store
contract itself runs on a watching store in test_store_kubernetes.py.)"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import pytest
from fakekube import FakeKube
from kubernetes import client as k8s_client
from store_contract import SOURCE, event, pending, policy

from controller.k8s.crd import GROUP, PLURAL, VERSION
from controller.k8s.store import KubernetesRolloutStore
from controller.rollout.state import Phase
from controller.store.rollouts import (
    RevisionConflictError,
    RolloutNotFoundError,
    StoreError,
)

NS = "sluice"
COLLECTION = rf"/namespaces/{NS}/rollouts$"
BLOCK = 10**6
"""``fail_next`` times that outlast any test."""


def wait_for(cond: Callable[[], bool], timeout: float = 15.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or cond}")
        time.sleep(0.02)


def rollout_requests(kube: FakeKube, since: int) -> list[tuple[str, str, str]]:
    """The requests on Rollouts since request number ``since`` (watches included)."""
    return [r for r in kube.requests[since:] if f"/namespaces/{NS}/rollouts" in r[1]]


def lists(kube: FakeKube, since: int) -> int:
    """LISTs (not watches) of the Rollouts since request number ``since``."""
    return sum(
        1
        for method, path, query in kube.requests[since:]
        if method == "GET" and path.endswith(f"/namespaces/{NS}/rollouts") and "watch" not in query
    )


def watching_store(kube: FakeKube, **options: float) -> KubernetesRolloutStore:
    store = KubernetesRolloutStore(
        kube.api_client(), NS, identity="leader", watch=True, watch_retry_s=0.05, **options
    )
    assert store.wait_synced(10)
    return store


@pytest.fixture
def direct(kube: FakeKube) -> Iterator[KubernetesRolloutStore]:
    """Another writer, reading with GET/LIST."""
    store = KubernetesRolloutStore(kube.api_client(), NS, identity="other")
    yield store
    store.close()


@pytest.fixture
def watching(kube: FakeKube) -> Iterator[KubernetesRolloutStore]:
    store = watching_store(kube)
    yield store
    store.close()


def cut_watches(kube: FakeKube) -> None:
    """End the open watch and refuse new ones (and LISTs) until :func:`heal`."""
    # The fake answers a watch's headers before registering it: wait for it to be open, or
    # it would miss the close below and stay open.
    wait_for(lambda: kube.open_watches() == 1, what="the watch to be open")
    kube.fail_next("GET", COLLECTION, 500, times=BLOCK)
    kube.close_watches()
    wait_for(lambda: kube.open_watches() == 0, what="the watch to end")


def heal(kube: FakeKube) -> None:
    kube.fail_next("GET", COLLECTION, 500, times=0)


def test_reads_make_no_request_once_synced(
    kube: FakeKube, watching: KubernetesRolloutStore
) -> None:
    watching.create("c", policy(), SOURCE, pending(), event(100.0))
    progressing = pending().model_copy(update={"phase": Phase.PROGRESSING, "stage": 0})
    watching.update("c", 1, progressing, [event(110.0, "pending → progressing")])
    watching.create("o", policy("orders"), SOURCE, pending(), event(120.0))
    wait_for(lambda: watching.serving_from_watch)
    before = len(kube.requests)
    for _ in range(200):
        assert [r.name for r in watching.list()] == ["c", "o"]
        assert [r.name for r in watching.list(active_only=True)] == ["c", "o"]
        assert watching.get("c").revision == 2
        assert len(watching.history("c")) == 2
        assert watching.analyses("c") == []
        assert len(watching.weight_steps("c")) == 2
    with pytest.raises(RolloutNotFoundError):
        watching.get("nope")
    assert rollout_requests(kube, before) == []


def test_a_direct_store_lists_on_every_call(kube: FakeKube, direct: KubernetesRolloutStore) -> None:
    """What the watch saves: the same reads without it."""
    direct.create("c", policy(), SOURCE, pending(), event(100.0))
    before = len(kube.requests)
    for _ in range(20):
        direct.list()
    assert lists(kube, before) == 20


def test_a_write_of_another_store_arrives_through_the_watch(
    kube: FakeKube, watching: KubernetesRolloutStore, direct: KubernetesRolloutStore
) -> None:
    direct.create("c", policy(), SOURCE, pending(), event(100.0))
    direct.update("c", 1, pending(), [event(110.0, "pending", actor="bob")])
    before = len(kube.requests)  # the other writer is done
    wait_for(lambda: [r.revision for r in watching.list()] == [2], what="the watch")
    assert watching.get("c") == direct.get("c")
    assert [e.actor for e in watching.history("c")] == ["alice", "bob"]
    assert [
        (m, p) for m, p, _ in rollout_requests(kube, before) if not p.endswith("/rollouts/c")
    ] == []  # only direct's own GET above: the watching store made no request


def test_a_deleted_rollout_disappears(
    kube: FakeKube, watching: KubernetesRolloutStore, direct: KubernetesRolloutStore
) -> None:
    direct.create("c", policy(), SOURCE, pending(), event(100.0))
    watching.create("o", policy("orders"), SOURCE, pending(), event(100.0))
    wait_for(lambda: [r.name for r in watching.list()] == ["c", "o"], what="the watch")
    api = k8s_client.CustomObjectsApi(kube.api_client())
    api.delete_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, "c")
    api.delete_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, "o")  # written by it
    before = len(kube.requests)
    wait_for(lambda: watching.list() == [], what="the deletes")
    for name in ("c", "o"):
        with pytest.raises(RolloutNotFoundError):
            watching.get(name)
    assert rollout_requests(kube, before) == []


def test_a_410_re_lists_and_the_cache_is_right_after(
    kube: FakeKube, direct: KubernetesRolloutStore
) -> None:
    for name in ("a", "b"):
        direct.create(name, policy(name), SOURCE, pending(), event(100.0))
    watching = watching_store(kube, watch_max_down_s=60.0)
    try:
        cut_watches(kube)
        # Changes the watch does not see, then the server forgets them (compaction).
        direct.update("a", 1, pending(), [event(110.0, "pending", actor="bob")])
        api = k8s_client.CustomObjectsApi(kube.api_client())
        api.delete_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, "b")
        # created with the plain API: the store's create LISTs, refused while cut
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "Rollout",
            "metadata": {"name": "c", "namespace": NS},
            "spec": policy("c").model_dump(mode="json", by_alias=True, exclude_none=True)["spec"],
        }
        api.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, body)
        kube.compact()
        mark = len(kube.requests)
        heal(kube)
        wait_for(lambda: lists(kube, mark) >= 1 and watching.serving_from_watch, what="re-list")
        before = len(kube.requests)
        assert [(r.name, r.revision) for r in watching.list()] == [("a", 2), ("c", 1)]
        assert [e.actor for e in watching.history("a")] == ["alice", "bob"]
        with pytest.raises(RolloutNotFoundError):
            watching.get("b")
        assert rollout_requests(kube, before) == []
        # and it follows changes again
        direct.update("c", 1, pending(), [event(120.0)])
        wait_for(lambda: watching.get("c").revision == 2, what="the resumed watch")
    finally:
        heal(kube)
        watching.close()


def test_close_stops_the_watch_thread(kube: FakeKube) -> None:
    store = watching_store(kube)
    name = f"rollouts/{NS}"
    try:
        assert [t for t in threading.enumerate() if t.name == name and t.is_alive()]
        wait_for(lambda: kube.open_watches() == 1, what="the watch")
    finally:
        store.close()
    assert not [t for t in threading.enumerate() if t.name == name and t.is_alive()]
    assert not store.serving_from_watch
    before = len(kube.requests)
    assert store.list() == []  # read directly from now on
    assert lists(kube, before) == 1


def test_reads_go_direct_before_the_first_list(
    kube: FakeKube, direct: KubernetesRolloutStore
) -> None:
    direct.create("c", policy(), SOURCE, pending(), event(100.0))
    kube.fail_next("GET", COLLECTION, 500, times=BLOCK)
    store = KubernetesRolloutStore(kube.api_client(), NS, watch=True, watch_retry_s=0.05)
    try:
        assert not store.wait_synced(0.2)
        assert not store.serving_from_watch
        before = len(kube.requests)
        assert store.get("c").revision == 1
        assert [(m, p.rsplit("/", 1)[-1]) for m, p, _ in rollout_requests(kube, before)] == [
            ("GET", "c")
        ]
        with pytest.raises(StoreError, match="500"):
            store.list()  # a LIST, refused: nothing is served from an empty cache
        heal(kube)
        assert store.wait_synced(10)
        wait_for(lambda: store.serving_from_watch)
        before = len(kube.requests)
        assert [r.name for r in store.list()] == ["c"]
        assert rollout_requests(kube, before) == []
    finally:
        heal(kube)
        store.close()


def test_reads_go_direct_when_the_watch_is_down_too_long(
    kube: FakeKube, direct: KubernetesRolloutStore
) -> None:
    direct.create("c", policy(), SOURCE, pending(), event(100.0))
    store = watching_store(kube, watch_max_down_s=0.2)
    try:
        wait_for(lambda: store.serving_from_watch)
        cut_watches(kube)
        wait_for(lambda: not store.serving_from_watch, what="the cache to count as down")
        before = len(kube.requests)
        assert store.get("c").revision == 1
        assert ("GET", f"/apis/{GROUP}/{VERSION}/namespaces/{NS}/rollouts/c") in [
            (m, p) for m, p, _ in rollout_requests(kube, before)
        ]
        with pytest.raises(StoreError, match="500"):
            store.list()  # the API's answer, not the cache's old one
        heal(kube)
        wait_for(lambda: store.serving_from_watch, what="the watch back")
        before = len(kube.requests)
        assert [r.name for r in store.list()] == ["c"]
        assert rollout_requests(kube, before) == []
    finally:
        heal(kube)
        store.close()


def test_the_store_reads_its_own_writes_before_the_watch_delivers_them(
    kube: FakeKube,
) -> None:
    store = watching_store(kube, watch_max_down_s=60.0, watch_max_lag_s=60.0)
    try:
        store.create("o", policy("orders"), SOURCE, pending(), event(90.0))
        cut_watches(kube)  # the watch delivers nothing from now on; the cache stays fit
        # (a create LISTs to check its route: refused now, so "c" is created by the API)
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "Rollout",
            "metadata": {"name": "c", "namespace": NS},
            "spec": policy().model_dump(mode="json", by_alias=True, exclude_none=True)["spec"],
        }
        k8s_client.CustomObjectsApi(kube.api_client()).create_namespaced_custom_object(
            GROUP, VERSION, NS, PLURAL, body
        )
        with pytest.raises(RolloutNotFoundError):
            store.get("c")  # not delivered: the watch is cut
        progressing = pending().model_copy(update={"phase": Phase.PROGRESSING, "stage": 0})
        store.update("c", 1, progressing, [event(110.0, "pending → progressing")])
        store.update("o", 1, progressing, [event(120.0, "pending → progressing")])
        before = len(kube.requests)
        assert store.serving_from_watch
        assert store.get("c").revision == 2
        assert store.get("c").state.phase is Phase.PROGRESSING
        assert [(r.name, r.revision) for r in store.list()] == [("c", 2), ("o", 2)]
        assert [r.name for r in store.list(active_only=True)] == ["c", "o"]
        assert len(store.history("c")) == 2
        assert rollout_requests(kube, before) == []
        heal(kube)
        wait_for(lambda: kube.open_watches() == 1, what="the watch back")
        assert store.get("c").revision == 2
    finally:
        heal(kube)
        store.close()


def test_a_conflict_is_resolved_by_reading_directly(
    kube: FakeKube, direct: KubernetesRolloutStore
) -> None:
    """Another writer's change the watch has not delivered: the write conflicts, the store
    re-reads the object directly, and its next read decides on that revision, not the old
    one (else the reconciler would conflict again and again until the watch caught up)."""
    direct.create("c", policy(), SOURCE, pending(), event(100.0))
    store = watching_store(kube, watch_max_down_s=60.0, watch_max_lag_s=60.0)
    try:
        cut_watches(kube)
        direct.update("c", 1, pending(), [event(105.0, "pending", actor="other")])
        assert store.get("c").revision == 1  # the watch is behind (and the cache still fit)
        with pytest.raises(RevisionConflictError) as info:
            store.update("c", 1, pending(), [event(110.0)])
        assert (info.value.expected, info.value.current) == (1, 2)
        before = len(kube.requests)
        assert store.get("c").revision == 2  # what the conflict's direct read returned
        assert rollout_requests(kube, before) == []
        assert store.update("c", 2, pending(), [event(120.0)]).revision == 3
        assert [e.actor for e in store.history("c")] == ["alice", "other", "alice"]
    finally:
        heal(kube)
        store.close()
