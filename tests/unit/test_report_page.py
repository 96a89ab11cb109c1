"""The rollout report without a browser: what it derives from a store filled through the real
machine, the page's sections and escaping, the parity samples fetched from a real HTTP server,
and ``sluice rollout report`` through the CLI."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from typer.testing import CliRunner

from controller.cli import exitcodes
from controller.cli.app import app
from controller.report.collect import collect, parity_samples
from controller.report.data import slo_series, stage_starts, weight_at
from controller.report.page import render
from controller.store.sqlite_rollouts import SqliteRolloutStore
from tests import report_rollouts
from tests.report_rollouts import SCRIPT_REASON, T0

SAMPLE = {
    "at": T0 + 100,
    "method": "GET",
    "url": "/comments/7?token=[redacted]",
    "paths": ["/body/<b>"],
    "request": {"headers": [], "body": "", "body_bytes": 0},
    "primary": {"status": 200, "headers": [], "body": '{"text": "</pre><script>1</script>"}',
                "body_bytes": 30},
    "candidate": {"status": 500, "headers": [], "body": "boom & bust", "body_bytes": 11},
    "secondary": None,
}  # fmt: skip


@pytest.fixture
def state(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "state.db"
    store = SqliteRolloutStore(path)
    try:
        report_rollouts.promoted(store)
        report_rollouts.rolled_back(store, t0=T0 + 1000)
    finally:
        store.close()
    return path


@pytest.fixture
def comparator() -> Iterator[str]:
    """A real HTTP server answering the comparator's ``GET /v1/parity/routes/{route}``."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/v1/parity/routes/comments":
                status, body = 200, {"route": "comments", "samples": [SAMPLE, "junk"]}
            elif self.path == "/v1/parity/routes/broken":
                status, body = 500, {"error": "x"}
            else:
                status, body = 404, {"error": "not under comparison"}
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _store(path: Path) -> SqliteRolloutStore:
    return SqliteRolloutStore(path)


def test_series_in_display_units(state: Path) -> None:
    store = _store(state)
    try:
        data = collect(store, "comments-v3", now=T0 + 5000)
    finally:
        store.close()
    latency, errors, parity = slo_series(data.rollout.policy.spec.analysis.slos, data.analyses)
    assert (latency.title, latency.unit) == ("p99 latency", "ms")
    assert [(p.baseline, p.candidate, p.outcome) for p in latency.points] == [
        (20.0, 20.0, "pass"),
        (20.0, 20.0, "pass"),  # the pass that ended stage 1 (carried by its event)
        (20.0, 45.0, "fail"),
    ]
    assert latency.limit == 22.0
    assert errors.unit == "%"
    assert errors.points[0].candidate == pytest.approx(0.2)  # a ratio 0.002 is 0.2%
    assert errors.limit == pytest.approx(0.21)
    assert parity.title == "parity match rate"
    assert [p.baseline for p in parity.points] == [None, None, None]
    assert parity.points[0].candidate == pytest.approx(100.0)  # mismatch 0 → match 100%
    assert parity.limit == pytest.approx(99.0)
    # the weight chart's steps and stage starts
    assert [stage for _, stage in stage_starts(data.steps)] == [0, 1]
    assert weight_at(data.steps, T0 + 1000 - 1) == 0.0
    assert weight_at(data.steps, data.end) == 0.0  # rolled back
    assert max(s.desired for s in data.steps) == 50.0


def test_page_sections_and_escaping(state: Path) -> None:
    store = _store(state)
    try:
        data = collect(store, "comments-v3", now=T0 + 5000)
        history = store.history("comments-v3")
    finally:
        store.close()
    page = render(data)
    assert page.startswith("<!DOCTYPE html>")
    for section in ("summary", "chart-weight", "chart-slo-1", "chart-slo-2", "chart-slo-3",
                    "decisions", "analyses", "parity"):  # fmt: skip
        assert f'id="{section}"' in page, section
    assert page.count('id="chart-slo-') == 3
    # plotly.js is inline once; nothing is loaded from the network
    assert len(re.findall(r"\* plotly\.js v\d", page)) == 1
    assert not re.search(r"<script[^>]+src=", page)
    # every decision is a row, its reason escaped
    rows = re.findall(r'<tr data-seq="(\d+)">', page)
    assert [int(r) for r in rows] == [e.seq for e in history]
    assert SCRIPT_REASON not in page
    assert "<script>alert" not in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; p99 too high" in page
    assert "rolled_back" in page
    assert "No comparator admin API was given" in page


def test_parity_samples_from_the_comparator(state: Path, comparator: str) -> None:
    samples, note = parity_samples(comparator, "comments")
    assert samples == [SAMPLE]
    assert note == ""
    assert parity_samples(comparator, "orders")[0] is None
    assert "does not compare route 'orders'" in parity_samples(comparator, "orders")[1]
    assert "HTTP 500" in parity_samples(comparator, "broken")[1]
    host = comparator.removeprefix("http://")
    assert parity_samples(host, "comments")[0] == [SAMPLE]  # host:port works too
    store = _store(state)
    try:
        page = render(collect(store, "comments-v2", comparator, now=T0 + 5000))
    finally:
        store.close()
    assert "1 samples, newest last." in page
    assert "&lt;/pre&gt;&lt;script&gt;1&lt;/script&gt;" in page
    assert "boom &amp; bust" in page
    assert "/body/&lt;b&gt;" in page
    assert "HTTP 500" in page


def test_cli_writes_the_report_and_prints_its_path(
    state: Path, comparator: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    result = runner.invoke(app, ["rollout", "report", "comments-v2", "--state", str(state)])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == "comments-v2-report.html"
    page = (tmp_path / "comments-v2-report.html").read_text(encoding="utf-8")
    assert "succeeded" in page
    assert "No comparator admin API was given" in page

    out = tmp_path / "reports" / "r.html"
    args = ["rollout", "report", "comments-v3", "--state", str(state), "-o", str(out),
            "--parity-admin", comparator]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert result.output.strip() == str(out)
    assert "boom &amp; bust" in out.read_text(encoding="utf-8")

    # the comparator is down: the report is still written, and says why it has no samples
    down = "http://127.0.0.1:1"
    result = runner.invoke(app, [*args[:-1], down])
    assert result.exit_code == 0, result.output
    assert "could not be reached" in out.read_text(encoding="utf-8")

    result = runner.invoke(app, ["rollout", "report", "nope", "--state", str(state)])
    assert result.exit_code == exitcodes.NOT_FOUND
    assert "no rollout named 'nope'" in result.output


def test_a_rollout_with_nothing_logged_still_renders(state: Path) -> None:
    """A Kubernetes object without status (or written before the log existed) has no steps
    and no analyses: the page says so and draws an empty weight chart."""
    store = _store(state)
    try:
        data = collect(store, "comments-v2", now=T0 + 5000)
    finally:
        store.close()
    bare = replace(data, history=[], analyses=[], steps=[], parity_samples=[], parity_note="")
    page = render(bare)
    assert 'id="chart-weight"' in page
    assert page.count('id="chart-slo-') == 3
    assert "No analysis was recorded." in page
    assert "The comparator had no mismatch samples for this route." in page
    assert "<tr data-seq=" not in page
