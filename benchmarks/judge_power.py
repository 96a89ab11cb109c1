"""How often the judge rolls back a healthy candidate, and how fast it catches a bad one.

    python3 benchmarks/judge_power.py                 # 1,000 healthy + 300 bad rollouts per share
    python3 benchmarks/judge_power.py --quick         # a smoke run (seconds)

Synthetic request streams (numpy), one stage per rollout at a candidate share of 1%, 5% and
25% of ``--rps`` requests per second, judged every ``--interval`` seconds on the stage so far,
exactly as the reconciler does: a fail verdict rolls back; a pass verdict given after the bake
time promotes; no pass by the stage deadline (``--deadline``, default bake + 20 intervals, the
policy's default) rolls back (onFailure).

- baseline: latency log-normal (median ``--median-ms``, sigma 0.6), ``--error-rate`` 5xx;
- healthy candidate: the same distributions (independent draws);
- bad candidates, each judged apart: ``errors`` (twice the error rate), ``latency`` (every
  latency x1.2: p99 +20%), and ``both``.

A bad candidate counts as detected when it is rolled back, by a fail verdict or at the
stage's deadline (never shown good enough to pass); both shares are printed.

Per request the latency is counted in Envoy's buckets as configured by Sluice's bootstrap
(``controller.xds.bootstrap.latency_buckets_ms``), the counts a metrics provider returns.

Side by side on the same streams, a *naive checker*, the way threshold-based controllers
judge: every interval (once ``minRequests`` is reached), candidate point values against the
baseline's: p99 by linear interpolation in the buckets (PromQL ``histogram_quantile``) and the
error rate; fail when either is more than 5% worse; pass at the bake's end otherwise.

Targets (issue 4): false-rollback rate <= 1% over healthy rollouts; detection rate >= 99% for
each kind of bad candidate. Prints a table per share and, last, one JSON line with every figure.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from controller.analysis.judge import judge
from controller.analysis.sli import Histogram, Sample, SideCounts
from controller.policy.rollout_policy import DEADLINE_INTERVALS, RolloutPolicy
from controller.xds.bootstrap import latency_buckets_ms

SHARES = (0.01, 0.05, 0.25)
SIGMA = 0.6
KINDS = {"healthy": (1.0, 1.0), "errors": (2.0, 1.0), "latency": (1.0, 1.2), "both": (2.0, 1.2)}
"""Candidate kinds: (error-rate multiple, latency multiple) of the baseline's."""


@dataclass(frozen=True)
class Config:
    rps: float
    interval_s: float
    bake_s: float
    min_requests: int
    median_ms: float
    error_rate: float
    latency_pass_drift: float
    errors_pass_drift: float
    deadline_s: float


def _policy(share: float, cfg: Config) -> RolloutPolicy:
    return RolloutPolicy.model_validate(
        {
            "apiVersion": "sluice.dev/v1alpha1",
            "kind": "RolloutPolicy",
            "metadata": {"name": "bench"},
            "spec": {
                "route": "r",
                "baseline": {"cluster": "b"},
                "candidate": {"cluster": "c"},
                "stages": [
                    {"weight": f"{share * 100:g}%", "bake": f"{cfg.bake_s:g}s"},
                    {"weight": "100%", "bake": f"{cfg.bake_s:g}s"},
                ],
                "analysis": {
                    "interval": f"{cfg.interval_s:g}s",
                    "minRequests": cfg.min_requests,
                    "slos": [
                        {
                            "metric": "latency_p99",
                            "maxDrift": "5%",
                            "passDrift": f"{cfg.latency_pass_drift:g}%",
                        },
                        {
                            "metric": "error_rate",
                            "maxDrift": "5%",
                            "passDrift": f"{cfg.errors_pass_drift:g}%",
                        },
                    ],
                },
            },
        }
    )


def _bucket_probs(bounds: np.ndarray, median_ms: float, scale: float) -> np.ndarray:
    """P(latency in each bucket) for a log-normal (median x scale), the last bucket +Inf."""
    from scipy.stats import lognorm

    cdf = lognorm.cdf(bounds[:-1], SIGMA, scale=median_ms * scale)
    cdf = np.append(cdf, 1.0)
    return np.diff(np.concatenate(([0.0], cdf)))


def _naive_quantile(bounds: np.ndarray, cumulative: np.ndarray, q: float) -> float | None:
    """PromQL histogram_quantile: linear interpolation inside the bucket holding q."""
    total = cumulative[-1]
    if total <= 0:
        return None
    rank = q * total
    i = int(np.searchsorted(cumulative, rank))
    if i >= len(bounds) - 1:
        return float(bounds[-2])
    lower_bound = 0.0 if i == 0 else float(bounds[i - 1])
    lower_count = 0.0 if i == 0 else float(cumulative[i - 1])
    in_bucket = float(cumulative[i]) - lower_count
    if in_bucket <= 0:
        return float(bounds[i])
    return lower_bound + (float(bounds[i]) - lower_bound) * (rank - lower_count) / in_bucket


def simulate(args: tuple[float, str, int, int, Config]) -> list[dict[str, float | str]]:
    """Run ``count`` rollouts at ``share`` of candidates of ``kind``. One dict per rollout."""
    share, kind, count, seed, cfg = args
    rng = np.random.default_rng(seed)
    policy = _policy(share, cfg)
    bounds = np.array([*latency_buckets_ms(), math.inf])
    error_factor, latency_factor = KINDS[kind]
    base_p = _bucket_probs(bounds, cfg.median_ms, 1.0)
    cand_p = _bucket_probs(bounds, cfg.median_ms, latency_factor)
    cand_err = cfg.error_rate * error_factor
    deadline = cfg.deadline_s
    steps = int(deadline // cfg.interval_s)
    out: list[dict[str, float | str]] = []
    bound_tuple = tuple(float(b) for b in bounds)
    for _ in range(count):
        hb = np.zeros(len(bounds))
        hc = np.zeros(len(bounds))
        nb = nc = eb = ec = 0.0
        sluice: tuple[str, float] | None = None
        naive: tuple[str, float] | None = None
        for step in range(1, steps + 1):
            t = step * cfg.interval_s
            n = rng.poisson(cfg.rps * cfg.interval_s)
            n_c = rng.binomial(n, share)
            n_b = n - n_c
            nb += n_b
            nc += n_c
            eb += rng.binomial(n_b, cfg.error_rate)
            ec += rng.binomial(n_c, cand_err)
            hb += rng.multinomial(n_b, base_p)
            hc += rng.multinomial(n_c, cand_p)
            cb, cc = np.cumsum(hb), np.cumsum(hc)
            if sluice is None:
                sample = Sample(
                    0.0,
                    t,
                    SideCounts(nb, eb, Histogram(bound_tuple, tuple(cb.tolist()))),
                    SideCounts(nc, ec, Histogram(bound_tuple, tuple(cc.tolist()))),
                )
                verdict = judge(policy, 0, sample).outcome
                if verdict == "fail":
                    sluice = ("rolled_back", t)
                elif verdict == "pass" and t >= cfg.bake_s:
                    sluice = ("promoted", t)
            if naive is None and nc >= cfg.min_requests:
                p99_b = _naive_quantile(bounds, cb, 0.99)
                p99_c = _naive_quantile(bounds, cc, 0.99)
                err_b, err_c = eb / max(nb, 1), ec / max(nc, 1)
                worse = (p99_b and p99_c and p99_c > 1.05 * p99_b) or err_c > 1.05 * err_b
                if worse:
                    naive = ("rolled_back", t)
                elif t >= cfg.bake_s:
                    naive = ("promoted", t)
            if sluice is not None and naive is not None:
                break
        sluice = sluice or ("rolled_back_deadline", deadline)
        naive = naive or ("rolled_back_deadline", deadline)
        out.append(
            {"sluice": sluice[0], "sluice_t": sluice[1], "naive": naive[0], "naive_t": naive[1]}
        )
    return out


def summarize(rows: list[dict[str, float | str]], who: str) -> dict[str, float | None]:
    """Shares of outcomes (ratios) and median decision times (s) of one checker."""
    n = len(rows)
    rolled = [r for r in rows if str(r[who]).startswith("rolled_back")]
    by_verdict = [r for r in rows if r[who] == "rolled_back"]
    promoted = [r for r in rows if r[who] == "promoted"]
    fail_times = sorted(float(r[f"{who}_t"]) for r in by_verdict)
    pass_times = sorted(float(r[f"{who}_t"]) for r in promoted)
    return {
        "rollouts": n,
        "rolled_back": len(rolled) / n if n else None,
        "rolled_back_by_verdict": len(by_verdict) / n if n else None,
        "rolled_back_at_deadline": (len(rolled) - len(by_verdict)) / n if n else None,
        "promoted": len(promoted) / n if n else None,
        "median_time_to_fail_s": float(np.median(fail_times)) if fail_times else None,
        "median_time_to_pass_s": float(np.median(pass_times)) if pass_times else None,
    }


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}s"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--healthy", type=int, default=1000, help="healthy rollouts per share")
    parser.add_argument(
        "--bad", type=int, default=300, help="bad rollouts per share and kind of bad candidate"
    )
    parser.add_argument("--rps", type=float, default=2000.0, help="route requests/s")
    parser.add_argument("--interval", type=float, default=30.0, help="analysis interval, s")
    parser.add_argument("--bake", type=float, default=300.0, help="bake time, s")
    parser.add_argument("--min-requests", type=int, default=500)
    parser.add_argument("--median-ms", type=float, default=50.0)
    parser.add_argument("--error-rate", type=float, default=0.01)
    parser.add_argument(
        "--deadline", type=float, default=None, help="stage deadline, s (bake + 20 intervals)"
    )
    parser.add_argument("--latency-pass-drift", type=float, default=20.0, help="percent")
    parser.add_argument("--errors-pass-drift", type=float, default=100.0, help="percent")
    parser.add_argument("--procs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--seed", type=int, default=20261121)
    parser.add_argument("--quick", action="store_true", help="50 healthy + 20 bad per share")
    args = parser.parse_args()
    if args.quick:
        args.healthy, args.bad = 50, 20
    cfg = Config(
        args.rps,
        args.interval,
        args.bake,
        args.min_requests,
        args.median_ms,
        args.error_rate,
        args.latency_pass_drift,
        args.errors_pass_drift,
        args.deadline
        if args.deadline is not None
        else args.bake + DEADLINE_INTERVALS * args.interval,
    )
    started = time.monotonic()
    jobs = []
    for i, share in enumerate(SHARES):
        for j, kind in enumerate(KINDS):
            count = args.healthy if kind == "healthy" else args.bad
            chunks = max(1, args.procs)
            per = [count // chunks + (1 if k < count % chunks else 0) for k in range(chunks)]
            for k, c in enumerate(per):
                if c:
                    jobs.append((share, kind, c, args.seed + 1000 * i + 100 * j + k, cfg))
    with multiprocessing.Pool(args.procs) as pool:
        results = pool.map(simulate, jobs)
    rows: dict[tuple[float, str], list[dict[str, float | str]]] = {}
    for job, out in zip(jobs, results, strict=True):
        rows.setdefault((job[0], job[1]), []).extend(out)
    report: dict[str, object] = {}
    print(
        f"judge_power: {args.rps:g} rps, interval {args.interval:g}s, bake {args.bake:g}s, "
        f"deadline {cfg.deadline_s:g}s, minRequests {args.min_requests}, baseline p99 from a "
        f"log-normal (median {args.median_ms:g} ms, sigma {SIGMA}), "
        f"error rate {args.error_rate:.2%}; passDrift latency {args.latency_pass_drift:g}%, "
        f"errors {args.errors_pass_drift:g}%"
    )
    print(
        f"{'share':>6} {'checker':>7} {'candidate':>9} {'promoted':>9} {'rolled back':>12} "
        f"{'by verdict':>11} {'at deadline':>12} {'median t fail':>14} {'median t pass':>14}"
    )
    worst_false, worst_detect = 0.0, 1.0
    for share in SHARES:
        entry: dict[str, object] = {}
        for who in ("sluice", "naive"):
            per_kind: dict[str, object] = {}
            for kind in KINDS:
                got = summarize(rows[(share, kind)], who)
                per_kind[kind] = got
                rolled = float(got["rolled_back"] or 0.0)
                if who == "sluice":
                    if kind == "healthy":
                        worst_false = max(worst_false, rolled)
                    else:
                        worst_detect = min(worst_detect, rolled)
                print(
                    f"{share:>6.0%} {who:>7} {kind:>9} {got['promoted'] or 0:>9.2%} "
                    f"{rolled:>12.2%} {got['rolled_back_by_verdict'] or 0:>11.2%} "
                    f"{got['rolled_back_at_deadline'] or 0:>12.2%} "
                    f"{_seconds(got['median_time_to_fail_s']):>14} "
                    f"{_seconds(got['median_time_to_pass_s']):>14}"
                )
            entry[who] = per_kind
        report[f"{share:g}"] = entry
    sluice_false, sluice_detect = worst_false, worst_detect
    elapsed = time.monotonic() - started
    print(
        f"targets: false rollback <= 1%: {sluice_false <= 0.01} (worst {sluice_false:.2%}); "
        f"detection >= 99% (each bad kind): {sluice_detect >= 0.99} (worst {sluice_detect:.2%}); "
        f"{elapsed:.0f}s"
    )
    print(
        json.dumps(
            {
                "benchmark": "judge_power",
                "config": {
                    **cfg.__dict__,
                    "healthy": args.healthy,
                    "bad": args.bad,
                    "seed": args.seed,
                },
                "results": report,
                "targets": {
                    "false_rollback_le_1pct": sluice_false <= 0.01,
                    "detection_ge_99pct": sluice_detect >= 0.99,
                    "worst_false_rollback": sluice_false,
                    "worst_detection": sluice_detect,
                },
                "elapsed_s": round(elapsed, 1),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
