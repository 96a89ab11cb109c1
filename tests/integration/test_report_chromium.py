"""The rollout report rendered by a real browser: headless Chromium (Debian ``chromium``).

A rollout runs through the reconciler against a real ADS server and a real gRPC client stream
(standing in for an Envoy, ACKing every weight), with an analyzer giving verdicts with the
judge's per SLO figures: stage 1 passes, stage 2 fails with a reason holding markup, and the
candidate is rolled back. ``sluice rollout report`` writes its report (parity samples from a
real comparator admin API), Chromium loads it offline and dumps the DOM after the scripts ran:
every chart drew its SVG with trace paths, the weight chart has a marker per decision, each
SLO chart a marker per analysis, the decisions table every history event, and the reason's
markup stayed text (a script in it would have renamed the page).

Without ``chromium`` on PATH the test is skipped, except in CI (``CI`` set) where it fails:
``.ci/run`` installs it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry
from typer.testing import CliRunner

from controller.cli.app import app
from controller.parity.api import admin_routes
from controller.rollout.inputs import Verdict
from controller.rollout.machine import start
from controller.rollout.state import Phase
from controller.runtime.reconciler import Reconciler
from controller.store.rollouts import PolicySource, StoredRollout
from controller.store.sqlite_rollouts import SqliteRolloutStore
from controller.xds.weights import WeightController
from tests.report_rollouts import figures, policy

MARKUP_REASON = (
    "p99 45ms > 22ms <script>document.title='pwned'</script>"
    "<img src=x onerror=\"document.title='pwned'\">"
)
SAMPLE_BODY = '{"text": "</pre><script>document.title=\'pwned\'</script>"}'
TITLE = "Sluice rollout comments"
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--virtual-time-budget=10000",
)


def chromium() -> str:
    """The Chromium binary; skip without one, fail in CI (it must be installed there)."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        why = "chromium is not installed (apt-get install chromium chromium-driver)"
        if os.environ.get("CI"):
            pytest.fail(f"{why}; CI must install it (.ci/run)")
        pytest.skip(why)
    return found


class FiguresAnalyzer:
    """Stage 1 passes, stage 2 fails on latency (with markup in the reason); figures as the
    judge gives them."""

    def __init__(self) -> None:
        self.verdicts: list[Verdict] = []

    async def judge(self, rollout: StoredRollout, now: float) -> Verdict:
        stage = rollout.state.stage
        if stage == 0:
            verdict = Verdict(now, stage, "pass", "all SLOs met", figures("pass", 20.5, 0.002, 0))
        else:
            details = figures("fail", 45.0, 0.002, 0.02)
            verdict = Verdict(now, stage, "fail", MARKUP_REASON, details)
        self.verdicts.append(verdict)
        return verdict


@contextlib.asynccontextmanager
async def comparator_admin() -> AsyncIterator[str]:
    """The comparator's admin API (its real aiohttp routes) with one mismatch sample."""
    sample: dict[str, Any] = {
        "at": time.time(),
        "method": "GET",
        "url": "/comments/7",
        "paths": ["/text"],
        "request": {"headers": [], "body": "", "body_bytes": 0},
        "primary": {"status": 200, "headers": [], "body": SAMPLE_BODY, "body_bytes": 50},
        "candidate": {"status": 200, "headers": [], "body": '{"text": ""}', "body_bytes": 12},
        "secondary": None,
    }

    def route_json(name: str) -> dict[str, Any] | None:
        return {"route": name, "samples": [sample]} if name == "comments" else None

    app_ = web.Application()
    app_.add_routes(admin_routes(CollectorRegistry(), lambda: ["comments"], route_json))
    runner = web.AppRunner(app_)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def run_rollout(store: SqliteRolloutStore, ads: Any, weights: WeightController) -> None:
    p = policy().model_copy(deep=True)
    spec = p.spec.model_copy(
        update={
            "stages": tuple(
                s.model_copy(update={"bake": s.bake / 200}) for s in p.spec.stages
            ),  # 300 ms bakes
            "analysis": p.spec.analysis.model_copy(
                update={"interval": p.spec.analysis.interval / 300}
            ),  # 100 ms
        }
    )
    p = p.model_copy(update={"spec": spec})
    state, event = start(p, time.time(), "alice")
    store.create("comments", p, PolicySource(None, None, False, ""), state, event)
    client = await ads.synced_sotw("edge-1")
    stop = asyncio.Event()
    task = asyncio.create_task(
        Reconciler(store, weights, analyzer=FiguresAnalyzer(), poll_s=0.05).run(stop)
    )
    try:
        seen: list[int] = []
        while not seen or seen[-1] != 0:
            resp = await client.recv(5)
            seen.append(ads.route_weights(ads.decode(resp)["public"], "comments")["comments-go"])
            await client.ack(resp)
        assert seen == [500, 5000, 0]
        for _ in range(250):
            if (await asyncio.to_thread(store.get, "comments")).state.phase == Phase.ROLLED_BACK:
                break
            await asyncio.sleep(0.02)
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)


def charts(dom: str) -> dict[str, str]:
    """Each chart's part of the dumped DOM, by its ``data-chart`` wrapper."""
    parts = re.split(r'<div class="chart" data-chart="([^"]+)">', dom)
    last = parts[-1].split("<h2>Decisions", 1)[0]
    chunks = [*parts[1:-1], last]
    return dict(zip(chunks[0::2], chunks[1::2], strict=True))


def drawn_lines(chunk: str) -> list[str]:
    """The ``d`` of every trace line drawn with at least two points."""
    lines = re.findall(r'<path class="js-line" d="(M[^"]+)"', chunk)
    return [d for d in lines if re.search(r"[LHV]", d)]


async def test_the_report_renders_in_chromium(
    tmp_path: Path, ads: Any, weights: WeightController
) -> None:
    binary = chromium()
    state = tmp_path / "state.db"
    store = SqliteRolloutStore(state)
    try:
        await run_rollout(store, ads, weights)
        rollout = store.get("comments")
        history = store.history("comments")
        analyses = store.analyses("comments")
    finally:
        store.close()
    assert rollout.state.phase == Phase.ROLLED_BACK, rollout.state
    assert [p.outcome for p in analyses][-1] == "fail"
    assert {p.stage for p in analyses} == {0, 1}

    out = tmp_path / "report.html"
    async with comparator_admin() as admin:
        args = ["rollout", "report", "comments", "--state", str(state), "-o", str(out),
                "--parity-admin", admin]  # fmt: skip
        result = await asyncio.to_thread(CliRunner().invoke, app, args)
    assert result.exit_code == 0, result.output
    assert result.output.strip() == str(out)

    profile = tmp_path / "chromium-profile"
    done = await asyncio.to_thread(
        subprocess.run,
        [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--dump-dom", out.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    dom = done.stdout
    assert f"<title>{TITLE}</title>" in dom  # no script from the data ran

    found = charts(dom)
    assert list(found) == ["chart-weight", "chart-slo-1", "chart-slo-2", "chart-slo-3"]
    for name, chunk in found.items():
        assert '<svg class="main-svg"' in chunk, f"{name}: plotly drew no SVG"
        assert drawn_lines(chunk), f"{name}: no trace line with data"
    weight = found["chart-weight"]
    assert len(drawn_lines(weight)) == 2  # desired and ACKed
    assert weight.count('<path class="point"') == len(history)  # a marker per decision
    labels = re.findall(r'<text class="annotation-text"[^>]*data-unformatted="([^"]*)"', weight)
    assert labels == ["stage 1/3", "stage 2/3"]  # the stage boundaries, drawn
    for name, traces in (("chart-slo-1", 2), ("chart-slo-2", 2), ("chart-slo-3", 1)):
        # latency and error rate: baseline and candidate; parity: the candidate's match rate
        assert found[name].count('<path class="point"') == traces * len(analyses), name
    assert 'class="legendtext"' in weight
    assert "comments-go desired" in weight

    rows = [int(seq) for seq in re.findall(r'<tr data-seq="(\d+)">', dom)]
    assert rows == [e.seq for e in history]
    assert any("rolled_back" in e.transition for e in history)
    escaped = "&lt;script&gt;document.title='pwned'&lt;/script&gt;"
    assert escaped in dom
    assert "<script>document.title='pwned'" not in dom
    assert '<img src="x"' not in dom
    assert "&lt;/pre&gt;&lt;script&gt;" in dom  # the parity sample's body, as text
