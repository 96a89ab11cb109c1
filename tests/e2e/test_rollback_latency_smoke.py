"""The rollback-latency benchmark still runs and still rolls back (its times are read by people,
not asserted here)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]


def test_rollback_latency_one_run_rolls_back() -> None:
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "rollback_latency.py"),
            "--runs",
            "1",
            "--provider",
            "envoy_admin",
        ],
        capture_output=True,
        text=True,
        timeout=230,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    assert figures["benchmark"] == "rollback_latency"
    summary = figures["providers"]["envoy_admin"]
    assert summary["rolled_back"] == 1, summary
    (run,) = summary["runs"]
    assert run["rolled_back_in_envoy"] is True
    assert run["final_phase"] == "rolled_back", run
    assert run["rollback_cause"] == "verdict", run
    assert "error_rate" in run["failing_slos"], run
    # The fault reached users through Envoy, and nothing reached the candidate after the ACK.
    assert run["candidate_5xx_before_rollback"] > 0, run
    assert run["candidate_answers_after_rollback"] == 0, run
