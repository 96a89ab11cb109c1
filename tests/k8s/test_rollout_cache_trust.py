"""What the watch-backed Rollout cache (controller.k8s.rollout_cache) must never serve: a
copy older than one its store already got from the API (a direct list, a write's answer of
an object since deleted), or anything once its watch fails without disconnecting (answered
then ended at once, connected but silent). Through the fake API server, with the cache's
clock in the test's hands."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any, cast

import pytest
from fakekube import FakeKube

from controller.k8s.cache_freshness import revision, uid
from controller.k8s.crd import GROUP, PLURAL, VERSION
from controller.k8s.rollout_cache import MAX_SILENT_S, CacheUnfit, RolloutCache
from controller.k8s.store import KubernetesRolloutStore
from tests.k8s.rollout_objects import COLLECTION, NS, Clock, api, create, wait_for


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def cache(kube: FakeKube, clock: Clock) -> Iterator[RolloutCache]:
    c = RolloutCache(kube.api_client(), NS, retry_s=0.05, clock=clock, max_lag_s=60.0)
    c.start()
    assert c.wait_synced(10)
    wait_for(lambda: kube.open_watches() == 1)
    yield c
    kube.stall_watches(False)
    kube.flap_watches(False)
    c.stop()


def with_revision(kube: FakeKube, name: str, rev: int) -> dict[str, Any]:
    """Write ``status.revision`` = ``rev`` of ``name`` (another writer); its answer."""
    objects = api(kube)
    obj = cast(
        dict[str, Any], objects.get_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, name)
    )
    obj["status"] = {"revision": rev}
    done = objects.replace_namespaced_custom_object_status(GROUP, VERSION, NS, PLURAL, name, obj)
    assert isinstance(done, dict)
    return done


def direct_list(kube: FakeKube) -> list[dict[str, Any]]:
    body = cast(dict[str, Any], api(kube).list_namespaced_custom_object(GROUP, VERSION, NS, PLURAL))
    return list(body["items"])


def watch_requests(kube: FakeKube) -> int:
    return sum(1 for _, p, q in kube.requests if p.endswith("/rollouts") and "watch=true" in q)


def test_a_direct_list_is_never_followed_by_an_older_watched_copy(
    kube: FakeKube, cache: RolloutCache, clock: Clock
) -> None:
    """Item 3: the watch is behind a direct LIST (it stalled, or is reconnecting with its
    backlog still to come): the listed objects, and the absence of the deleted one, are
    served until the watch catches up, never the watch's older copies."""
    create(kube, "c")
    create(kube, "d")
    wait_for(lambda: [uid(o) != "" for o in cache.objects()] == [True, True])
    kube.stall_watches()
    with_revision(kube, "c", 7)
    api(kube).delete_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, "d")
    started = clock()
    cache.settle(direct_list(kube), started)  # what the store does with a direct LIST
    got = cache.object("c")
    assert got is not None
    assert revision(got) == 7
    assert cache.object("d") is None
    assert [(o["metadata"]["name"], revision(o)) for o in cache.objects()] == [("c", 7)]
    kube.stall_watches(False)  # the backlog comes, the cache is the watch's again
    wait_for(lambda: not cache._known)
    assert [(o["metadata"]["name"], revision(o)) for o in cache.objects()] == [("c", 7)]


def test_a_write_answer_of_an_object_the_watch_saw_deleted_is_not_served(
    kube: FakeKube, cache: RolloutCache, clock: Clock
) -> None:
    """Item 8: the watch delivers DELETED (uid1) and ADDED (uid2) before the store notes
    its own write of uid1: that copy is dead, the watched uid2 is served."""
    create(kube, "c")
    started = clock()
    written = with_revision(kube, "c", 5)  # the store's write; its note comes late
    api(kube).delete_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, "c")
    again = create(kube, "c")
    wait_for(lambda: (got := cache.object("c")) is not None and uid(got) == uid(again))
    cache.note(written, started)
    got = cache.object("c")
    assert got is not None
    assert uid(got) == uid(again)
    assert [uid(o) for o in cache.objects()] == [uid(again)]


def test_a_watch_answered_then_ended_at_once_stays_down(
    kube: FakeKube, cache: RolloutCache, clock: Clock
) -> None:
    """Item 4: every watch request is answered, then its stream ends at once: the cache
    counts as down from the first end, however often it reconnects."""
    create(kube, "c")
    wait_for(lambda: cache.object("c") is not None)  # an event: the stream is healthy
    kube.flap_watches()
    kube.close_watches()
    wait_for(lambda: kube.open_watches() == 0)
    clock.now += 3.5
    mark = watch_requests(kube)
    wait_for(lambda: watch_requests(kube) >= mark + 3)  # answered three more times
    assert not cache.fit()
    with pytest.raises(CacheUnfit):
        cache.object("c")
    kube.flap_watches(False)
    wait_for(lambda: kube.open_watches() == 1)
    assert not cache.fit()  # open, not yet proven
    create(kube, "d")  # an event proves it
    wait_for(cache.fit)


def test_a_connected_but_silent_watch_is_unfit_after_max_silent_s(
    kube: FakeKube, cache: RolloutCache, clock: Clock
) -> None:
    """Item 2: a watch that stays connected but delivers nothing (half-open TCP, a
    buffering proxy) is trusted no longer than max_silent_s; a healthy idle one is heard
    from every timeoutSeconds (the server ends the stream, with a bookmark)."""
    create(kube, "c")
    wait_for(lambda: cache.object("c") is not None)
    kube.stall_watches()
    with_revision(kube, "c", 4)  # not delivered
    clock.now += MAX_SILENT_S
    assert cache.fit()
    clock.now += 0.5
    assert not cache.fit()
    with pytest.raises(CacheUnfit):
        cache.objects()
    kube.stall_watches(False)  # what it held back arrives: heard from again
    wait_for(cache.fit)
    got = cache.object("c")
    assert got is not None
    assert revision(got) == 4


def test_close_does_not_wait_for_an_unanswered_request(kube: FakeKube) -> None:
    """Item 9: the watch's LIST (or a watch's headers) never answered: close() returns
    anyway (the thread is left to end by itself), and that thread makes no request after."""
    kube.hold("GET", COLLECTION)
    store = KubernetesRolloutStore(kube.api_client(), NS, watch=True, watch_retry_s=0.05)
    try:
        wait_for(lambda: any(p.endswith("/rollouts") for _, p, _ in kube.requests))
        closing = threading.Thread(target=store.close)
        closing.start()
        closing.join(30)  # the held LIST would keep it 60 s (its read timeout) without a fix
        assert not closing.is_alive()
        assert not store.serving_from_watch
    finally:
        before = len(kube.requests)
        kube.release()
    name = f"rollouts/{NS}"
    wait_for(lambda: not [t for t in threading.enumerate() if t.name == name and t.is_alive()])
    assert [r for r in kube.requests[before:] if "watch=true" in r[2]] == []
