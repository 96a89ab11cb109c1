"""Rollback latency: a fault starts in the candidate → Envoy has ACKed 0% candidate.

    python3 benchmarks/rollback_latency.py                          # 3 runs per provider
    python3 benchmarks/rollback_latency.py --runs 1 --provider envoy_admin   # a smoke run

Method
------
Each run builds a fresh stack, the one the end-to-end suite uses (``tests/e2e/harness.py``):

* two real upstreams (``tests/e2e/upstream_server.py``), baseline and candidate, with the same
  log-normal latency (median ``--median-ms``, sigma ``--sigma``) and ``--error-rate`` 503s;
* a real Envoy with Sluice's bootstrap (fine ``upstream_rq_time`` buckets, 1 s stats flush);
* ``sluice serve`` judging every stage, either from a real Prometheus scraping the Envoy's
  ``/stats/prometheus`` every ``--scrape-interval`` (``--prometheus-url``, provider
  ``prometheus``) or from the Envoy's admin endpoint scraped as often (``--envoy-admin``,
  provider ``envoy_admin``);
* continuous load: ``--concurrency`` keep-alive clients (the e2e ``LoadGenerator``) sending
  GETs back to back, each response recorded with its status, ``x-upstream`` header and times;
* a rollout (``sluice rollout start``) at ``--weight`` % then 100%, analysis every
  ``--interval``, ``minRequests`` ``--min-requests``, SLOs p99 latency and error rate (5% drift),
  and a first bake long enough (``--bake``) that the fault happens mid-stage.

``--fault-after`` seconds after Envoy applied the first stage's weights (the stage has been
judged every interval by then), the benchmark switches the candidate upstream to
``--fault-error-rate`` 503s (``POST /__sluice/fault`` straight to the upstream, not through
Envoy); **T0** is the instant the upstream applied it (its ``time.time()``, same machine). From
then on the benchmark polls Envoy's ``/config_dump`` every 50 ms; **T1** is the arrival of the
first dump showing weight 0 for the candidate (Envoy shows a route configuration once it has
accepted it, and ACKs it then). T1 - T0 is the rollback latency; it is an upper bound by up to
one poll.

Also per run: the time from T0 to the failing verdict (the history event that starts the
rollback; the rest is the push and Envoy's ACK), the user requests answered by the candidate
with a 5xx from T0 until T1 (by answer time, among requests sent before T1) and the candidate
answers to requests sent after T1 (must be 0: the route no longer sends anything there), the
rollout's final phase and the SLO named as failing, with its values.

Reading the figures: the judge looks at the stage so far (window ``[stage start, now]``), so
the healthy traffic before the fault dilutes it; a longer ``--fault-after`` or a smaller
``--fault-error-rate`` detects later. Each run shares the machine with Envoy, the upstreams,
the load, Prometheus and the controller: the load average is printed, and figures taken under
other load are not comparable. Target (issue 4): <= 10 s with a 1 s scrape and a 2 s analysis
interval. For scale: Flagger's defaults (a 60 s analysis interval) roll back no sooner than one
interval after the first failed check.

The last line printed is one JSON object with every figure. Every process started is stopped
at the end, also on errors, Ctrl-C and SIGTERM.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# The repository (the controller) and tests/ (the e2e harness, the Prometheus fixture).
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx
import prometheus_fixture
import yaml
from e2e.harness import (
    BASELINE,
    CANDIDATE,
    PROCESSES,
    ROUTE,
    Controller,
    Envoy,
    LoadGenerator,
    Result,
    Upstream,
    diagnostics,
    gateway_document,
    wait_until,
)

PROVIDERS = ("prometheus", "envoy_admin")
TARGET_S = 10.0
FLAGGER_INTERVAL_S = 60.0
POLL_S = 0.05
SLO_FIGURES = ("baseline", "candidate", "drift", "confidence", "candidate_requests")
ROLLOUT = "comments"
END_PHASES = ("succeeded", "rolled_back", "aborted", "failed")
TOTAL_WEIGHT = 10_000  # Envoy's weighted_clusters total as Sluice configures it


class BenchError(Exception):
    """The stack could not be set up or did not behave (not a measurement)."""


@dataclass(frozen=True)
class Config:
    median_ms: float
    sigma: float
    error_rate: float
    fault_error_rate: float
    weight: int
    interval_s: float
    scrape_s: float
    min_requests: int
    bake_s: float
    fault_after_s: float
    concurrency: int
    timeout_s: float

    def noise(self) -> tuple[str, ...]:
        return (
            "--median-ms",
            f"{self.median_ms:g}",
            "--sigma",
            f"{self.sigma:g}",
            "--error-rate",
            f"{self.error_rate:g}",
        )

    def policy(self) -> str:
        deadline = f"{2 * self.bake_s:g}s"
        return yaml.safe_dump(
            {
                "apiVersion": "sluice.dev/v1alpha1",
                "kind": "RolloutPolicy",
                "metadata": {"name": ROLLOUT},
                "spec": {
                    "route": ROUTE,
                    "baseline": {"cluster": BASELINE},
                    "candidate": {"cluster": CANDIDATE},
                    "stages": [
                        {
                            "weight": f"{self.weight}%",
                            "bake": f"{self.bake_s:g}s",
                            "deadline": deadline,
                        },
                        {"weight": "100%", "bake": "10s", "deadline": deadline},
                    ],
                    "analysis": {
                        "interval": f"{self.interval_s:g}s",
                        "minRequests": self.min_requests,
                        "slos": [
                            {"metric": "latency_p99", "maxDrift": "5%"},
                            {"metric": "error_rate", "maxDrift": "5%"},
                        ],
                    },
                    "ackTimeout": "5s",
                },
            },
            sort_keys=False,
        )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _r(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


# --- one run ---------------------------------------------------------------------------------


@dataclass
class Stack:
    workdir: Path
    envoy: Envoy
    controller: Controller
    candidate: Upstream
    state: Path

    def cli(self, *args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "controller", "rollout", *args, "--state", str(self.state)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        if done.returncode != 0:
            raise BenchError(f"sluice rollout {' '.join(args)}: {done.stdout}\n{done.stderr}")
        return done.stdout

    def status(self) -> dict[str, Any]:
        return json.loads(self.cli("status", ROLLOUT, "-o", "json"))  # type: ignore[no-any-return]

    def history(self) -> list[dict[str, Any]]:
        return json.loads(self.cli("history", ROLLOUT, "-o", "json"))["history"]  # type: ignore[no-any-return]

    def candidate_weight(self) -> int | None:
        weights = self.envoy.applied_weights()
        return None if weights is None else weights.get(CANDIDATE, 0)


def build_stack(
    provider: str, cfg: Config, workdir: Path, stack: contextlib.ExitStack[Any]
) -> Stack:
    """Upstreams, Envoy, maybe Prometheus, and the controller; each stopped by ``stack``."""
    baseline = Upstream.start(BASELINE, workdir, *cfg.noise())
    stack.callback(baseline.stop)
    candidate = Upstream.start(CANDIDATE, workdir, *cfg.noise())
    stack.callback(candidate.stop)
    gateway = workdir / "gateway.yaml"
    gateway.write_text(yaml.safe_dump(gateway_document(baseline.port, candidate.port)))
    xds_port = free_port()
    envoy = Envoy.start(workdir, node_id="rollback-latency", xds_port=xds_port, protocol="sotw")
    stack.callback(envoy.stop)
    if provider == "prometheus":
        start = stack.enter_context(prometheus_fixture.factory(workdir))
        target = prometheus_fixture.ScrapeTarget("envoy", envoy.admin_url.removeprefix("http://"))
        prometheus = start([target], interval_s=cfg.scrape_s)
        extra: tuple[str, ...] = ("--prometheus-url", prometheus.url)
    else:
        extra = ("--envoy-admin", envoy.admin_url, "--scrape-interval", f"{cfg.scrape_s:g}s")
    state = workdir / "state.db"
    controller = Controller.start(workdir, gateway, state, xds_port=xds_port, extra=extra)
    stack.callback(controller.stop)
    controller.wait_node_synced(envoy.node_id, timeout=30, diag=envoy.logs)
    envoy.wait_live()
    envoy.listener_port()
    return Stack(workdir, envoy, controller, candidate, state)


def run_once(provider: str, cfg: Config, workdir: Path) -> dict[str, Any]:
    """One rollout with a fault mid-stage; the figures of the module docstring."""
    with contextlib.ExitStack() as stack:
        s = build_stack(provider, cfg, workdir, stack)
        load = LoadGenerator(
            f"http://127.0.0.1:{s.envoy.listener_port()}", concurrency=cfg.concurrency
        )
        stack.callback(load.stop)
        load.start("run", duration=cfg.fault_after_s + cfg.timeout_s + 300)
        policy = workdir / "policy.yaml"
        policy.write_text(cfg.policy())
        s.cli("start", ROLLOUT, "--policy", str(policy))
        share = cfg.weight * TOTAL_WEIGHT // 100
        s.envoy.wait_route_weights({BASELINE: TOTAL_WEIGHT - share, CANDIDATE: share}, timeout=30)
        stage_applied = time.monotonic()
        time.sleep(cfg.fault_after_s)
        before = s.status()
        if before["phase"] != "progressing" or before["stage"] != 1:
            raise BenchError(
                f"before the fault the rollout is {before['phase']} at stage {before['stage']}"
                f" (a healthy candidate was judged: {before.get('reason')})"
            )

        # The fault: T0 is when the upstream applied it (its wall clock, this machine's).
        offset = time.time() - time.monotonic()
        answer = httpx.post(
            f"http://127.0.0.1:{s.candidate.port}/__sluice/fault",
            json={"error_rate": cfg.fault_error_rate},
            timeout=5.0,
        )
        answer.raise_for_status()
        t0_wall = float(answer.json()["applied_at"])
        t0 = t0_wall - offset

        t1: float | None = None
        polls = 0
        deadline = time.monotonic() + cfg.timeout_s
        while time.monotonic() < deadline:
            sent = time.monotonic()
            weight = s.candidate_weight()
            polls += 1
            if weight == 0:
                t1 = time.monotonic()
                break
            time.sleep(max(0.0, POLL_S - (time.monotonic() - sent)))
        time.sleep(2.0)  # requests sent after T1 must all go to the baseline
        results = load.stop()

        if t1 is None:
            final = s.status()
        else:  # Envoy has 0%: the rollout records the ACK and ends
            final = wait_until(
                lambda: (st := s.status())["phase"] in END_PHASES and st,
                timeout=30,
                what="the rollout to end after Envoy applied 0%",
                interval=0.5,
            )
        history = s.history()
        times = Times(stage_applied, t0, t1, t0_wall, offset)
        return figures(cfg, results, times, polls, before, final, history)


@dataclass(frozen=True)
class Times:
    """A run's instants, ``time.monotonic()`` unless ``_wall`` (``offset``: wall - monotonic)."""

    stage_applied: float
    t0: float
    t1: float | None
    t0_wall: float
    offset: float


def figures(
    cfg: Config,
    results: list[Result],
    times: Times,
    polls: int,
    before: dict[str, Any],
    final: dict[str, Any],
    history: list[dict[str, Any]],
) -> dict[str, Any]:
    """The run's figures from the requests recorded and the rollout's history."""
    t0, t1, t0_wall, offset = times.t0, times.t1, times.t0_wall, times.offset
    end = t1 if t1 is not None else max((r.started for r in results), default=t0)
    answered = [r for r in results if r.status is not None]
    cand = [r for r in answered if r.upstream == CANDIDATE]

    def error(r: Result) -> bool:
        return r.status is not None and r.status >= 500

    window = [r for r in cand if r.started + r.elapsed >= t0 and r.started < end]
    after = [r for r in cand if t1 is not None and r.started >= t1]
    span = [r for r in answered if times.stage_applied <= r.started < t0]
    rps = len(span) / (t0 - times.stage_applied) if span else 0.0
    cand_share = sum(r.upstream == CANDIDATE for r in span) / len(span) if span else 0.0

    failing = next(
        (
            e
            for e in history
            if "→ rolling_back" in e.get("transition", "") and "failed" in e.get("reason", "")
        ),
        None,
    )
    failed: dict[str, dict[str, Any]] = {}  # every SLO the failing verdict names, in order
    if failing is not None:
        slos = (failing.get("details") or {}).get("slos") or {}
        for name, verdict in slos.items():
            if verdict.get("outcome") == "fail":
                failed[name] = {k: verdict.get(k) for k in SLO_FIGURES}
    verdict_s = failing["at"] - t0_wall if failing is not None else None
    return {
        "rollback_s": _r(t1 - t0) if t1 is not None else None,
        "verdict_s": _r(verdict_s),
        "push_ack_s": _r(t1 - (failing["at"] - offset))
        if t1 is not None and failing is not None
        else None,
        "rolled_back_in_envoy": t1 is not None,
        "final_phase": final["phase"],
        "rollback_cause": final.get("rollback_cause"),
        "failing_slos": list(failed),
        "failing_slo_figures": failed,
        "failing_reason": failing["reason"] if failing is not None else None,
        "candidate_5xx_before_rollback": sum(map(error, window)),
        "candidate_answers_before_rollback": len(window),
        "candidate_5xx_after_rollback": sum(map(error, after)),
        "candidate_answers_after_rollback": len(after),
        "expected_5xx_before_rollback": _r(rps * cand_share * cfg.fault_error_rate * (t1 - t0), 1)
        if t1 is not None
        else None,
        "passes_before_fault": before.get("passes"),
        "last_verdict_before_fault": (before.get("last_verdict") or {}).get("outcome"),
        "requests": len(results),
        "transport_errors": sum(r.error is not None for r in results),
        "5xx_without_upstream": sum(error(r) and r.upstream is None for r in answered),
        "rps_before_fault": _r(rps, 1),
        "candidate_share_before_fault": _r(cand_share, 4),
        "config_dump_polls": polls,
    }


# --- output ----------------------------------------------------------------------------------


def run_line(provider: str, index: int, f: dict[str, Any]) -> str:
    if f["rollback_s"] is None:
        head = f"{provider:<12} run {index}: NOT rolled back in Envoy within the timeout"
    else:
        head = (
            f"{provider:<12} run {index}: fault -> 0% ACKed {f['rollback_s']:6.2f} s"
            f" (failing verdict at +{f['verdict_s']:.2f} s, push+ACK {f['push_ack_s']:.2f} s)"
        )

    def num(value: float | None) -> str:
        return "-" if value is None else f"{value:.4g}"

    failing = "; ".join(
        f"{name}: candidate {num(v['candidate'])} vs baseline {num(v['baseline'])}, drift"
        f" {num(v['drift'])}, confidence {num(v['confidence'])}, candidate requests"
        f" {num(v['candidate_requests'])}"
        for name, v in f["failing_slo_figures"].items()
    )
    return (
        f"{head}\n{'':18}phase {f['final_phase']} ({f['rollback_cause']}), failing SLO"
        f" {failing or '(none recorded)'}"
        f"\n{'':18}candidate 5xx: {f['candidate_5xx_before_rollback']}"
        f" from the fault to the rollback (of {f['candidate_answers_before_rollback']}"
        f" candidate answers; ~{f['expected_5xx_before_rollback']} expected), after it"
        f" {f['candidate_5xx_after_rollback']} (of {f['candidate_answers_after_rollback']}"
        f" candidate answers) | {f['rps_before_fault']} rps, candidate share"
        f" {100 * f['candidate_share_before_fault']:.1f}%, {f['passes_before_fault']} passes"
        f" before the fault (last verdict {f['last_verdict_before_fault']}),"
        f" {f['transport_errors']} transport errors,"
        f" {f['5xx_without_upstream']} 5xx from Envoy itself"
    )


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    times = [r["rollback_s"] for r in runs if r["rollback_s"] is not None]
    errors = [r["candidate_5xx_before_rollback"] for r in runs]
    return {
        "runs": runs,
        "rolled_back": sum(r["rolled_back_in_envoy"] for r in runs),
        "rollback_s_median": _r(statistics.median(times)) if times else None,
        "rollback_s_max": _r(max(times)) if times else None,
        "candidate_5xx_before_rollback_median": statistics.median(errors) if errors else None,
        "candidate_5xx_before_rollback_max": max(errors) if errors else None,
        "candidate_answers_after_rollback_max": max(
            (r["candidate_answers_after_rollback"] for r in runs), default=None
        ),
        "meets_target": bool(times) and len(times) == len(runs) and max(times) <= TARGET_S,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--runs", type=int, default=3, help="runs per provider")
    parser.add_argument("--provider", choices=(*PROVIDERS, "both"), default="both")
    parser.add_argument("--fault-error-rate", type=float, default=0.2, help="candidate 5xx share")
    parser.add_argument("--error-rate", type=float, default=0.005, help="5xx share of both")
    parser.add_argument("--median-ms", type=float, default=10.0)
    parser.add_argument("--sigma", type=float, default=0.5)
    parser.add_argument("--weight", type=int, default=25, help="first stage, candidate %%")
    parser.add_argument("--interval", type=float, default=2.0, help="analysis interval, s")
    parser.add_argument("--scrape-interval", type=float, default=1.0, help="s")
    parser.add_argument("--min-requests", type=int, default=100)
    parser.add_argument("--bake", type=float, default=300.0, help="first stage's bake, s")
    parser.add_argument(
        "--fault-after", type=float, default=10.0, help="s after the first stage's ACK"
    )
    parser.add_argument("--concurrency", type=int, default=8, help="load clients")
    parser.add_argument("--timeout", type=float, default=60.0, help="s to wait for 0%% in Envoy")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (logs)")
    args = parser.parse_args(argv)
    if args.runs < 1 or not 1 <= args.weight <= 99 or not 0 < args.fault_error_rate <= 1:
        parser.error("--runs >= 1, --weight 1..99, --fault-error-rate in (0, 1]")
    if args.fault_after >= args.bake:
        parser.error("--fault-after must fall inside the first stage's bake")
    cfg = Config(
        median_ms=args.median_ms,
        sigma=args.sigma,
        error_rate=args.error_rate,
        fault_error_rate=args.fault_error_rate,
        weight=args.weight,
        interval_s=args.interval,
        scrape_s=args.scrape_interval,
        min_requests=args.min_requests,
        bake_s=args.bake,
        fault_after_s=args.fault_after,
        concurrency=args.concurrency,
        timeout_s=args.timeout,
    )
    providers = list(PROVIDERS) if args.provider == "both" else [args.provider]
    skipped: dict[str, str] = {}
    if "prometheus" in providers and prometheus_fixture.prometheus_binary() is None:
        reason = "the Prometheus binary is missing (apt-get install -y prometheus)"
        if args.provider == "prometheus":
            print(f"error: {reason}", file=sys.stderr)
            return 1
        providers.remove("prometheus")
        skipped["prometheus"] = reason
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    # Ctrl-C stops everything too, also when started in the background of a script (where the
    # shell leaves SIGINT ignored).
    signal.signal(signal.SIGINT, signal.default_int_handler)

    print(
        f"rollback_latency: {os.cpu_count()} CPUs; upstreams log-normal median"
        f" {cfg.median_ms:g} ms sigma {cfg.sigma:g}, {100 * cfg.error_rate:g}% 503s; stage"
        f" {cfg.weight}% (bake {cfg.bake_s:g} s) then 100%; analysis every {cfg.interval_s:g} s,"
        f" scrape every {cfg.scrape_s:g} s, minRequests {cfg.min_requests}; fault:"
        f" {100 * cfg.fault_error_rate:g}% 503s from the candidate {cfg.fault_after_s:g} s into"
        f" the stage; {cfg.concurrency} load clients; {args.runs} run(s) per provider",
        flush=True,
    )
    for name, reason in skipped.items():
        print(f"{name}: skipped: {reason}", flush=True)
    load_before = os.getloadavg()
    print(
        "load average before: "
        + " ".join(f"{x:.2f}" for x in load_before)
        + " (other work on this machine skews every figure)",
        flush=True,
    )
    root = Path(tempfile.mkdtemp(prefix="rollback-latency-"))
    results: dict[str, Any] = {}
    started = time.monotonic()
    first_process = len(PROCESSES)
    try:
        for provider in providers:
            runs: list[dict[str, Any]] = []
            for index in range(1, args.runs + 1):
                run = run_once(provider, cfg, root / f"{provider}-{index}")
                print(run_line(provider, index, run), flush=True)
                runs.append(run)
            results[provider] = summarize(runs)
            r = results[provider]
            print(
                f"{provider:<12} rollback latency median {r['rollback_s_median']} s, max"
                f" {r['rollback_s_max']} s ({r['rolled_back']}/{len(runs)} rolled back; target"
                f" <= {TARGET_S:g} s: {r['meets_target']}); candidate 5xx before the rollback"
                f" median {r['candidate_5xx_before_rollback_median']}, max"
                f" {r['candidate_5xx_before_rollback_max']}",
                flush=True,
            )
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (BenchError, AssertionError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        print(diagnostics(PROCESSES[first_process:], 30), file=sys.stderr)
        args.keep = True
        return 1
    finally:
        if args.keep:
            print(f"work folder kept: {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)

    medians = [r["rollback_s_median"] for r in results.values() if r["rollback_s_median"]]
    print(
        f"reference: Flagger's defaults (analysis interval {FLAGGER_INTERVAL_S:g} s) roll back no"
        f" sooner than one interval after the first failed check: >= {FLAGGER_INTERVAL_S:g} s"
        + (
            f" ({FLAGGER_INTERVAL_S / max(medians):.0f}x the slowest median here)"
            if medians
            else ""
        )
    )
    load_after = os.getloadavg()
    print(
        f"total {time.monotonic() - started:.1f} s; load average after: "
        + " ".join(f"{x:.2f}" for x in load_after)
    )
    report = {
        "benchmark": "rollback_latency",
        "cpus": os.cpu_count(),
        "config": {
            "median_ms": cfg.median_ms,
            "sigma": cfg.sigma,
            "error_rate": cfg.error_rate,
            "fault_error_rate": cfg.fault_error_rate,
            "weight_pct": cfg.weight,
            "analysis_interval_s": cfg.interval_s,
            "scrape_interval_s": cfg.scrape_s,
            "min_requests": cfg.min_requests,
            "bake_s": cfg.bake_s,
            "fault_after_s": cfg.fault_after_s,
            "concurrency": cfg.concurrency,
            "poll_s": POLL_S,
            "runs": args.runs,
        },
        "providers": results,
        "skipped": skipped,
        "target_s": TARGET_S,
        "flagger_reference_s": FLAGGER_INTERVAL_S,
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in load_after],
    }
    print(json.dumps(report, separators=(",", ":")), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
