"""`sluice serve` as a process, driven by `sluice xds ...` and a real gRPC ADS client.

Covers the ready line, the admin API through the CLI (status, set-weights exit codes), and
weights persisted across a controller restart.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from envoy_data_plane.envoy.config.core.v3 import Node
from envoy_data_plane.envoy.config.route.v3 import RouteConfiguration
from envoy_data_plane.envoy.service.discovery.v3 import DiscoveryRequest, DiscoveryResponse

from controller.xds import typeurls
from controller.xds.server import SOTW_METHOD

SLUICE = [sys.executable, "-m", "controller"]


class Controller:
    """A `sluice serve` subprocess started on port 0."""

    def __init__(self, state: Path, xds_port: int = 0, gateway: Path | None = None) -> None:
        cmd = [
            *SLUICE,
            "serve",
            "--xds-address",
            f"127.0.0.1:{xds_port}",
            "--admin-address",
            "127.0.0.1:0",
            "--state",
            str(state),
        ]
        if gateway is not None:
            cmd += ["--gateway", str(gateway)]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            self.stop()
            raise AssertionError(f"controller did not start: {self.proc.stderr.read()}")  # type: ignore[union-attr]
        ready = json.loads(line)
        assert ready["event"] == "ready"
        self.xds = ready["xds"]
        self.admin = f"http://{ready['admin']}"

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*SLUICE, *args, "--admin", self.admin],
            capture_output=True,
            text=True,
            timeout=60,
        )

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for pipe in (self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()
        return self.proc.returncode


class AckingClient:
    """A real SotW ADS stream (sync grpc in a thread) that ACKs every RDS response."""

    def __init__(self, xds: str, node_id: str) -> None:
        self.channel = grpc.insecure_channel(xds)
        self.responses: list[DiscoveryResponse] = []
        self.received = threading.Condition()
        self._requests: list[DiscoveryRequest] = [
            DiscoveryRequest(
                node=Node(id=node_id), type_url=typeurls.ROUTE, resource_names=["http"]
            )
        ]
        self._more = threading.Condition()
        self._closed = False
        call = self.channel.stream_stream(
            SOTW_METHOD, request_serializer=bytes, response_deserializer=DiscoveryResponse.parse
        )
        self.call = call(self._iterate())
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _iterate(self) -> Iterator[DiscoveryRequest]:
        while True:
            with self._more:
                while not self._requests and not self._closed:
                    self._more.wait()
                if self._closed:
                    return
                request = self._requests.pop(0)
            yield request

    def _read(self) -> None:
        try:
            for response in self.call:
                with self.received:
                    self.responses.append(response)
                    self.received.notify_all()
                with self._more:
                    self._requests.append(
                        DiscoveryRequest(
                            version_info=response.version_info,
                            type_url=response.type_url,
                            resource_names=["http"],
                            response_nonce=response.nonce,
                        )
                    )
                    self._more.notify_all()
        except grpc.RpcError:
            pass

    def wait_for(self, count: int, timeout_s: float = 10.0) -> DiscoveryResponse:
        with self.received:
            assert self.received.wait_for(lambda: len(self.responses) >= count, timeout_s)
            return self.responses[count - 1]

    def close(self) -> None:
        with self._more:
            self._closed = True
            self._more.notify_all()
        self.call.cancel()
        self.channel.close()


@pytest.fixture
def state(tmp_path: Path) -> Path:
    return tmp_path / "state" / "sluice.db"


def _weights(response: DiscoveryResponse) -> dict[str, int]:
    config = RouteConfiguration.parse(response.resources[0].value)
    route = next(r for r in config.virtual_hosts[0].routes if r.name == "comments")
    return {c.name: c.weight for c in route.route.weighted_clusters.clusters}


def test_status_and_set_weights_exit_codes(state: Path) -> None:
    controller = Controller(state)
    try:
        status = controller.cli("xds", "status", "-o", "json")
        assert status.returncode == 0, status.stderr
        data = json.loads(status.stdout)
        assert data["nodes"] == []
        assert set(data["versions"]) == {"CDS", "EDS", "LDS", "RDS"}

        # No Envoy connected: the change is served but nobody confirmed it: not success.
        none = controller.cli(
            "xds", "set-weights", "comments", "comments-python=90", "comments-go=10"
        )
        assert none.returncode == 1, none.stdout + none.stderr
        assert "no_nodes" in none.stdout

        bad = controller.cli("xds", "set-weights", "comments", "comments-rust=10")
        assert bad.returncode == 2
        assert "unknown clusters" in bad.stderr
        unknown = controller.cli("xds", "set-weights", "nope", "comments-go=10")
        assert unknown.returncode == 2
        assert "unknown route" in unknown.stderr

        client = AckingClient(controller.xds, "edge-1")
        try:
            first = client.wait_for(1)
            assert _weights(first) == {"comments-python": 90, "comments-go": 10}
            ok = controller.cli(
                "xds", "set-weights", "comments", "comments-python=75", "comments-go=25",
                "-o", "json",
            )  # fmt: skip
            assert ok.returncode == 0, ok.stdout + ok.stderr
            result = json.loads(ok.stdout)
            assert result["outcome"] == "acked"
            assert result["acked"] == ["edge-1"]
            assert _weights(client.wait_for(2)) == {"comments-python": 75, "comments-go": 25}

            reset = controller.cli("xds", "reset-weights", "comments")
            assert reset.returncode == 0, reset.stdout + reset.stderr
            assert "{'comments-python': 100, 'comments-go': 0}" in reset.stdout
            assert _weights(client.wait_for(3)) == {"comments-python": 100, "comments-go": 0}

            table = controller.cli("xds", "status")
            assert table.returncode == 0
            assert "edge-1" in table.stdout
            after = json.loads(controller.cli("xds", "status", "-o", "json").stdout)
            node = after["nodes"][0]
            assert node["types"]["RDS"]["acked_version"] == after["versions"]["RDS"]
            assert after["versions"]["RDS"] != result["version"]  # the reset moved it on
        finally:
            client.close()
    finally:
        assert controller.stop() == 0


def test_restarted_controller_serves_persisted_weights(state: Path) -> None:
    first = Controller(state)
    try:
        first.cli("xds", "set-weights", "comments", "comments-python=40", "comments-go=60")
        version = json.loads(first.cli("xds", "status", "-o", "json").stdout)["versions"]["RDS"]
        xds_port = int(first.xds.rsplit(":", 1)[1])
    finally:
        first.stop()
    second = Controller(state, xds_port=xds_port)
    try:
        routes = json.loads(
            subprocess.run(
                [sys.executable, "-c", "import httpx,sys; print(httpx.get(sys.argv[1]).text)",
                 f"{second.admin}/v1/routes"],
                capture_output=True, text=True, check=True,
            ).stdout
        )  # fmt: skip
        assert routes["routes"]["comments"] == {"comments-python": 40, "comments-go": 60}
        status = json.loads(second.cli("xds", "status", "-o", "json").stdout)
        assert status["versions"]["RDS"] == version
        client = AckingClient(second.xds, "edge-2")
        try:
            served = client.wait_for(1)
            assert served.version_info == version
            assert _weights(served) == {"comments-python": 40, "comments-go": 60}
        finally:
            client.close()
    finally:
        second.stop()


def test_persisted_weights_that_do_not_fit_the_gateway_stop_startup(
    state: Path, tmp_path: Path
) -> None:
    first = Controller(state)
    try:
        first.cli("xds", "set-weights", "comments", "comments-python=40", "comments-go=60")
    finally:
        first.stop()
    default = subprocess.run(
        [sys.executable, "-c", "from controller.policy.defaults import default_gateway_text as d;"
         "print(d())"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    renamed = tmp_path / "gateway.yaml"
    renamed.write_text(default.replace("comments-go", "comments-rust"))
    proc = subprocess.run(
        [*SLUICE, "serve", "--gateway", str(renamed), "--state", str(state),
         "--xds-address", "127.0.0.1:0", "--admin-address", "127.0.0.1:0"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "do not fit the gateway" in proc.stderr
    assert "comments-go" in proc.stderr


def test_invalid_gateway_file_exits_2_with_line(tmp_path: Path, state: Path) -> None:
    bad = tmp_path / "gateway.yaml"
    bad.write_text(
        "apiVersion: sluice.dev/v1alpha1\nkind: Gateway\nmetadata: {name: x}\nspec:\n"
        "  listeners: []\n  clusters: []\n"
    )
    proc = subprocess.run(
        [*SLUICE, "serve", "--gateway", str(bad), "--state", str(state)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 2
    assert f"{bad}:5" in proc.stderr


def test_busy_xds_port_is_a_clear_error(state: Path, tmp_path: Path) -> None:
    first = Controller(state)
    try:
        proc = subprocess.run(
            [*SLUICE, "serve", "--state", str(tmp_path / "other.db"),
             "--xds-address", first.xds, "--admin-address", "127.0.0.1:0"],
            capture_output=True, text=True, timeout=60, env={**os.environ},
        )  # fmt: skip
        assert proc.returncode == 2
        assert "cannot bind the xDS server" in proc.stderr
    finally:
        first.stop()


def test_busy_comparator_port_is_a_clear_error_and_releases_the_rest(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = subprocess.run(
            [*SLUICE, "serve", "--state", str(tmp_path / "c.db"), "--xds-address", "127.0.0.1:0",
             "--admin-address", "127.0.0.1:0", "--parity-address", f"127.0.0.1:{port}"],
            capture_output=True, text=True, timeout=60, env={**os.environ},
        )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert f"cannot bind the comparator to 127.0.0.1:{port}" in proc.stderr
    assert '"event": "ready"' not in proc.stdout


def test_sighup_and_cli_reload_the_gateway_file(state: Path, tmp_path: Path) -> None:
    default = subprocess.run(
        [sys.executable, "-c", "from controller.policy.defaults import default_gateway_text as d;"
         "print(d())"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    gateway = tmp_path / "gateway.yaml"
    gateway.write_text(default)
    controller = Controller(state, gateway=gateway)
    try:

        def status() -> dict[str, object]:
            result = controller.cli("xds", "status", "-o", "json")
            assert result.returncode == 0, result.stderr
            return json.loads(result.stdout)  # type: ignore[no-any-return]

        before = status()
        gateway.write_text(default.replace("timeout: 5s", "timeout: 7s"))
        controller.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while status()["versions"] == before["versions"]:
            assert time.monotonic() < deadline, "SIGHUP did not reload the gateway"
            time.sleep(0.1)
        after = status()
        assert after["versions"]["CDS"] == before["versions"]["CDS"]  # only routes changed
        assert after["gateway"]["last_reload_error"] is None  # type: ignore[index]

        gateway.write_text(default.replace("cluster: monolith", "cluster: nowhere"))
        refused = controller.cli("gateway", "reload")
        assert refused.returncode == 1
        assert "unknown cluster" in refused.stderr
        assert status()["versions"] == after["versions"]

        gateway.write_text(default)
        reloaded = controller.cli("gateway", "reload")
        assert reloaded.returncode == 0, reloaded.stderr
        assert status()["versions"] == before["versions"]
    finally:
        controller.stop()


def test_corrupt_state_file_is_a_clear_startup_error(tmp_path: Path) -> None:
    state = tmp_path / "state.db"
    state.write_bytes(b"this is not a database" * 100)
    proc = subprocess.run(
        [*SLUICE, "serve", "--state", str(state),
         "--xds-address", "127.0.0.1:0", "--admin-address", "127.0.0.1:0"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "cannot read the state file" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_manual_weights_on_a_route_under_rollout_are_refused_with_exit_4(
    state: Path, tmp_path: Path
) -> None:
    """`sluice xds set-weights`/`reset-weights` on a route an active rollout moves: refused
    (the admin API answers 409), exit 4 as the README documents for refusals, and nothing
    changes."""
    policy = tmp_path / "comments.yaml"
    policy.write_text(
        """apiVersion: sluice.dev/v1alpha1
kind: RolloutPolicy
metadata: {name: comments}
spec:
  route: comments
  baseline: {cluster: comments-python}
  candidate: {cluster: comments-go}
  stages: [{weight: 10%, bake: 1h}, {weight: 100%, bake: 1h}]
  analysis: {interval: 1m, slos: []}
"""
    )
    controller = Controller(state)
    try:
        started = subprocess.run(
            [*SLUICE, "rollout", "start", "c1", "--policy", str(policy), "--state", str(state)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert started.returncode == 0, started.stderr
        manual = controller.cli(
            "xds", "set-weights", "comments", "comments-python=50", "comments-go=50"
        )
        assert manual.returncode == 4, manual.stdout + manual.stderr
        assert "moved by rollout 'c1'" in manual.stderr
        reset = controller.cli("xds", "reset-weights", "comments")
        assert reset.returncode == 4, reset.stdout + reset.stderr
    finally:
        assert controller.stop() == 0
