"""End to end: a rollout with a parity policy makes a real Envoy mirror the route's safe
requests to the comparator's cluster, and nothing else.

A real ``sluice serve``, a real Envoy fed over ADS, three real upstreams: the baseline, the
candidate, and a recording upstream standing for the comparator (``upstream_server.py
--record``: it keeps what it received). The rollout is started with the CLI at a shadow stage
(0%: users stay on the baseline, mirror 100%). The test checks what the recording upstream
received (methods, paths, the ``-shadow`` Host suffix, ``x-sluice-parity-route``), Envoy's
``/stats`` (``cluster.sluice-parity.upstream_rq_total``) and ``/config_dump`` (the
``comments.mirror`` route and its ``request_mirror_policies``); POSTs are never mirrored, and
an abort removes the mirror.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from .harness import (
    BASELINE,
    CANDIDATE,
    ROUTE,
    ROUTE_PREFIX,
    UPSTREAM_HEADER,
    Controller,
    Envoy,
    Upstream,
    gateway_document,
    wait_until,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(150)]

COMPARATOR = "sluice-parity"
HOST = "comments.shop.test"
ROUTE_HEADER = "x-sluice-parity-route"
GETS, HEADS, POSTS = 30, 5, 20

POLICY = f"""\
apiVersion: sluice.dev/v1alpha1
kind: RolloutPolicy
metadata: {{name: comments}}
spec:
  route: {ROUTE}
  baseline: {{cluster: {BASELINE}}}
  candidate: {{cluster: {CANDIDATE}}}
  stages:
    # A shadow stage: no metrics provider judges the parity SLO here, so it holds (inconclusive)
    # for the whole test, mirroring.
    - {{weight: 0%, bake: 10m}}
    - {{weight: 100%, bake: 1m}}
  analysis:
    interval: 1s
    slos:
      - {{metric: parity, minValue: 99.9%}}
  ackTimeout: 5s
  parity:
    mirror: 100%
    comparator: {{cluster: {COMPARATOR}}}
"""


def _cli(state: Path, workdir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "controller", "rollout", *args, "--state", str(state)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=workdir,
        env={**os.environ, "SLUICE_ACTOR": "e2e-operator"},
    )
    assert done.returncode == 0, (
        f"sluice rollout {' '.join(args)}: exit {done.returncode}\n"
        f"stdout: {done.stdout}\nstderr: {done.stderr}"
    )
    return done


@pytest.fixture
def recorder(tmp_path: Path) -> Iterator[Upstream]:
    """The upstream standing for the comparator: it answers and records every request."""
    upstream = Upstream.start("recorder", tmp_path / "recorder", "--record")
    try:
        yield upstream
    finally:
        upstream.stop()


def _recorded(upstream: Upstream) -> list[dict[str, Any]]:
    response = httpx.get(f"http://127.0.0.1:{upstream.port}/__sluice/requests", timeout=5.0)
    response.raise_for_status()
    body = response.json()
    assert body["dropped"] == 0
    return body["requests"]  # type: ignore[no-any-return]


def _routes(envoy: Envoy) -> list[dict[str, Any]]:
    """The routes of the applied dynamic route configuration (first virtual host)."""
    for config in envoy.config_dump()["configs"]:
        if config.get("@type", "").endswith("RoutesConfigDump"):
            for dynamic in config.get("dynamic_route_configs", []):
                for vhost in dynamic.get("route_config", {}).get("virtual_hosts", []):
                    return vhost.get("routes", [])  # type: ignore[no-any-return]
    return []


def _names(envoy: Envoy) -> list[str]:
    return [r.get("name", "") for r in _routes(envoy)]


def test_safe_requests_are_mirrored_to_the_comparator_and_posts_never(
    upstreams: dict[str, Upstream],
    recorder: Upstream,
    controller_factory: Callable[..., Controller],
    envoy_factory: Callable[..., Envoy],
    tmp_path: Path,
) -> None:
    document = gateway_document(upstreams[BASELINE].port, upstreams[CANDIDATE].port)
    document["spec"]["clusters"].append(
        {
            "name": COMPARATOR,
            "connectTimeout": "1s",
            "endpoints": [{"address": "127.0.0.1", "port": recorder.port}],
        }
    )
    gateway = tmp_path / "gateway.yaml"
    gateway.write_text(yaml.safe_dump(document))
    controller = controller_factory(state_path=tmp_path / "state.db", gateway_path=gateway)
    envoy = envoy_factory(controller, node_id="mirror-e2e", protocol="sotw")
    controller.wait_node_synced(envoy.node_id, timeout=20, diag=envoy.logs)
    assert _names(envoy) == [ROUTE]  # no rollout yet: no mirror

    policy = tmp_path / "comments-policy.yaml"
    policy.write_text(POLICY)
    _cli(controller.state_path, tmp_path, "start", "comments", "--policy", str(policy))

    # The shadow stage: 100% baseline, and the mirroring copy of the route before it.
    envoy.wait_route_weights({BASELINE: 10_000, CANDIDATE: 0}, timeout=20)
    wait_until(
        lambda: _names(envoy) == [f"{ROUTE}.mirror", ROUTE],
        timeout=20,
        what="the comments.mirror route in config_dump",
        diagnostics=lambda: f"routes: {_routes(envoy)}\n{envoy.logs()}",
    )
    copy, own = _routes(envoy)
    assert "request_mirror_policies" not in own["route"]
    (mirror,) = copy["route"]["request_mirror_policies"]
    assert mirror["cluster"] == COMPARATOR
    assert mirror["runtime_fraction"]["default_value"] == {
        "numerator": 1_000_000,
        "denominator": "MILLION",
    }
    (mutation,) = mirror["request_headers_mutations"]
    assert mutation["append"]["header"] == {"key": ROUTE_HEADER, "value": ROUTE}
    (method,) = [h for h in copy["match"]["headers"] if h["name"] == ":method"]
    assert method["string_match"]["safe_regex"]["regex"] == "^(?:GET|HEAD)$"
    assert copy["route"]["weighted_clusters"] == own["route"]["weighted_clusters"]

    mirrored_before = envoy.cluster_counter(COMPARATOR, "upstream_rq_total")
    assert mirrored_before == 0
    url = f"http://127.0.0.1:{envoy.listener_port()}"
    gets, heads, posts = set(), set(), set()
    with httpx.Client(base_url=url, timeout=5.0, headers={"host": HOST}) as client:
        # POSTs go first in each pair: once every GET's mirror arrived, a mirrored POST sent
        # before it would have had its chance too.
        for i in range(max(GETS, POSTS)):
            if i < POSTS:
                path = f"{ROUTE_PREFIX}/post-{i}"
                response = client.post(path, content=b'{"text": "hello"}')
                assert response.status_code == 200
                assert response.headers[UPSTREAM_HEADER] == BASELINE
                posts.add(path)
            if i < GETS:
                path = f"{ROUTE_PREFIX}/get-{i}"
                # A client cannot name another route: Envoy overwrites the header.
                spoof = {ROUTE_HEADER: "spoofed"} if i % 10 == 0 else {}
                response = client.get(path, headers=spoof)
                assert response.status_code == 200
                assert response.headers[UPSTREAM_HEADER] == BASELINE  # users stay on baseline
                gets.add(path)
            if i < HEADS:
                path = f"{ROUTE_PREFIX}/head-{i}"
                assert client.head(path).status_code == 200
                heads.add(path)

    expected = {("GET", p) for p in gets} | {("HEAD", p) for p in heads}

    def arrived() -> list[dict[str, Any]] | None:
        found = _recorded(recorder)
        return found if len(found) >= len(expected) else None

    recorded = wait_until(
        arrived,
        timeout=20,
        what=f"{len(expected)} mirrored requests at the recording upstream",
        diagnostics=lambda: f"recorded: {len(_recorded(recorder))}\n{envoy.logs()}",
    )
    assert {(r["method"], r["path"]) for r in recorded} == expected
    assert len(recorded) == len(expected)  # each once, and never a POST
    for request in recorded:
        headers = dict(request["headers"])
        assert request["host"] == f"{HOST}-shadow"
        assert headers[ROUTE_HEADER] == ROUTE
    assert not any(r["method"] == "POST" for r in recorded)

    # Envoy's own count of what it sent to the comparator's cluster agrees.
    wait_until(
        lambda: envoy.cluster_counter(COMPARATOR, "upstream_rq_total") == len(expected),
        timeout=10,
        what=f"cluster.{COMPARATOR}.upstream_rq_total == {len(expected)}",
        diagnostics=lambda: str(envoy.counters(rf"^cluster\.{COMPARATOR}\.")),
    )
    assert envoy.cluster_counter(CANDIDATE, "upstream_rq_total") == 0
    assert envoy.cluster_counter(BASELINE, "upstream_rq_total") == GETS + HEADS + POSTS

    # An abort ends the mirroring with the rollout: the copy of the route goes away.
    _cli(controller.state_path, tmp_path, "abort", "comments")
    wait_until(
        lambda: (
            _names(envoy) == [ROUTE]
            and not any("request_mirror_policies" in r.get("route", {}) for r in _routes(envoy))
        ),
        timeout=20,
        what="config_dump without the mirror after the abort",
        diagnostics=lambda: f"routes: {_routes(envoy)}\n{envoy.logs()}",
    )
