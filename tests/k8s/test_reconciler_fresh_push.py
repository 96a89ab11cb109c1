"""A new leader never pushes a rollout's weights from a stale watch-backed read: the
reconciler reads the Rollout directly (``get(name, fresh=True)``) before a push, so a watch
that stalled behind the previous leader's writes cannot move weights back. Through the fake
API server, with the Kubernetes store reading from a watch as ``sluice serve --kubernetes``
does."""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Iterator, Mapping

import pytest
from fakekube import FakeKube
from store_contract import SOURCE, event, pending, policy

from controller.k8s.store import KubernetesRolloutStore
from controller.rollout.state import Phase, RolloutState
from controller.runtime.reconciler import Reconciler
from controller.xds.acks import AckResult
from controller.xds.resources import RouteOptions
from controller.xds.weights import WeightChange

NS = "sluice"
RDS = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"


class Pushes:
    """The weight primitive of a replica with every Envoy ACKing at once: records each
    push (route, weights)."""

    def __init__(self) -> None:
        self.pushed: list[tuple[str, dict[str, int]]] = []
        self.first = asyncio.Event()

    def options(self, route: str) -> RouteOptions | None:
        return None

    def current(self) -> dict[str, dict[str, int]]:
        return {}

    def routes_with_options(self) -> set[str]:
        return set()

    async def set_weights(
        self,
        route: str,
        weights: Mapping[str, int] | None,
        *,
        options: RouteOptions | None = None,
        nodes: Collection[str] | None = None,
        timeout_s: float = 10.0,
    ) -> WeightChange:
        self.pushed.append((route, dict(weights or {})))
        self.first.set()
        ack = AckResult(outcome="acked", type_url=RDS, version=str(len(self.pushed)))
        return WeightChange(route=route, weights=dict(weights or {}), ack=ack)


def awaiting(weight: float, stage: int, seq: int) -> RolloutState:
    return pending().model_copy(
        update={
            "phase": Phase.PROGRESSING,
            "stage": stage,
            "desired_weight": weight,
            "awaiting_ack": True,
            "push_seq": seq,
        }
    )


@pytest.fixture
def previous_leader(kube: FakeKube) -> Iterator[KubernetesRolloutStore]:
    store = KubernetesRolloutStore(kube.api_client(), NS, identity="replica-a")
    yield store
    store.close()


@pytest.fixture
def new_leader(kube: FakeKube) -> Iterator[KubernetesRolloutStore]:
    store = KubernetesRolloutStore(
        kube.api_client(), NS, identity="replica-b", watch=True, watch_retry_s=0.05
    )
    assert store.wait_synced(10)
    yield store
    kube.stall_watches(False)
    store.close()


async def test_a_new_leader_pushes_the_stored_weights_not_its_stalled_watchs(
    kube: FakeKube,
    previous_leader: KubernetesRolloutStore,
    new_leader: KubernetesRolloutStore,
) -> None:
    a = previous_leader
    a.create("c", policy(), SOURCE, pending(), event(100.0))
    a.update("c", 1, awaiting(1.0, stage=0, seq=1), [event(110.0, "pending → progressing")])
    for _ in range(200):  # the follower's watch has the 1% push owed
        if new_leader.get("c").revision == 2:
            break
        await asyncio.sleep(0.02)
    assert new_leader.get("c").revision == 2
    kube.stall_watches()  # connected, delivering nothing from now on
    # The previous leader gets the 1% ACKed, moves to 100% and pushes it, then dies.
    a.update("c", 2, awaiting(100.0, stage=1, seq=2), [event(120.0, "stage 0 → 1")])
    stale = new_leader.get("c")
    assert (stale.revision, stale.state.desired_weight) == (2, 1.0)  # still trusted
    assert new_leader.serving_from_watch

    pushes = Pushes()
    stop = asyncio.Event()
    task = asyncio.create_task(Reconciler(new_leader, pushes, poll_s=0.05).run(stop))
    try:
        await asyncio.wait_for(pushes.first.wait(), 15)
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
    assert pushes.pushed[0] == ("comments", policy().envoy_weights(100.0))
    assert all(weights == policy().envoy_weights(100.0) for _, weights in pushes.pushed)
