"""The reconciler against a real ADS server, real gRPC client streams and a real SQLite store.

The client streams stand in for Envoys: they ACK (or hold back) route configurations, and the
tests read the weights they were sent, so the assertions are on what reached the wire.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from envoy_data_plane.envoy.config.core.v3 import Node
from envoy_data_plane.envoy.config.route.v3 import RouteConfiguration
from envoy_data_plane.envoy.service.discovery.v3 import DiscoveryRequest, DiscoveryResponse

from controller.policy.gateway import Gateway
from controller.policy.loading import load_policy
from controller.policy.rollout_policy import RolloutPolicy
from controller.rollout.inputs import AckResult, Command, Tick
from controller.rollout.machine import start
from controller.rollout.state import Phase
from controller.runtime.controller import ServeConfig, run
from controller.runtime.reconciler import Reconciler
from controller.store.rollouts import PolicySource, StoredRollout
from controller.store.sqlite_rollouts import SqliteRolloutStore
from controller.store.transitions import apply_input
from controller.store.weights import SqliteWeightStore
from controller.xds.weights import WeightController

RDS = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
PY, GO = "comments-python", "comments-go"


def policy(
    stages: str, extra: str = "", route: str = "comments", baseline: str = PY
) -> RolloutPolicy:
    return load_policy(
        f"""apiVersion: sluice.dev/v1alpha1
kind: RolloutPolicy
metadata: {{name: {route}}}
spec:
  route: {route}
  baseline: {{cluster: {baseline}}}
  candidate: {{cluster: {GO}}}
  stages: {stages}
  analysis: {{interval: 100ms, slos: []}}
  ackTimeout: 2s
{extra}""",
        "policy.yaml",
    )


def create(store: SqliteRolloutStore, pol: RolloutPolicy, name: str = "comments") -> None:
    state, event = start(pol, time.time(), "test")
    source = PolicySource(path=None, git_commit=None, git_dirty=False, text="")
    store.create(name, pol, source, state, event)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteRolloutStore]:
    rollouts = SqliteRolloutStore(tmp_path / "state.db")
    yield rollouts
    rollouts.close()


@contextlib.asynccontextmanager
async def reconciling(store: SqliteRolloutStore, weights: WeightController) -> AsyncIterator[None]:
    stop = asyncio.Event()
    task = asyncio.create_task(Reconciler(store, weights, poll_s=0.05).run(stop))
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)


async def wait_for(store: SqliteRolloutStore, phase: Phase, timeout_s: float = 5) -> StoredRollout:
    deadline = time.monotonic() + timeout_s
    while True:
        rollout = await asyncio.to_thread(store.get, "comments")
        if rollout.state.phase == phase:
            return rollout
        if time.monotonic() > deadline:
            raise AssertionError(f"not {phase} within {timeout_s}s: {rollout.state}")
        await asyncio.sleep(0.02)


async def test_a_rollout_walks_every_stage_over_the_wire(
    ads: Any, store: SqliteRolloutStore, weights: WeightController
) -> None:
    client = await ads.synced_sotw("edge-1")
    create(
        store,
        policy(
            "[{weight: 10%, bake: 100ms}, {weight: 50%, bake: 100ms}, {weight: 100%, bake: 100ms}]"
        ),
    )
    seen: list[int] = []
    async with reconciling(store, weights):
        while not seen or seen[-1] != 10_000:
            resp = await client.recv(3)
            seen.append(ads.route_weights(ads.decode(resp)["public"], "comments")[GO])
            await client.ack(resp)
        done = await wait_for(store, Phase.SUCCEEDED)
    assert seen == [1000, 5000, 10_000]
    assert done.state.acked_weight == 100
    transitions = [e.transition for e in store.history("comments")]
    assert transitions[-1] == "progressing → succeeded"


async def test_an_abort_during_a_stage_transition_wins(
    ads: Any, store: SqliteRolloutStore, weights: WeightController
) -> None:
    """The 50% push is on the wire, unACKed, when the operator aborts: the reconciler stops
    waiting for it and pushes 0% at once; the rollout ends aborted at 0%."""
    client = await ads.synced_sotw("edge-1")
    create(
        store,
        policy("[{weight: 10%, bake: 100ms}, {weight: 50%, bake: 10s}, {weight: 100%, bake: 1s}]"),
    )
    async with reconciling(store, weights):
        first = await client.recv(3)
        assert ads.route_weights(ads.decode(first)["public"], "comments")[GO] == 1000
        await client.ack(first)
        second = await client.recv(3)  # the 50% push: left unACKed
        assert ads.route_weights(ads.decode(second)["public"], "comments")[GO] == 5000
        rollout, decision = await asyncio.to_thread(
            apply_input, store, "comments", Command(now=time.time(), kind="abort", actor="op")
        )
        assert not decision.refused
        assert rollout.state.phase == Phase.ROLLING_BACK
        third = await client.recv(1.5)  # well before the 2s ACK timeout of the 50% push
        assert ads.route_weights(ads.decode(third)["public"], "comments")[GO] == 0
        await client.ack(third)
        done = await wait_for(store, Phase.ABORTED)
    assert done.state.desired_weight == 0
    assert done.state.acked_weight == 0
    assert weights.current()["comments"][GO] == 0


async def test_a_nack_of_a_stage_rolls_back_and_fails(
    ads: Any, store: SqliteRolloutStore, weights: WeightController
) -> None:
    client = await ads.synced_sotw("edge-1")
    create(store, policy("[{weight: 10%, bake: 1s}, {weight: 100%, bake: 1s}]"))
    async with reconciling(store, weights):
        pushed = await client.recv(3)
        await client.nack(pushed, "weights rejected for the test")
        while True:
            resp = await client.recv(3)
            await client.ack(resp)
            if ads.route_weights(ads.decode(resp)["public"], "comments")[GO] == 0:
                break
        done = await wait_for(store, Phase.FAILED)
    assert "weights rejected for the test" in " ".join(e.reason for e in store.history("comments"))
    assert done.state.acked_weight == 0


async def test_pause_holds_the_weight_over_the_wire(
    ads: Any, store: SqliteRolloutStore, weights: WeightController
) -> None:
    client = await ads.synced_sotw("edge-1")
    create(store, policy("[{weight: 10%, bake: 200ms}, {weight: 100%, bake: 100ms}]"))
    async with reconciling(store, weights):
        await client.ack(await client.recv(3))
        await asyncio.to_thread(
            apply_input, store, "comments", Command(now=time.time(), kind="pause", actor="op")
        )
        await client.expect_silence(0.8)  # four bakes: nothing is pushed
        paused = await asyncio.to_thread(store.get, "comments")
        assert paused.state.phase == Phase.PAUSED
        await asyncio.to_thread(
            apply_input, store, "comments", Command(now=time.time(), kind="resume", actor="op")
        )
        resp = await client.recv(3)
        assert ads.route_weights(ads.decode(resp)["public"], "comments")[GO] == 10_000
        await client.ack(resp)
        await wait_for(store, Phase.SUCCEEDED)


# --- restarts: the state file decides what is served -----------------------------------------


GATEWAY = """
apiVersion: sluice.dev/v1alpha1
kind: Gateway
metadata: {name: restart}
spec:
  listeners:
    - name: public
      address: 127.0.0.1
      port: 10000
      virtualHosts:
        - name: api
          routes:
            - name: comments
              match: {prefix: /api/comments}
              weightedClusters:
                - {cluster: comments-python, weight: 100}
                - {cluster: comments-go, weight: 0}
  clusters:
    - name: comments-python
      endpoints: [{address: 127.0.0.1, port: 8001}]
    - name: comments-go
      endpoints: [{address: 127.0.0.1, port: 8002}]
"""


@contextlib.asynccontextmanager
async def serving(state: Path, capsys: pytest.CaptureFixture[str]) -> AsyncIterator[dict[str, Any]]:
    gateway = Gateway.model_validate(yaml.safe_load(GATEWAY))
    config = ServeConfig(gateway, None, "127.0.0.1:0", "127.0.0.1:0", state, poll_s=0.05)
    stop = asyncio.Event()
    task = asyncio.create_task(run(config, stop))
    ready: dict[str, Any] | None = None
    deadline = time.monotonic() + 10
    out = ""
    while ready is None:
        out += capsys.readouterr().out
        for line in out.splitlines():
            if line.startswith("{") and json.loads(line).get("event") == "ready":
                ready = json.loads(line)
        assert time.monotonic() < deadline, "the controller did not get ready"
        assert not task.done(), task.exception()
        await asyncio.sleep(0.02)
    try:
        yield ready
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


async def first_route_weights(xds: str) -> tuple[dict[str, int], Any, Any]:
    """Open a SotW stream as node ``edge-restart``, subscribe to RDS ``public``: the weights of
    ``comments`` in the first response, the (channel, call), and the response."""
    channel = grpc.aio.insecure_channel(xds)
    call = channel.stream_stream(
        "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources",
        request_serializer=bytes,
        response_deserializer=DiscoveryResponse.parse,
    )()
    await call.write(
        DiscoveryRequest(node=Node(id="edge-restart"), type_url=RDS, resource_names=["public"])
    )
    resp = await asyncio.wait_for(call.read(), 5)
    config = RouteConfiguration.parse(resp.resources[0].value)
    route = config.virtual_hosts[0].routes[-1]
    weights = {c.name: c.weight for c in route.route.weighted_clusters.clusters}
    return weights, (channel, call), resp


async def test_a_push_owed_at_a_crash_is_served_from_the_first_snapshot(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The state says 50% is being pushed (written ahead), the weight table still says 10%: the
    crash came between the two. A restarted controller serves 50% (the first snapshot has it, and
    the owed push follows at once: this test cannot tell the two apart, the next one can), and
    the bake starts at the ACK, not before."""
    state = tmp_path / "state.db"
    rollouts = SqliteRolloutStore(state)
    pol = policy("[{weight: 10%, bake: 100ms}, {weight: 50%, bake: 60s}, {weight: 100%, bake: 1s}]")
    create(rollouts, pol)
    now = time.time()
    _, first = apply_input(rollouts, "comments", Tick(now))
    apply_input(rollouts, "comments", AckResult(now, first.state.push_seq, 10.0, "acked"))
    owed, _ = apply_input(rollouts, "comments", Command(now, "promote", "op"))
    assert owed.state.awaiting_ack
    assert owed.state.desired_weight == 50
    rollouts.close()
    table = SqliteWeightStore(state)
    table.save("comments", pol.envoy_weights(10))  # what the crashed controller had saved
    table.close()

    async with serving(state, capsys) as ready:
        weights, (channel, call), resp = await first_route_weights(ready["xds"])
        assert weights == {PY: 5000, GO: 5000}
        await call.write(
            DiscoveryRequest(
                type_url=RDS,
                resource_names=["public"],
                version_info=resp.version_info,
                response_nonce=resp.nonce,
            )
        )
        reader = SqliteRolloutStore(state)
        try:
            deadline = time.monotonic() + 5
            while (current := reader.get("comments")).state.awaiting_ack:
                assert time.monotonic() < deadline, current.state
                await asyncio.sleep(0.05)
        finally:
            reader.close()
        call.cancel()
        await channel.close()
    assert current.state.stage == 1
    assert current.state.acked_weight == 50
    assert current.state.stage_started_at is not None
    assert current.state.stage_started_at >= now


async def test_a_restart_serves_the_last_acked_weights_not_a_later_table_entry(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The rollout's state (25% ACKed, baking) wins over whatever the weight table holds."""
    state = tmp_path / "state.db"
    rollouts = SqliteRolloutStore(state)
    pol = policy(
        "[{weight: 25%, bake: 60s}, {weight: 100%, bake: 1s}]",
        "  override: {header: x-sluice-target}\n",
    )
    create(rollouts, pol)
    now = time.time()
    _, first = apply_input(rollouts, "comments", Tick(now))
    apply_input(rollouts, "comments", AckResult(now, first.state.push_seq, 25.0, "acked"))
    rollouts.close()
    table = SqliteWeightStore(state)
    table.save("comments", {PY: 1, GO: 1})
    table.close()
    async with serving(state, capsys) as ready:
        weights, (channel, call), _ = await first_route_weights(ready["xds"])
        call.cancel()
        await channel.close()
    assert weights == {PY: 7500, GO: 2500}


async def test_rollouts_on_two_routes_run_at_once(
    ads: Any, store: SqliteRolloutStore, weights: WeightController
) -> None:
    client = await ads.synced_sotw("edge-1")
    stages = "[{weight: 20%, bake: 300ms}, {weight: 100%, bake: 100ms}]"
    create(store, policy(stages))
    create(store, policy(stages, route="health", baseline="static"), name="health")
    both_moving = False
    async with reconciling(store, weights):
        while True:
            resp = await client.recv(3)
            await client.ack(resp)
            decoded = ads.decode(resp)
            comments = ads.route_weights(decoded["public"], "comments").get(GO, 0)
            ops = ads.route_weights(decoded["admin"], "health").get(GO, 0)
            both_moving = both_moving or (0 < comments < 10_000 and 0 < ops < 10_000)
            if comments == ops == 10_000:
                break
        for name in ("comments", "health"):
            deadline = time.monotonic() + 5
            while store.get(name).state.phase != Phase.SUCCEEDED:
                assert time.monotonic() < deadline, store.get(name).state
                await asyncio.sleep(0.02)
    # Both were at their first stage at the same time: they ran side by side, not one after
    # the other (each first stage bakes 300 ms; pushes take milliseconds).
    assert both_moving


async def test_an_abort_during_the_backoff_is_pushed_at_once(
    store: SqliteRolloutStore, weights: WeightController
) -> None:
    """Pushes that are never confirmed (here: no Envoy connected) back off up to 10 s between
    attempts; an operator's abort meanwhile must not wait for the backoff to end."""
    create(store, policy("[{weight: 10%, bake: 1s}, {weight: 100%, bake: 1s}]"))
    now = time.time()
    owed, _ = apply_input(store, "comments", Tick(now))
    for _ in range(6):  # six unconfirmed pushes already: the next backoff is 10 s
        owed, _ = apply_input(
            store, "comments", AckResult(now, owed.state.push_seq, 10.0, "no_nodes")
        )
    async with reconciling(store, weights):
        deadline = time.monotonic() + 5
        while (await asyncio.to_thread(store.get, "comments")).state.push_attempts < 7:
            assert time.monotonic() < deadline, "the reconciler did not push"
            await asyncio.sleep(0.02)
        # The reconciler's push found no Envoy and now backs off for 10 s.
        await asyncio.to_thread(
            apply_input, store, "comments", Command(now=time.time(), kind="abort", actor="op")
        )
        done = await wait_for(store, Phase.ABORTED, timeout_s=2)
    assert done.state.acked_weight == 0
    assert weights.current()["comments"][GO] == 0
