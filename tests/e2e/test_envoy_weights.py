"""End to end: weights set through the controller move real traffic through a real Envoy.

Each test asserts on what the clients received (status, the ``x-upstream`` header naming the
upstream that answered, connection errors) and on what Envoy reports (``/config_dump`` for the
``weighted_clusters`` applied, ``/stats`` counters), never on the controller's logs.

Run with ``pytest tests/e2e --e2e`` (``-rP`` shows the figures each test prints).
"""

from __future__ import annotations

import json
import re
import signal
from collections.abc import Callable
from pathlib import Path

import pytest

from .harness import (
    BASELINE,
    CANDIDATE,
    ROUTE,
    Controller,
    Envoy,
    LoadGenerator,
    Protocol,
    Stack,
    Summary,
    binomial_interval,
    summarize,
    wait_until,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]


def assert_clean(summary: Summary, context: str, diagnostics: Callable[[], str]) -> None:
    """Every request answered 200 by an upstream: no 5xx, no 4xx, no connection error."""
    assert summary.total > 0, f"{context}: no request was sent"
    assert not summary.errors, f"{context}: {summary.describe()}\n{diagnostics()}"
    assert summary.ok == summary.total, f"{context}: {summary.describe()}\n{diagnostics()}"


def listener_connections(envoy: Envoy) -> int:
    """Downstream connections Envoy accepted on the gateway listener (stat prefix ``e2e``)."""
    name = "http.e2e.downstream_cx_total"
    return envoy.counters(f"^{re.escape(name)}$").get(name, 0)


def control_plane_connected(envoy: Envoy) -> int | None:
    """Envoy's ``control_plane.connected_state`` gauge (1: its ADS stream is up)."""
    stats = envoy.http.get("/stats", params={"filter": r"^control_plane\.connected_state$"}).text
    for line in stats.splitlines():
        name, _, value = line.partition(": ")
        if name == "control_plane.connected_state":
            return int(value)
    return None


# --- 1. the split follows the weights --------------------------------------------------------


def test_split_within_binomial_interval(
    stack: Stack, record_property: Callable[[str, object], None]
) -> None:
    """90/10: 2,000 requests split within the binomial 99.9% interval; Envoy applied 90/10."""
    stack.set_weights(90, 10)
    version = stack.envoy.wait_route_weights({BASELINE: 90, CANDIDATE: 10}, timeout=2.0)
    before = {c: stack.envoy.cluster_counter(c, "upstream_rq_total") for c in (BASELINE, CANDIDATE)}

    summary = stack.load(concurrency=8).run(2000, duration=60.0)

    assert summary.total == 2000, summary.describe()
    assert_clean(summary, "90/10 split", stack.diagnostics)
    low, high = binomial_interval(0.999, 2000, 0.10)
    candidate = summary.count(CANDIDATE)
    figures = {
        "protocol": stack.envoy.protocol,
        "requests": summary.total,
        "baseline": summary.count(BASELINE),
        "candidate": candidate,
        "interval_99.9": [low, high],
        "rds_version": version,
    }
    print(f"scenario 1: {json.dumps(figures)}")
    record_property("figures", figures)
    assert low <= candidate <= high, (
        f"candidate got {candidate} of 2000 requests at weight 10%, outside the binomial"
        f" 99.9% interval [{low}, {high}]: {summary.describe()}"
    )
    # Envoy counted the same split as the clients saw (counters are live in /stats).
    expected = {BASELINE: summary.count(BASELINE), CANDIDATE: candidate}
    wait_until(
        lambda: (
            {c: stack.envoy.cluster_counter(c, "upstream_rq_total") - before[c] for c in expected}
            == expected
        ),
        timeout=3.0,
        what=f"Envoy's cluster upstream_rq_total to match what clients saw {expected}",
    )
    assert stack.envoy.route_weights() == ({BASELINE: 90, CANDIDATE: 10}, version)


# --- 2. a change takes effect at once --------------------------------------------------------


def test_weight_change_applies_to_next_requests(stack: Stack) -> None:
    """Once set-weights returns ``acked``, the next requests go where the new weights say."""
    stack.set_weights(100, 0)
    stack.envoy.wait_route_weights({BASELINE: 100, CANDIDATE: 0}, timeout=2.0)
    before = stack.load(concurrency=4).run(200)
    assert_clean(before, "100/0", stack.diagnostics)
    assert before.count(BASELINE) == 200, f"100/0: {before.describe()}"

    ack = stack.set_weights(0, 100)
    assert ack["acked"] == [stack.envoy.node_id], ack
    after = stack.load(concurrency=8).run(400)  # no wait, no poll: right after the ACK

    assert_clean(after, "0/100", stack.diagnostics)
    assert after.count(CANDIDATE) == 400, (
        f"after the ACK of 0/100 (RDS {ack['version']}), not every request went to the"
        f" candidate: {after.describe()}\n{stack.diagnostics()}"
    )
    assert stack.envoy.applied_weights() == {BASELINE: 0, CANDIDATE: 100}


# --- 3. stepping under continuous load -------------------------------------------------------

STEPS = (0, 1, 5, 25, 100, 0)


def test_steps_under_load_without_errors(
    stack: Stack, record_property: Callable[[str, object], None]
) -> None:
    """8 keep-alive clients while the candidate weight moves 0 → 1 → 5 → 25 → 100 → 0: no
    5xx and no connection error at any step, and no client connection was dropped."""
    concurrency = 8
    stack.set_weights(100, 0)
    stack.envoy.wait_route_weights({BASELINE: 100, CANDIDATE: 0}, timeout=2.0)
    cx_before = listener_connections(stack.envoy)
    load = stack.load(concurrency=concurrency)
    rows = []
    with load:
        load.start("warm-up", duration=60.0)
        load.wait_phase("warm-up", min_requests=100, min_seconds=0.3, timeout=10.0)
        for index, weight in enumerate(STEPS):
            switching = f"{index}:switch→{weight}"
            steady = f"{index}:{weight}%"
            load.set_phase(switching)
            ack = stack.set_weights(100 - weight, weight)
            load.set_phase(steady)
            load.wait_phase(steady, min_requests=400, min_seconds=1.2, timeout=15.0)
            applied = stack.envoy.applied_weights()
            expected_weights = {BASELINE: 100 - weight, CANDIDATE: weight}
            assert applied == expected_weights, f"step {weight}%: Envoy applied {applied}"
            rows.append((weight, ack["elapsed_ms"], switching, steady))
        load.set_phase("done")
    figures = []
    for weight, ack_ms, switching, steady in rows:
        # During the switch: every request that overlapped it, whichever way it went.
        during, after = summarize(load.touching(switching)), load.summary(steady)
        figures.append(
            {
                "candidate_weight": weight,
                "ack_ms": ack_ms,
                "during_switch": during.total,
                "requests": after.total,
                "baseline": after.count(BASELINE),
                "candidate": after.count(CANDIDATE),
                "5xx": during.server_errors + after.server_errors,
                "conn_errors": sum(during.errors.values()) + sum(after.errors.values()),
            }
        )
    print(f"scenario 3 ({stack.envoy.protocol}):")
    for row in figures:
        print(f"  {json.dumps(row)}")
    record_property("figures", figures)

    everything = load.summary()
    assert_clean(everything, "stepping under load", stack.diagnostics)
    for (weight, _, _, steady), row in zip(rows, figures, strict=True):
        if weight in (0, 100):
            expected = CANDIDATE if weight == 100 else BASELINE
            strays = [
                (r.worker, round((r.started - load.phase_started[steady]) * 1000, 1), r.upstream)
                for r in load.phase_results(steady)
                if r.upstream != expected
            ]
            assert row[expected] == row["requests"], (
                f"at {weight}% every request after the ACK must reach {expected}: {row};"
                f" strays (worker, ms after the ACK, upstream): {strays}"
            )
        else:
            # Loose check (99.999%: five steps, several tests) that the split follows the step.
            low, high = binomial_interval(0.99999, row["requests"], weight / 100)
            assert low <= row["candidate"] <= high, (
                f"at {weight}%: candidate {row['candidate']} of {row['requests']} outside"
                f" [{low}, {high}]: {load.summary(steady).describe()}"
            )
    # The keep-alive connections survived every change: Envoy accepted no new ones.
    assert listener_connections(stack.envoy) - cx_before == concurrency, (
        f"Envoy accepted {listener_connections(stack.envoy) - cx_before} connections for"
        f" {concurrency} keep-alive clients: some connection was closed during the steps"
    )


# --- 4. a restarted Envoy gets the current config --------------------------------------------


def test_restarted_envoy_gets_current_weights(
    stack: Stack, envoy_factory: Callable[..., Envoy], protocol: Protocol
) -> None:
    """0/100, then Envoy is killed and a new one with the same node id starts: it serves 0/100
    from its first request (not the gateway file's 100/0)."""
    stack.set_weights(0, 100)
    stack.envoy.wait_route_weights({BASELINE: 0, CANDIDATE: 100}, timeout=2.0)
    stack.envoy.kill()

    envoy = envoy_factory(stack.controller, node_id=stack.envoy.node_id, protocol=protocol)
    restarted = Stack(stack.controller, envoy)
    # The listener is active only once its routes arrived (listener warming waits for RDS).
    applied = envoy.applied_weights()
    assert applied == {BASELINE: 0, CANDIDATE: 100}, (
        f"restarted Envoy applied {applied}, expected 0/100\n{restarted.diagnostics()}"
    )
    summary = restarted.load(concurrency=8).run(300)
    assert_clean(summary, "restarted Envoy", restarted.diagnostics)
    assert summary.count(CANDIDATE) == 300, (
        f"restarted Envoy: {summary.describe()}\n{restarted.diagnostics()}"
    )
    assert envoy.cluster_counter(CANDIDATE, "upstream_rq_total") == 300
    assert envoy.cluster_counter(BASELINE, "upstream_rq_total") == 0


# --- 4b. the controller's view of a restarted Envoy ------------------------------------------


def test_restarted_envoy_not_reported_in_sync_before_it_acks(
    stack: Stack, envoy_factory: Callable[..., Envoy], protocol: Protocol
) -> None:
    """A new Envoy process reusing a node id starts empty. Until it has asked for and ACKed
    the routes, the controller must not report it as holding them, nor let a weight change
    count it as ACKed. Made visible with an Envoy that asks for clusters only: Envoy says it
    has no route at all, so no claim of the controller about its RDS can be true."""
    stack.set_weights(0, 100)
    stack.envoy.wait_route_weights({BASELINE: 0, CANDIDATE: 100}, timeout=2.0)
    node_id = stack.envoy.node_id
    stack.envoy.kill()

    envoy = envoy_factory(stack.controller, node_id=node_id, protocol=protocol, listeners=False)
    wait_until(
        lambda: (
            control_plane_connected(envoy) == 1
            and envoy.counters(r"^cluster_manager\.cds\.update_success$").get(
                "cluster_manager.cds.update_success", 0
            )
            >= 1
        ),
        timeout=5.0,
        what="the new Envoy to connect and accept its clusters",
        diagnostics=envoy.logs,
    )
    assert envoy.route_weights() is None, "an Envoy without listeners has no routes"
    status = stack.controller.status()
    node = next(n for n in status["nodes"] if n["node_id"] == node_id)
    rds = node["types"].get("RDS")
    assert rds is None or rds["acked_version"] != status["versions"]["RDS"], (
        f"the controller reports {node_id} (a new Envoy that has no routes) as having ACKed"
        f" RDS {status['versions']['RDS']}: {json.dumps(node)}"
    )
    response = stack.controller.http.put(
        f"/v1/routes/{ROUTE}/weights",
        json={"weights": {BASELINE: 0, CANDIDATE: 100}, "nodes": [node_id], "timeout_s": 1.0},
    )
    assert response.json()["outcome"] != "acked", (
        f"set-weights reports {node_id} ACKed routes it never asked for: {response.json()}"
    )


# --- 5. the controller goes down and comes back ----------------------------------------------


def test_envoy_serves_through_controller_restart(
    tmp_path: Path,
    controller_factory: Callable[..., Controller],
    envoy_factory: Callable[..., Envoy],
    node_id: str,
    protocol: Protocol,
    record_property: Callable[[str, object], None],
) -> None:
    """Controller stopped (SIGTERM): Envoy keeps serving the last weights without errors. A
    controller restarted on the same state file and xDS port serves the same weights: the
    reconnected Envoy still applies them, the split is unchanged, and ``GET /v1/routes`` says
    so."""
    weights = {BASELINE: 70, CANDIDATE: 30}
    state = tmp_path / "state.db"
    first = controller_factory(state_path=state)
    envoy = envoy_factory(first, node_id=node_id, protocol=protocol)
    first.set_weights(ROUTE, weights, nodes=[node_id])
    version = envoy.wait_route_weights(weights, timeout=2.0)
    cx_before = listener_connections(envoy)

    def diagnostics() -> str:
        return f"{envoy.logs()}\n{first.proc.logs(20)}"

    concurrency = 8
    load = LoadGenerator(f"http://127.0.0.1:{envoy.listener_port()}", concurrency=concurrency)
    with load:
        load.start("controller up", duration=60.0)
        load.wait_phase("controller up", min_requests=400, min_seconds=1.0, timeout=15.0)

        load.set_phase("controller stopping")
        code = first.stop(signal.SIGTERM, grace=10.0)
        assert code == 0, f"the controller exited with {code} on SIGTERM\n{first.proc.logs()}"
        load.set_phase("controller down")
        wait_until(
            lambda: control_plane_connected(envoy) == 0,
            timeout=5.0,
            what="Envoy to report its control plane disconnected",
            diagnostics=diagnostics,
        )
        load.wait_phase("controller down", min_requests=400, min_seconds=1.5, timeout=15.0)
        assert envoy.route_weights() == (weights, version), "Envoy lost its config"

        load.set_phase("controller restarting")
        second = controller_factory(state_path=state, xds_port=first.xds_port)
        assert second.xds_port == first.xds_port
        node = second.wait_node_synced(node_id, timeout=15.0, diag=envoy.logs)
        wait_until(
            lambda: control_plane_connected(envoy) == 1,
            timeout=5.0,
            what="Envoy to report its control plane connected",
            diagnostics=envoy.logs,
        )
        load.set_phase("controller back")
        load.wait_phase("controller back", min_requests=400, min_seconds=1.0, timeout=15.0)
        load.set_phase("done")

    phases = (
        "controller up",
        "controller stopping",
        "controller down",
        "controller restarting",
        "controller back",
    )
    figures = {}
    for phase in phases:
        s = load.summary(phase)
        figures[phase] = {
            "requests": s.total,
            "baseline": s.count(BASELINE),
            "candidate": s.count(CANDIDATE),
            "5xx": s.server_errors,
            "conn_errors": sum(s.errors.values()),
        }
    print(f"scenario 5 ({protocol}): {json.dumps(figures)}")
    record_property("figures", figures)

    assert_clean(load.summary(), "through the controller restart", diagnostics)
    # What Envoy applies after the reconnection: the same weights, under the same version
    # (versions are content hashes, so the restarted controller had nothing new to push).
    assert envoy.route_weights() == (weights, version), (
        f"after the restart Envoy applies {envoy.route_weights()}, expected {(weights, version)}"
        f"\n{envoy.logs()}\n{second.proc.logs()}"
    )
    assert node["protocol"] == protocol, node
    assert second.routes()[ROUTE] == weights, second.routes()
    # The split stayed 70/30 before, while down, and after (99.99% each: several phases).
    for phase in ("controller up", "controller down", "controller back"):
        row = figures[phase]
        low, high = binomial_interval(0.9999, row["requests"], 0.30)
        assert low <= row["candidate"] <= high, (
            f"{phase}: candidate {row['candidate']} of {row['requests']} outside [{low}, {high}]"
        )
    # No client connection was dropped (no listener drain on the reconnection).
    assert listener_connections(envoy) - cx_before == concurrency, (
        f"Envoy accepted {listener_connections(envoy) - cx_before} connections for"
        f" {concurrency} keep-alive clients across the controller restart"
    )
    # The reconnected stream is a working one: the new controller still moves traffic.
    second.set_weights(ROUTE, {BASELINE: 0, CANDIDATE: 100}, nodes=[node_id])
    after = LoadGenerator(f"http://127.0.0.1:{envoy.listener_port()}", concurrency=4).run(200)
    assert_clean(after, "0/100 set by the restarted controller", diagnostics)
    assert after.count(CANDIDATE) == 200, after.describe()
    assert envoy.applied_weights() == {BASELINE: 0, CANDIDATE: 100}
