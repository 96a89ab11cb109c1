"""controller.k8s.watch.ObjectWatch against the fake API server: list then watch, resume
after a dropped stream, re-list after 410 Gone, errors retried, stop() joins."""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, cast
from urllib.parse import parse_qs

import kubernetes.client
import pytest
from fakekube import FakeKube

from controller.k8s.watch import ObjectWatch, WatchEvent

GROUP, VERSION, PLURAL, NS = "sluice.dev", "v1alpha1", "rollouts", "team"
COLLECTION = f"/apis/{GROUP}/{VERSION}/namespaces/{NS}/{PLURAL}$"


def wait_for(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)


class Recorder:
    """Collects the events ``on_event`` receives, from the watch thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._events: list[WatchEvent] = []

    def __call__(self, event: WatchEvent) -> None:
        with self._lock:
            self._events.append(event)

    @property
    def events(self) -> list[tuple[str, str]]:
        with self._lock:
            return [(e.type, e.object["metadata"]["name"]) for e in self._events]

    def objects(self) -> list[WatchEvent]:
        with self._lock:
            return list(self._events)

    def wait(self, n: int) -> list[tuple[str, str]]:
        wait_for(lambda: len(self.events) >= n)
        return self.events


class Rollouts:
    def __init__(self, kube: FakeKube) -> None:
        self.api = kubernetes.client.CustomObjectsApi(kube.api_client())

    def create(self, name: str, **labels: str) -> dict[str, Any]:
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "Rollout",
            "metadata": {"name": name, "labels": labels},
            "spec": {"n": 0},
        }
        created: dict[str, Any] = cast(
            Any, self.api.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, body)
        )
        return created

    def bump(self, name: str, n: int) -> dict[str, Any]:
        patched: dict[str, Any] = cast(
            Any,
            self.api.patch_namespaced_custom_object(
                GROUP, VERSION, NS, PLURAL, name, {"spec": {"n": n}}
            ),
        )
        return patched

    def delete(self, name: str) -> None:
        self.api.delete_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, name)

    def list_fn(self) -> Callable[..., Any]:
        return functools.partial(self.api.list_namespaced_custom_object, GROUP, VERSION, NS, PLURAL)


@pytest.fixture
def ro(kube: FakeKube) -> Rollouts:
    return Rollouts(kube)


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def watch(ro: Rollouts, recorder: Recorder) -> Iterator[ObjectWatch]:
    w = ObjectWatch(ro.list_fn(), on_event=recorder, retry_s=0.05, name="rollouts")
    yield w
    w.stop()


def watch_requests(kube: FakeKube) -> list[str]:
    return [q for m, _, q in list(kube.requests) if m == "GET" and "watch=true" in q]


def test_initial_sync_then_events_in_order(
    ro: Rollouts, recorder: Recorder, watch: ObjectWatch
) -> None:
    ro.create("a")
    ro.create("b")
    watch.start()
    assert watch.wait_synced(10)
    assert set(watch.items()) == {(NS, "a"), (NS, "b")}
    assert recorder.wait(2) == [("ADDED", "a"), ("ADDED", "b")]
    ro.bump("a", 1)
    ro.create("c")
    ro.delete("b")
    ro.bump("a", 2)
    assert recorder.wait(6)[2:] == [
        ("MODIFIED", "a"),
        ("ADDED", "c"),
        ("DELETED", "b"),
        ("MODIFIED", "a"),
    ]
    assert set(watch.items()) == {(NS, "a"), (NS, "c")}
    assert watch.items()[(NS, "a")]["spec"] == {"n": 2}
    listed: Any = ro.api.list_namespaced_custom_object(GROUP, VERSION, NS, PLURAL)
    assert watch.resource_version == listed["metadata"]["resourceVersion"]
    assert (watch.relists, watch.resumes) == (0, 0)


@pytest.mark.parametrize("abrupt", [False, True], ids=["clean-end", "network-cut"])
def test_resume_after_dropped_stream_loses_and_repeats_nothing(
    kube: FakeKube, ro: Rollouts, recorder: Recorder, watch: ObjectWatch, abrupt: bool
) -> None:
    ro.create("a")
    watch.start()
    assert recorder.wait(1) == [("ADDED", "a")]
    wait_for(lambda: kube.open_watches() == 1)
    seen_rv = watch.resource_version
    kube.close_watches(abrupt=abrupt)
    ro.bump("a", 1)
    ro.create("b")
    assert recorder.wait(3) == [("ADDED", "a"), ("MODIFIED", "a"), ("ADDED", "b")]
    wait_for(lambda: watch.resumes >= 1)
    assert watch.relists == 0
    # The second watch started from the last resourceVersion the first one delivered.
    assert f"resourceVersion={seen_rv}" in watch_requests(kube)[1]
    ro.delete("a")
    assert recorder.wait(4)[3] == ("DELETED", "a")
    assert len(recorder.events) == 4


def test_server_timeout_resumes_and_bookmarks_advance_the_version(
    kube: FakeKube, ro: Rollouts, recorder: Recorder
) -> None:
    """timeoutSeconds ends each stream; the BOOKMARK sent before the end carries the server's
    resourceVersion (moved here by another kind), the next watch starts from it."""
    w = ObjectWatch(ro.list_fn(), on_event=recorder, timeout_s=1, retry_s=0.05).start()
    try:
        assert w.wait_synced(10)
        coord: Any = kubernetes.client.CoordinationV1Api(kube.api_client())
        lease = coord.create_namespaced_lease(NS, {"metadata": {"name": "other-kind"}})
        wait_for(lambda: w.resource_version == lease.metadata.resource_version)
        resumed = f"resourceVersion={lease.metadata.resource_version}&"
        wait_for(lambda: any(resumed in q for q in watch_requests(kube)))
        assert w.resumes >= 1
        ro.create("a")
        assert recorder.wait(1) == [("ADDED", "a")]
        assert w.relists == 0
    finally:
        w.stop()
    assert recorder.events == [("ADDED", "a")]


def test_relist_after_410_delivers_the_difference(
    kube: FakeKube, ro: Rollouts, recorder: Recorder, watch: ObjectWatch
) -> None:
    ro.create("keep")
    ro.create("change")
    ro.create("gone")
    watch.start()
    assert recorder.wait(3) == [("ADDED", "change"), ("ADDED", "gone"), ("ADDED", "keep")]
    wait_for(lambda: kube.open_watches() == 1)
    # Hold the watch down (lists and watches fail) while objects change and history goes.
    kube.fail_next("GET", COLLECTION, 500, times=1_000_000)
    kube.close_watches(abrupt=True)
    ro.bump("change", 1)
    ro.delete("gone")
    ro.create("new")
    kube.compact()
    kube.fail_next("GET", COLLECTION, 500, times=0)
    events = recorder.wait(6)
    assert sorted(events[3:]) == [("ADDED", "new"), ("DELETED", "gone"), ("MODIFIED", "change")]
    wait_for(lambda: watch.relists == 1)
    assert set(watch.items()) == {(NS, "keep"), (NS, "change"), (NS, "new")}
    assert watch.items()[(NS, "change")]["spec"] == {"n": 1}
    deleted = next(e for e in recorder.objects() if e.type == "DELETED")
    assert deleted.object["metadata"]["name"] == "gone"
    # Watching resumes from the new list: later changes still arrive, once.
    ro.bump("keep", 5)
    assert recorder.wait(7)[6] == ("MODIFIED", "keep")
    assert len(recorder.events) == 7


def test_http_410_on_resume_relists(
    kube: FakeKube, ro: Rollouts, recorder: Recorder, watch: ObjectWatch
) -> None:
    """A server answering a too old watch with HTTP 410 (not an ERROR event) is re-listed too."""
    ro.create("a")
    watch.start()
    assert recorder.wait(1) == [("ADDED", "a")]
    wait_for(lambda: kube.open_watches() == 1)
    kube.fail_next("GET", COLLECTION, 410)
    kube.close_watches()
    ro.create("b")
    assert recorder.wait(2) == [("ADDED", "a"), ("ADDED", "b")]
    wait_for(lambda: watch.relists == 1)
    assert set(watch.items()) == {(NS, "a"), (NS, "b")}


def test_expired_watch_without_a_cut_relists(ro: Rollouts, recorder: Recorder) -> None:
    """A watch that falls behind the server's history (history_limit) gets 410 and re-lists."""
    with FakeKube.start(history_limit=2) as kube:
        ro = Rollouts(kube)
        ro.create("a")
        w = ObjectWatch(ro.list_fn(), on_event=recorder, retry_s=0.05).start()
        try:
            assert recorder.wait(1) == [("ADDED", "a")]
            wait_for(lambda: kube.open_watches() == 1)
            kube.fail_next("GET", COLLECTION, 503, times=1_000_000)
            kube.close_watches()
            for i in range(4):
                ro.bump("a", i + 1)
            ro.create("b")
            kube.fail_next("GET", COLLECTION, 503, times=0)
            assert sorted(recorder.wait(3)[1:]) == [("ADDED", "b"), ("MODIFIED", "a")]
            wait_for(lambda: w.relists == 1)
            assert w.items()[(NS, "a")]["spec"] == {"n": 4}
        finally:
            w.stop()


def test_api_down_at_start_then_back(kube: FakeKube, ro: Rollouts, recorder: Recorder) -> None:
    ro.create("a")
    kube.fail_next("GET", COLLECTION, 500, times=3)
    w = ObjectWatch(ro.list_fn(), on_event=recorder, retry_s=0.05).start()
    try:
        assert w.wait_synced(10)
        assert recorder.wait(1) == [("ADDED", "a")]
        lists = [q for m, p, q in list(kube.requests) if m == "GET" and "watch" not in q]
        assert len(lists) == 4
    finally:
        w.stop()


def test_api_errors_mid_watch_are_retried(
    kube: FakeKube, ro: Rollouts, recorder: Recorder, watch: ObjectWatch
) -> None:
    watch.start()
    wait_for(lambda: kube.open_watches() == 1)
    kube.fail_next("GET", COLLECTION, 500, times=3)
    kube.close_watches(abrupt=True)
    ro.create("a")
    assert recorder.wait(1) == [("ADDED", "a")]
    wait_for(lambda: watch.resumes >= 4)
    assert watch.relists == 0
    ro.delete("a")
    assert recorder.wait(2) == [("ADDED", "a"), ("DELETED", "a")]


def test_server_gone_then_back_on_another_port(ro: Rollouts, recorder: Recorder) -> None:
    """Connection refused is retried like a 5xx: the watch keeps running."""
    other = FakeKube.start()
    api = kubernetes.client.CustomObjectsApi(other.api_client())
    w = ObjectWatch(
        functools.partial(api.list_namespaced_custom_object, GROUP, VERSION, NS, PLURAL),
        on_event=recorder,
        retry_s=0.05,
    ).start()
    try:
        assert w.wait_synced(10)
        other.stop()
        wait_for(lambda: w.resumes >= 2)
    finally:
        w.stop()
    assert recorder.events == []


def test_selectors_and_a_typed_list_function(kube: FakeKube, recorder: Recorder) -> None:
    disc = kubernetes.client.DiscoveryV1Api(kube.api_client())

    def slice_(name: str, service: str) -> Any:
        return {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {"name": name, "labels": {"kubernetes.io/service-name": service}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["10.0.0.1"]}],
        }

    disc.create_namespaced_endpoint_slice(NS, slice_("web-1", "web"))
    disc.create_namespaced_endpoint_slice(NS, slice_("db-1", "db"))
    w = ObjectWatch(
        disc.list_namespaced_endpoint_slice,
        namespace=NS,
        label_selector="kubernetes.io/service-name=web",
        on_event=recorder,
        retry_s=0.05,
    ).start()
    try:
        assert recorder.wait(1) == [("ADDED", "web-1")]
        disc.create_namespaced_endpoint_slice(NS, slice_("db-2", "db"))
        disc.create_namespaced_endpoint_slice(NS, slice_("web-2", "web"))
        assert recorder.wait(2) == [("ADDED", "web-1"), ("ADDED", "web-2")]
        # Plain JSON dicts (camelCase), not client models, of one shape whether they came
        # from the list (web-1: the server omits apiVersion/kind there) or a watch event.
        for key in ((NS, "web-1"), (NS, "web-2")):
            item = w.items()[key]
            assert isinstance(item, dict)
            assert item["addressType"] == "IPv4"
            assert (item["apiVersion"], item["kind"]) == ("discovery.k8s.io/v1", "EndpointSlice")
        query = parse_qs(watch_requests(kube)[0])
        assert query["labelSelector"] == ["kubernetes.io/service-name=web"]
    finally:
        w.stop()
    assert len(recorder.events) == 2


def test_callback_errors_do_not_stop_the_watch(ro: Rollouts) -> None:
    seen: list[str] = []

    def on_event(event: WatchEvent) -> None:
        seen.append(event.object["metadata"]["name"])
        raise RuntimeError("consumer bug")

    w = ObjectWatch(ro.list_fn(), on_event=on_event, retry_s=0.05).start()
    try:
        assert w.wait_synced(10)
        ro.create("a")
        ro.create("b")
        wait_for(lambda: seen == ["a", "b"])
        assert (w.relists, w.resumes) == (0, 0)
    finally:
        w.stop()


def test_stop_joins_a_blocked_watch(kube: FakeKube, ro: Rollouts, recorder: Recorder) -> None:
    w = ObjectWatch(ro.list_fn(), on_event=recorder, timeout_s=3600).start()
    assert w.wait_synced(10)
    wait_for(lambda: kube.open_watches() == 1)
    w.stop()
    assert w._thread is not None
    assert not w._thread.is_alive()
    ro.create("late")
    time.sleep(0.1)
    assert recorder.events == []
    with pytest.raises(RuntimeError):
        w.start()


def test_stop_joins_while_retrying(kube: FakeKube, ro: Rollouts) -> None:
    kube.fail_next("GET", COLLECTION, 500, times=1_000_000)
    w = ObjectWatch(ro.list_fn(), retry_s=3600).start()
    wait_for(lambda: len(kube.requests) >= 1)
    w.stop()
    assert not w.wait_synced(0)
    assert w._thread is not None
    assert not w._thread.is_alive()


def test_a_410_counts_as_a_relist_before_its_stream_is_closed(
    kube: FakeKube, ro: Rollouts, recorder: Recorder
) -> None:
    """``relists`` moves as soon as the 410 ERROR event is read, not after the stream's
    closing: a cache reading it must not count as current in between."""
    at_close: list[int] = []
    watches: list[ObjectWatch] = []
    inner = ro.list_fn()

    class Closing:
        def __init__(self, resp: Any) -> None:
            self._resp = resp

        def close(self) -> None:
            at_close.append(watches[0].relists)
            self._resp.close()

        def __getattr__(self, name: str) -> Any:
            return getattr(self._resp, name)

    def list_fn(**kwargs: Any) -> Any:
        resp = inner(**kwargs)
        return Closing(resp) if kwargs.get("watch") else resp

    ro.create("a")
    w = ObjectWatch(list_fn, on_event=recorder, retry_s=0.05)
    watches.append(w)
    w.start()
    try:
        assert recorder.wait(1) == [("ADDED", "a")]
        wait_for(lambda: kube.open_watches() == 1)
        kube.fail_next("GET", COLLECTION, 500, times=1_000_000)
        kube.close_watches()
        wait_for(lambda: at_close == [0])
        ro.bump("a", 1)
        kube.compact()
        kube.fail_next("GET", COLLECTION, 500, times=0)
        wait_for(lambda: w.relists == 1 and kube.open_watches() == 1)
        assert at_close == [0, 1]  # the 410'd stream closed with its re-list counted
    finally:
        w.stop()
