"""`sluice parity serve` as a process comparing two real upstreams, read by `sluice parity diff`.

The upstreams are ``tests/e2e/upstream_server.py`` processes: each answers a JSON body naming
itself (``{"upstream": NAME, ...}``), so every compared request mismatches at ``/upstream``.
"""

from __future__ import annotations

import asyncio
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
    # The newest sample (comparisons run concurrently: any of the last ones may finish last).
    assert "GET /api/comments/" in out
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


ESC_BODY = b'{"v": "\\u001b[2J\\u001b]0;pwned\\u0007evil\\u009b6n", "pad": "%s"}'


async def _raw_upstream(side: str) -> asyncio.Server:
    """An upstream writing raw bytes: terminal escapes in a header and (JSON-escaped) in the
    body of the candidate's reply to /esc; a 20 KB JSON body on both sides for /big."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                path = head.split(b" ", 2)[1]
                extra = b""
                if path.startswith(b"/esc"):
                    body = ESC_BODY % side.encode() if side == "go" else b'{"v": "ok"}'
                    if side == "go":
                        extra = b"x-evil: \x1b[31mred\x1b]0;title\x07\r\n"
                else:
                    body = b'{"side": "%s", "pad": "%s"}' % (side.encode(), b"p" * 20_000)
                writer.write(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n%s"
                    b"content-length: %d\r\n\r\n%s" % (extra, len(body), body)
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0)


async def test_diff_prints_no_terminal_controls_and_says_when_a_body_was_cut() -> None:
    from controller.parity.comparator import Comparator, RouteParity
    from controller.policy.loading import load_gateway
    from controller.policy.parity import ParityPolicy

    servers = [await _raw_upstream(side) for side in ("python", "go")]
    comparator: Comparator | None = None
    try:
        baseline, candidate = (s.sockets[0].getsockname()[1] for s in servers)
        gateway = load_gateway(
            GATEWAY.format(baseline=baseline, candidate=candidate), "<test gateway>"
        )
        comparator = Comparator(gateway)
        comparator.configure(
            [RouteParity(ROUTE, ParityPolicy.model_validate({}), "comments-python", "comments-go")]
        )
        await comparator.start()
        await comparator.start_admin()
        admin = f"http://127.0.0.1:{comparator.admin_port}"
        async with httpx.AsyncClient() as client:
            for path in ("/big", "/esc"):
                response = await client.get(
                    f"http://127.0.0.1:{comparator.port}{path}",
                    headers={"x-sluice-parity-route": ROUTE},
                )
                assert response.status_code == 202
        tally = comparator.tally(ROUTE)
        assert tally is not None
        deadline = time.monotonic() + 10
        while tally.counts().compared < 2:
            assert time.monotonic() < deadline, tally.counts()
            await asyncio.sleep(0.02)
        proc = await asyncio.create_subprocess_exec(
            *SLUICE, "parity", "diff", ROUTE, "--admin", admin,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        out_b, err_b = await asyncio.wait_for(proc.communicate(), timeout=60)
        assert proc.returncode == 0, err_b
        out = out_b.decode()
    finally:
        if comparator is not None:
            await comparator.stop()
        for server in servers:
            server.close()
            await server.wait_closed()
    controls = [c for c in out if (ord(c) < 32 and c not in "\n\t") or 0x7F <= ord(c) <= 0x9F]
    assert controls == [], sorted(set(controls))
    assert "x-evil: red" in out  # the header, its escapes removed whole
    # In the JSON diff, json.dumps escapes C0 controls itself (\u001b): C1 ones it leaves.
    assert '"v": "\\u001b[2J\\u001b]0;pwned\\u0007evil6n"' in out
    assert "example for /side:" in out
    assert "body truncated: no JSON diff" in out
