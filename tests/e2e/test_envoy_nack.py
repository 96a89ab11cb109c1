"""End to end: a configuration a real Envoy rejects is reported as a NACK, never as success.

The controller's own validation cannot know everything Envoy refuses: RE2 rejects a repetition
count above 1000 where Python's ``re`` accepts it. Such a header match, brought in by a gateway
reload, makes Envoy NACK the route table. Envoy must keep its last good routes (traffic goes on
as before); the controller must report the NACK with Envoy's message, refuse the reload and
serve the previous gateway again (so that Envoys connecting later do not get the rejected
one), and not resend the rejected version in a loop. Weight changes then work as before.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from .harness import (
    BASELINE,
    CANDIDATE,
    ROUTE,
    Controller,
    Envoy,
    LoadGenerator,
    Protocol,
    Upstream,
    gateway_document,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]

BAD_REGEX = "a{2000}"  # RE2: bad repetition operator (max 1000); Python re accepts it


def _with_bad_header_match(doc: dict[str, Any]) -> dict[str, Any]:
    route = doc["spec"]["listeners"][0]["virtualHosts"][0]["routes"][0]
    route["match"]["headers"] = [{"name": "x-tenant", "regex": BAD_REGEX, "invert": True}]
    return doc


def _rds_status(controller: Controller, node_id: str) -> dict[str, Any]:
    node = controller.node(node_id)
    assert node is not None
    return node["types"]["RDS"]  # type: ignore[no-any-return]


def test_envoy_nack_keeps_last_good_config_and_is_reported(
    tmp_path: Path,
    upstreams: dict[str, Upstream],
    controller_factory: Callable[..., Controller],
    envoy_factory: Callable[..., Envoy],
    protocol: Protocol,
) -> None:
    good = gateway_document(upstreams[BASELINE].port, upstreams[CANDIDATE].port)
    gateway_path = tmp_path / "reloadable-gateway.yaml"
    gateway_path.write_text(yaml.safe_dump(good))
    controller = controller_factory(gateway_path=gateway_path)
    node_id = f"nack-{protocol}"
    envoy = envoy_factory(controller, node_id=node_id, protocol=protocol)
    controller.set_weights(ROUTE, {BASELINE: 70, CANDIDATE: 30}, nodes=[node_id])
    # Envoy's config_dump shows the type version (SotW) or the resource version (Delta).
    applied_version = envoy.wait_route_weights({BASELINE: 70, CANDIDATE: 30})
    good_version = _rds_status(controller, node_id)["acked_version"]
    url = f"http://127.0.0.1:{envoy.listener_port()}"
    rejected = "update_rejected"

    # A gateway Envoy will refuse, accepted by our validation and served.
    gateway_path.write_text(yaml.safe_dump(_with_bad_header_match(gateway_document(
        upstreams[BASELINE].port, upstreams[CANDIDATE].port
    ))))  # fmt: skip
    reload = controller.http.post("/v1/gateway/reload")
    assert reload.status_code == 422, reload.text
    error = reload.json()["error"]
    assert "Envoy rejected" in error
    assert node_id in error
    assert "previous gateway is served again" in error

    nack = _rds_status(controller, node_id)["last_nack"]
    assert nack is not None
    assert "repetition" in nack["message"].lower() or "regex" in nack["message"].lower(), nack
    assert nack["version"] != good_version
    status = controller.status()
    assert status["versions"]["RDS"] == good_version, "the previous gateway is served again"
    assert _rds_status(controller, node_id)["acked_version"] == good_version
    assert "Envoy rejected" in status["gateway"]["last_reload_error"]

    # Envoy kept its last good routes: same weights, no header match, traffic unharmed.
    assert envoy.route_weights() == ({BASELINE: 70, CANDIDATE: 30}, applied_version)
    with LoadGenerator(url, concurrency=4) as load:
        summary = load.run(max_requests=400, duration=20)
    assert summary.total == 400
    assert summary.ok == 400, summary.describe()
    assert 0 < summary.count(CANDIDATE) < 400

    # Not resent in a loop: Envoy saw the bad route table exactly once.
    rds_rejections = envoy.counters(rf"\.rds\..*\.{rejected}$")
    time.sleep(2.0)
    assert envoy.counters(rf"\.rds\..*\.{rejected}$") == rds_rejections
    assert sum(rds_rejections.values()) == 1, rds_rejections

    # Weight changes work as before on the good gateway.
    controller.set_weights(ROUTE, {BASELINE: 40, CANDIDATE: 60}, nodes=[node_id])
    envoy.wait_route_weights({BASELINE: 40, CANDIDATE: 60})
    with httpx.Client(base_url=url) as client:
        assert client.get("/api/comments/1").status_code == 200

    # A new Envoy gets the good configuration, not the rejected one.
    late = envoy_factory(controller, node_id=f"{node_id}-late", protocol=protocol)
    late.wait_route_weights({BASELINE: 40, CANDIDATE: 60})
    late_status = controller.node(f"{node_id}-late")
    assert late_status is not None
    assert late_status["types"]["RDS"]["last_nack"] is None


def test_reload_of_an_invalid_gateway_changes_nothing(
    tmp_path: Path,
    upstreams: dict[str, Upstream],
    controller_factory: Callable[..., Controller],
) -> None:
    gateway_path = tmp_path / "gateway.yaml"
    gateway_path.write_text(
        yaml.safe_dump(gateway_document(upstreams[BASELINE].port, upstreams[CANDIDATE].port))
    )
    controller = controller_factory(gateway_path=gateway_path)
    before = controller.status()["versions"]
    gateway_path.write_text(gateway_path.read_text().replace(f"cluster: {CANDIDATE}", "cluster: x"))
    response = controller.http.post("/v1/gateway/reload")
    assert response.status_code == 422
    assert "unknown cluster" in response.json()["error"]
    status = controller.status()
    assert status["versions"] == before
    assert "unknown cluster" in status["gateway"]["last_reload_error"]
