"""`sluice parity serve` as a process comparing two real upstreams, read by `sluice parity diff`.

The upstreams are ``tests/e2e/upstream_server.py`` processes: each answers a JSON body naming
itself (``{"upstream": NAME, ...}``), so every compared request mismatches at ``/upstream``.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

SLUICE = [sys.executable, "-m", "controller"]
UPSTREAM = Path(__file__).parents[1] / "e2e" / "upstream_server.py"
ROUTE = "comments"

GATEWAY = """\
apiVersion: sluice.dev/v1alpha1
kind: Gateway
metadata: {{name: parity-cli}}
spec:
  listeners:
    - name: http
      port: 0
      virtualHosts:
        - name: api
          routes:
            - name: comments
              match: {{prefix: /api/comments}}
              weightedClusters:
                - {{cluster: comments-python, weight: 100}}
                - {{cluster: comments-go, weight: 0}}
  clusters:
    - name: comments-python
      endpoints: [{{address: 127.0.0.1, port: {baseline}}}]
    - name: comments-go
      endpoints: [{{address: 127.0.0.1, port: {candidate}}}]
    - name: sluice-parity
      endpoints: [{{address: 127.0.0.1, port: 9}}]
"""

POLICY = """\
apiVersion: sluice.dev/v1alpha1
kind: RolloutPolicy
metadata: {name: comments-go}
spec:
  route: comments
  baseline: {cluster: comments-python}
  candidate: {cluster: comments-go}
  parity:
    mirror: 10%
"""


def start(argv: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def ready(proc: subprocess.Popen[str]) -> dict[str, Any]:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        assert proc.stderr is not None
        raise AssertionError(f"{proc.args!r} did not start: {proc.stderr.read()}")
    data: dict[str, Any] = json.loads(line)
    assert data["event"] == "ready"
    return data


def stop(proc: subprocess.Popen[str]) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def sluice(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*SLUICE, *args], capture_output=True, text=True, timeout=60)


@pytest.fixture
def files(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    procs = [start([sys.executable, str(UPSTREAM), name]) for name in ("python", "go")]
    try:
        baseline, candidate = (ready(p)["port"] for p in procs)
        gateway = tmp_path / "gateway.yaml"
        gateway.write_text(GATEWAY.format(baseline=baseline, candidate=candidate))
        policy = tmp_path / "policy.yaml"
        policy.write_text(POLICY)
        yield gateway, policy
    finally:
        for proc in procs:
            stop(proc)
            for pipe in (proc.stdout, proc.stderr):
                if pipe is not None:
                    pipe.close()


@pytest.fixture
def comparator(files: tuple[Path, Path]) -> Iterator[tuple[str, str, subprocess.Popen[str]]]:
    gateway, policy = files
    proc = start(
        [
            *SLUICE,
            "parity",
            "serve",
            "--gateway",
            str(gateway),
            "--policy",
            str(policy),
            "--listen",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
        ]
    )
    try:
        line = ready(proc)
        assert line["routes"] == [ROUTE]
        yield f"http://{line['listen']}", f"http://{line['admin']}", proc
    finally:
        stop(proc)
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()


def test_serve_compares_and_diff_names_the_path_with_an_example(
    comparator: tuple[str, str, subprocess.Popen[str]],
) -> None:
    listen, admin, proc = comparator
    with httpx.Client() as client:
        for n in range(6):
            response = client.get(
                f"{listen}/api/comments/{n}",
                headers={"x-sluice-parity-route": ROUTE, "authorization": "Bearer s3cret"},
            )
            assert response.status_code == 202
        deadline = time.monotonic() + 10
        while True:
            data = client.get(f"{admin}/v1/parity/routes/{ROUTE}").json()
            if data["counts"]["compared"] == 6:
                break
            assert time.monotonic() < deadline, data
            time.sleep(0.05)
        metrics = client.get(f"{admin}/metrics").text
    assert 'sluice_parity_requests_total{outcome="mismatched",route="comments"} 6.0' in metrics

    table = sluice("parity", "diff", ROUTE, "--admin", admin)
    assert table.returncode == 0, table.stderr
    out = table.stdout
    assert "compared 6: matched 0 (0%), noisy 0 (0%), mismatched 6 (100%)" in out
    assert "/upstream" in out
    assert "example for /upstream, /path:" not in out  # /path is the same on both sides
    assert "example for /upstream:" in out
    assert "GET /api/comments/5" in out  # the newest sample
    assert "authorization: [redacted]" in out
    assert '-  "upstream": "python"' in out
    assert '+  "upstream": "go"' in out

    as_json = sluice("parity", "diff", ROUTE, "--admin", admin, "-o", "json")
    assert as_json.returncode == 0, as_json.stderr
    data = json.loads(as_json.stdout)
    assert data["paths"] == {"/upstream": {"mismatched": 6, "noisy": 0}}

    missing = sluice("parity", "diff", "nope", "--admin", admin, "--state", "/nonexistent.db")
    assert missing.returncode == 5
    assert "not under comparison" in missing.stderr

    assert stop(proc) == 0
    assert proc.stderr is not None
    assert '"event": "stopped"' in proc.stderr.read()


def test_diff_without_a_comparator_exits_3() -> None:
    result = sluice("parity", "diff", ROUTE, "--admin", "http://127.0.0.1:9")
    assert result.returncode == 3
    assert "cannot reach" in result.stderr


def test_serve_refuses_a_policy_without_parity(files: tuple[Path, Path], tmp_path: Path) -> None:
    gateway, _ = files
    plain = tmp_path / "plain.yaml"
    plain.write_text(POLICY.split("  parity:")[0])
    result = sluice("parity", "serve", "--gateway", str(gateway), "--policy", str(plain))
    assert result.returncode == 2
    assert f"{plain}:4: spec: no parity section" in result.stderr
