"""The watch-backed Rollout cache (controller.k8s.rollout_cache) on the fake API server, with
its clock in the test's hands: when it stops answering (watch down, a write not delivered)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fakekube import FakeKube

from controller.k8s.rollout_cache import CacheUnfit, RolloutCache
from tests.k8s.rollout_objects import COLLECTION, NS, Clock, create, wait_for


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture(params=[{"max_down_s": 3.0, "max_lag_s": 60.0}])
def cache(kube: FakeKube, clock: Clock, request: pytest.FixtureRequest) -> Iterator[RolloutCache]:
    c = RolloutCache(kube.api_client(), NS, retry_s=0.05, clock=clock, **request.param)
    c.start()
    assert c.wait_synced(10)
    wait_for(lambda: kube.open_watches() == 1)
    yield c
    kube.fail_next("GET", COLLECTION, 500, times=0)
    c.stop()


def cut(kube: FakeKube) -> None:
    """End the watch and refuse its reconnects; returns once the cache saw its stream end
    (it has tried to reconnect)."""
    kube.fail_next("GET", COLLECTION, 500, times=10**6)
    mark = len(kube.requests)
    kube.close_watches()
    wait_for(lambda: any("watch=true" in q for _, _, q in kube.requests[mark:]))


def test_down_longer_than_the_bound_is_unfit(
    kube: FakeKube, cache: RolloutCache, clock: Clock
) -> None:
    create(kube, "c")
    wait_for(lambda: cache.object("c") is not None)
    cut(kube)
    clock.now += 3.0
    assert cache.fit()
    assert cache.object("c") is not None
    clock.now += 0.5
    assert not cache.fit()
    with pytest.raises(CacheUnfit):
        cache.object("c")
    with pytest.raises(CacheUnfit):
        cache.objects()
    kube.fail_next("GET", COLLECTION, 500, times=0)
    wait_for(lambda: kube.open_watches() == 1)
    assert not cache.fit()  # answered, not yet proven: the outage goes on
    clock.now += 1.0
    assert cache.fit()  # open for a second: healthy (the test's clock, no wall time)


@pytest.mark.parametrize("cache", [{"max_down_s": 60.0, "max_lag_s": 5.0}], indirect=True)
def test_a_noted_write_not_delivered_in_time_is_unfit_until_read_directly(
    kube: FakeKube, cache: RolloutCache, clock: Clock
) -> None:
    made = create(kube, "c")
    wait_for(lambda: cache.object("c") is not None)
    cut(kube)
    written = {**made, "status": {"revision": 2}}
    cache.note(written, started_at=clock())
    assert cache.object("c") == written
    clock.now += 5.5
    with pytest.raises(CacheUnfit):
        cache.object("c")
    with pytest.raises(CacheUnfit):
        cache.objects()
    # a direct read started now (what the store does next) is the newest word
    newer = {**made, "status": {"revision": 3}}
    cache.note(newer, started_at=clock())
    assert cache.object("c") == newer
    cache.forget("c", started_at=clock())
    assert cache.object("c") is None
    assert cache.objects() == []


def test_stop_makes_every_read_unfit(cache: RolloutCache) -> None:
    assert cache.objects() == []
    cache.stop()
    assert not cache.fit()
    with pytest.raises(CacheUnfit):
        cache.objects()
