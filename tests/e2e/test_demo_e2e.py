"""End to end: ``sluice demo``, as a person runs it, for every scenario.

Each scenario runs the real command (``python -m controller demo --scenario S -o json``): it
starts the sample services, a real Envoy, Prometheus (installed in CI), the controller with
its comparator, and real traffic, then rolls the route out. Assertions are on what the demo
reports that clients received and Envoy applied (its ``/config_dump`` at the end), on the
rollout as the controller recorded it, on the report (rendered by headless Chromium for the
parity scenario), and on every process it started being gone when it exits, also on Ctrl-C.
"""

from __future__ import annotations

import json
import math
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.integration.test_report_chromium import CHROMIUM_FLAGS, charts, chromium, drawn_lines

from .harness import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

BASELINE = "comments-python"
CANDIDATE = "comments-go"


def run_demo(workdir: Path, *args: str, timeout: float = 280) -> tuple[dict[str, Any], str]:
    """Run the demo to its end; returns its JSON outcome and its stderr."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "controller",
            "demo",
            "-o",
            "json",
            "--workdir",
            str(workdir),
            "--timeout",
            "240",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.stdout.strip(), f"no outcome (exit {done.returncode}):\n{done.stderr[-3000:]}"
    outcome: dict[str, Any] = json.loads(done.stdout)
    assert done.returncode == (0 if outcome["as_expected"] else 1), done.stderr[-3000:]
    return outcome, done.stderr


def assert_all_stopped(outcome: dict[str, Any]) -> None:
    names = [p["name"] for p in outcome["processes"]]
    assert {BASELINE, CANDIDATE, "envoy", "controller"} <= set(names), names
    for process in outcome["processes"]:
        assert (
            not psutil.pid_exists(process["pid"])
            or psutil.Process(process["pid"]).status() == psutil.STATUS_ZOMBIE
        ), process


def judged_by(outcome: dict[str, Any]) -> str:
    return "prometheus" if outcome["provider"] == "prometheus" else "envoy_admin"


def judged_against_the_past(outcome: dict[str, Any]) -> bool:
    """The rollout was rolled back by a verdict of its last stage (100%) on ``latency_p99``
    alone, judged against the baseline's past (the rollout so far: the stage's baseline
    served too little).

    That verdict compares two different moments: a machine that stalls during the candidate's
    window (a pause of the VM, other work on its two CPUs) slows the candidate alone. It is
    the limit named in ``docs/architecture.md`` (Known limits), not a defect of the demo. The
    earlier stages can use the same reference (in a window's first second, or while the load
    stalls), but there the baseline serves concurrently: a rollback there is not excused.
    """
    rollout = outcome["rollout"]
    if (
        outcome["phase"] != "rolled_back"
        or outcome["rollback_cause"] != "verdict"
        or outcome["failed_slos"] != ["latency_p99"]
        or rollout["stage"] != rollout["stages"]
    ):
        return False
    return bool(outcome["decision"]["details"]["slos"]["latency_p99"].get("reference"))


@pytest.mark.parametrize(
    ("scenario", "provider"),
    [("healthy", "auto"), ("latency", "auto"), ("errors", "envoy_admin"), ("parity", "auto")],
)
@pytest.mark.timeout(600)  # a healthy rollout judged against the past may run twice
def test_each_scenario_ends_as_it_says(tmp_path: Path, scenario: str, provider: str) -> None:
    """The demo ends as its scenario says. A healthy candidate rolled back at 100% on its
    latency against the baseline's past (:func:`judged_against_the_past`) runs once more, and
    the second rollout must be promoted: once is the known limit, twice is a failure."""
    workdir = tmp_path
    outcome, stderr = run_demo(workdir, "--scenario", scenario, "--provider", provider)
    if scenario == "healthy" and judged_against_the_past(outcome):
        assert_all_stopped(outcome)
        # A warning, so that the CI summary shows a passing test that needed its second run.
        warnings.warn(
            f"the healthy rollout was rolled back against the past, running it again: "
            f"{outcome['decision']['reason']}; clients: {json.dumps(outcome['load'])}",
            stacklevel=1,
        )
        workdir = tmp_path / "again"
        outcome, stderr = run_demo(workdir, "--scenario", scenario, "--provider", provider)
    diag = json.dumps({k: outcome[k] for k in ("phase", "reason", "decision", "load")}, indent=1)
    assert outcome["as_expected"], diag
    if provider == "envoy_admin":
        assert outcome["provider"] == "envoy_admin"
    elif os.environ.get("CI"):
        assert outcome["provider"] == "prometheus", "CI installs Prometheus: auto must use it"
    load = outcome["load"]
    assert load["transport_errors"] == 0, diag
    served = load["by_upstream"]
    weights = outcome["envoy_weights"]
    if scenario == "healthy":
        assert outcome["phase"] == "succeeded", diag
        assert weights == {BASELINE: 0, CANDIDATE: 10000}  # what Envoy applies at the end
        assert served[CANDIDATE] > 1000, diag
        assert outcome["envoy_requests"][CANDIDATE] >= served[CANDIDATE], outcome["envoy_requests"]
        assert load["server_errors"] == 0, diag
        stages = [e for e in outcome["history"] if "baked and passed" in e["reason"]]
        assert len(stages) == 4, [e["reason"] for e in outcome["history"]]
    else:
        assert outcome["phase"] == "rolled_back", diag
        assert outcome["rollback_cause"] == "verdict", diag
        assert outcome["failed_slos"] == [
            {"latency": "latency_p99", "errors": "error_rate", "parity": "parity"}[scenario]
        ], diag
        assert weights == {BASELINE: 10000, CANDIDATE: 0}
        slo = outcome["decision"]["details"]["slos"][outcome["failed_slos"][0]]
        assert slo["outcome"] == "fail"
    if scenario == "latency":
        figures = outcome["decision"]["details"]["slos"]["latency_p99"]
        assert figures["candidate"] > figures["baseline"], figures
    if scenario == "errors":
        # Only the candidate failed, only on writes: clients saw 503s, all from comments-go.
        assert load["by_status"].get("503", 0) > 0, diag
        assert outcome["decision"]["details"]["slos"]["parity"]["outcome"] != "fail"
    if scenario == "parity":
        # Rolled back in the shadow stage: no user request ever reached the candidate.
        assert outcome["rollout"]["stage"] == 1, diag
        assert CANDIDATE not in served, diag
        assert outcome["envoy_requests"][CANDIDATE] == 0, outcome["envoy_requests"]
        assert outcome["envoy_requests"][BASELINE] >= served[BASELINE], outcome["envoy_requests"]
    # Each decision was shown as it happened, and the rollout's record says the same.
    for event in outcome["history"]:
        assert event["reason"] in stderr
    report = Path(outcome["report"])
    assert report.is_file()
    assert report.parent == workdir
    assert_all_stopped(outcome)
    if scenario == "parity":
        assert_report_renders(report, tmp_path, outcome)


def assert_report_renders(report: Path, tmp_path: Path, outcome: dict[str, Any]) -> None:
    """Chromium draws every chart of the demo's report, and its parity samples are there."""
    done = subprocess.run(
        [
            chromium(),
            *CHROMIUM_FLAGS,
            f"--user-data-dir={tmp_path / 'chromium-profile'}",
            "--dump-dom",
            report.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    found = charts(done.stdout)
    assert list(found) == ["chart-weight", "chart-slo-1", "chart-slo-2", "chart-slo-3"]
    for name, chunk in found.items():
        assert '<svg class="main-svg"' in chunk, f"{name}: plotly drew no SVG"
    assert drawn_lines(found["chart-weight"]), "no weight line"
    # The rollout failed within a few analyses of the shadow stage: parity's markers, at least.
    assert '<path class="point"' in found["chart-slo-3"], "no parity marker"
    # The comparator's samples: the rewrite's author.display_name bug, as people will see it.
    assert "/author/display_name" in done.stdout


def watch_exits(procs: list[psutil.Process], stop: threading.Event) -> dict[int, float]:
    """Start noting when each process ends (exits, or waits as a zombie to be reaped), in
    ``time.monotonic()`` seconds, every 10 ms until ``stop``; returns the (live) dict."""
    ended: dict[int, float] = {}

    def poll() -> None:
        while not stop.is_set() and len(ended) < len(procs):
            for proc in procs:
                if proc.pid in ended:
                    continue
                try:
                    done = proc.status() == psutil.STATUS_ZOMBIE
                except psutil.NoSuchProcess:
                    done = True
                if done:
                    ended[proc.pid] = time.monotonic()
            time.sleep(0.01)

    threading.Thread(target=poll, daemon=True).start()
    return ended


@pytest.mark.parametrize(
    ("sig", "when"),
    [(signal.SIGINT, "rolling out"), (signal.SIGTERM, "rolling out"), (signal.SIGINT, "starting")],
    ids=["ctrl-c", "sigterm", "ctrl-c-while-starting"],
)
def test_a_signal_stops_every_child_before_the_demo_exits(
    tmp_path: Path, sig: signal.Signals, when: str
) -> None:
    """The demo stops its children itself, and waits for them, before it exits: each ended
    before the demo did (PR_SET_PDEATHSIG would only end them after)."""
    demo = subprocess.Popen(
        [sys.executable, "-m", "controller", "demo", "--workdir", str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    stop = threading.Event()
    try:
        state = tmp_path / "state.db"
        envoy_started = tmp_path / "envoy.stdout"

        def reached() -> bool:
            if demo.poll() is not None:
                raise AssertionError(f"the demo exited: {demo.communicate()}")
            if when == "starting":  # Envoy forked (its output file is opened just before)
                forked = psutil.Process(demo.pid).children(recursive=True)
                return envoy_started.exists() and len(forked) >= 3
            if not state.exists():
                return False
            try:
                with sqlite3.connect(f"file:{state}?mode=ro", uri=True) as db:
                    return bool(db.execute("select count(*) from rollouts").fetchone()[0])
            except sqlite3.Error:
                return False

        wait_until(reached, timeout=90, what=f"the demo to be {when}", interval=0.05)
        children = psutil.Process(demo.pid).children(recursive=True)
        names = {c.name() for c in children}
        assert len(children) >= (3 if when == "starting" else 5), names
        ended = watch_exits(children, stop)
        demo.send_signal(sig)
        out, err = demo.communicate(timeout=60)
        demo_ended = time.monotonic()
    finally:
        stop.set()
        if demo.poll() is None:
            demo.kill()
            demo.wait()
    assert demo.returncode == 130, err[-2000:]
    assert "interrupted: everything stopped" in out + err
    _, alive = psutil.wait_procs(children, timeout=5)
    assert not alive, [p.pid for p in alive]
    late = [c.pid for c in children if ended.get(c.pid, math.inf) > demo_ended]
    assert not late, f"ended after the demo (not stopped by it): {late}"


def test_sigkill_of_the_demo_leaves_nothing_behind(tmp_path: Path) -> None:
    """Even killed outright, the demo's children follow it (PR_SET_PDEATHSIG)."""
    demo = subprocess.Popen(
        [sys.executable, "-m", "controller", "demo", "-o", "json", "--workdir", str(tmp_path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        ready = tmp_path / "controller.stdout"
        wait_until(
            lambda: ready.exists() and '"ready"' in ready.read_text(),
            timeout=90,
            what="the demo's controller to start",
        )
        children = psutil.Process(demo.pid).children(recursive=True)
        assert len(children) >= 4, children
        demo.kill()
        demo.wait(10)
        _gone, alive = psutil.wait_procs(children, timeout=10)
        assert not alive, [(p.pid, p.name()) for p in alive]
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
