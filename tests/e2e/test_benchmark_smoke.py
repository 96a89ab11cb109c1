"""The fan-out benchmark still runs (its figures are read by people, not asserted here)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]


@pytest.mark.parametrize("client", ["h2", "grpcio"])
def test_xds_fanout_quick_run_reports_figures(client: str) -> None:
    """Both simulated-Envoy clients complete the run: every node ACKed every change (the
    servers count the ACKs of each version), and the figures come from the client asked for."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "xds_fanout.py"), "--quick", "--client", client],
        capture_output=True,
        text=True,
        timeout=170,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    assert figures["client"] == client
    controller = figures["results"]["100"]["controller"]
    floor = figures["results"]["100"]["floor"]
    assert controller["samples"] == floor["samples"] > 0
    assert controller["p99_ms"] > 0
    assert floor["p99_ms"] > 0
    # Serialization per change does not depend on the number of streams (one route table).
    assert controller["serializations_per_change"] == 2


def test_parity_throughput_quick_run_reports_both_parts() -> None:
    """``parity_throughput.py --quick``: the comparator's throughput; users through a real
    Envoy in the paired design (the mirrored route and its never-mirrored twin, request by
    request) and in the rounds design (one off and one on round), in which the mirror really
    reached the comparator (figures read by people; what is asserted is that each part
    measured what it says)."""
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "parity_throughput.py"),
            "--quick",
            "--mirror",
            "100",  # every GET mirrored: the counts below are exact
        ],
        capture_output=True,
        text=True,
        timeout=170,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    assert figures["benchmark"] == "parity_throughput"
    paired = figures["envoy_paired"]
    assert paired["design"] == "paired"
    twin, route, both = paired["off"], paired["on"], paired["both"]
    assert twin["requests"] > 0
    assert route["requests"] > 0
    assert twin["requests"] + route["requests"] == paired["rounds"] * paired["requests_per_round"]
    assert both["errors"] == both["non_200"] == 0
    # Every request sent to the route under rollout was mirrored, none sent to its twin.
    assert both["mirrored"] == route["sent"] > 0
    assert both["comparator"]["mismatched"] == 0
    assert paired["diff_ms"]["p99_ms"]["ci95_low"] <= paired["diff_ms"]["p99_ms"]["ci95_high"]
    assert figures["compared_per_s"] > 0
    envoy = figures["envoy"]
    assert envoy["order"] == ["off", "on"]
    off, on = envoy["off"], envoy["on"]
    assert envoy["design"] == "rounds"
    assert off["requests"] == on["requests"] == envoy["requests_per_round"]
    assert off["errors"] == on["errors"] == 0
    assert off["non_200"] == on["non_200"] == 0
    # Envoy mirrored every GET (warm-up included) while on, none while off.
    assert envoy["mirror_percent"] == 100
    assert off["mirrored"] == 0
    assert on["mirrored"] == envoy["requests_per_round"] + envoy["warmup_per_round"]
    comparator = on["comparator"]
    assert 0 < comparator["compared"] <= on["mirrored"], comparator
    assert comparator["mismatched"] == 0, comparator  # the volatile fields are ignored
    assert off["envoy_rq_time"]["requests"] > 0
    for label in ("p50_ms", "p99_ms", "p999_ms"):
        d = envoy["diff_ms"][label]
        assert d["ci95_low"] <= d["ci95_high"], (label, d)
    assert isinstance(envoy["target_met"], bool)
    assert envoy["verdict"]
