"""Run the rounds of ``parity_throughput.py``'s Envoy part and sum them up: figures per arm,
the ``on - off`` differences with their intervals, the verdict, and what else used the CPU.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from _latency_compare import (
    Difference,
    bootstrap_differences,
    histogram_quantiles,
    mann_whitney,
    paired_bootstrap_differences,
    quantiles,
    verdict,
)
from _mirror_latency import Round, all_cpu, bench_stack, busy_cpu_s, run_round

QS = (0.5, 0.99, 0.999)
LABELS = ("p50_ms", "p99_ms", "p999_ms")


@dataclass(frozen=True)
class EnvoyConfig:
    """How to run the Envoy part (``parity_throughput.py`` options)."""

    rate: float  # user requests per second, open loop
    requests: int  # measured requests per round
    warmup: int  # requests sent first in each round, not measured
    rounds: int  # off/on rounds in ABBA order
    iterations: int  # bootstrap resamples
    bound_ratio: float  # the p99 increase tolerated, as a ratio of the off arm's p99
    seed: int
    pinned: str | None = None  # a layout of _mirror_latency.PIN_LAYOUTS (bench_stack)
    mirror_percent: float = 100.0  # the policy's parity.mirror, in percent of the GETs
    aa: bool = False  # calibration: mirroring stays off in the "on" rounds too
    paired: bool = False  # the paired design: both arms in every round, request by request
    primary: bool = False  # a baseline replica kept for the comparator (parity.primary)


def order(rounds: int) -> list[str]:
    """Arms in ABBA order (off, on, on, off, off, on, ...): a linear drift over the run weighs
    equally on both arms every four rounds, and mirroring is switched every other round."""
    pattern = ("off", "on", "on", "off")
    return [pattern[i % 4] for i in range(rounds)]


def measure_envoy(cfg: EnvoyConfig) -> dict[str, Any]:
    """Build the stack, run the rounds, return the figures (the ``envoy`` object of the final
    JSON line)."""
    loadavg_before = os.getloadavg()
    rounds: list[Round] = []
    with bench_stack(cfg.pinned, cfg.mirror_percent, twin=cfg.paired, primary=cfg.primary) as bench:
        ours = set(bench.processes().values()) | {os.getpid()}
        cpu_before, busy_before, t0 = all_cpu(), busy_cpu_s(), time.monotonic()
        if cfg.paired:
            if not cfg.aa:
                bench.mirror_on()
            for k in range(cfg.rounds):
                rounds.append(
                    run_round(
                        bench, "paired", cfg.rate, cfg.requests, cfg.warmup, seed=cfg.seed + k
                    )
                )
        else:
            mirroring = False
            for arm in order(cfg.rounds):
                if (arm == "on" and not cfg.aa) != mirroring:
                    bench.mirror_on() if arm == "on" else bench.mirror_off()
                    mirroring = arm == "on" and not cfg.aa
                rounds.append(run_round(bench, arm, cfg.rate, cfg.requests, cfg.warmup))
        cpu_after, busy_after, wall = all_cpu(), busy_cpu_s(), time.monotonic() - t0
    others = sorted(
        (
            (after - cpu_before.get(pid, ("", 0.0))[1], comm)
            for pid, (comm, after) in cpu_after.items()
            if pid not in ours
        ),
        reverse=True,
    )
    cpus = len(os.sched_getaffinity(0))
    figures = summarize_paired(rounds, cfg) if cfg.paired else summarize(rounds, cfg)
    figures["machine"] = {
        "cpus": cpus,
        "busy_share": round((busy_after - busy_before) / (wall * cpus), 3),
        "others_top_cpu_s": [[comm, round(s, 2)] for s, comm in others[:5] if s > 0.05],
        "loadavg_before": [round(x, 2) for x in loadavg_before],
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
    }
    return figures


def _ms(values_us: list[int]) -> np.ndarray[Any, np.dtype[np.float64]]:
    return np.asarray(values_us, dtype=np.float64) / 1000.0


def _arm(rounds: list[Round]) -> dict[str, Any]:
    latency = np.concatenate([_ms(r.latency_us) for r in rounds])
    lag = np.concatenate([_ms(r.lag_us) for r in rounds])
    buckets: dict[tuple[float, float], int] = {}
    for r in rounds:
        for lower, width, count in r.envoy_buckets:
            buckets[(lower, width)] = buckets.get((lower, width), 0) + count
    envoy = histogram_quantiles([(lo, w, n) for (lo, w), n in buckets.items()], QS)
    cpu: dict[str, float] = {}
    for r in rounds:
        for name, seconds in r.cpu_s.items():
            cpu[name] = cpu.get(name, 0.0) + seconds
    seconds = sum(r.elapsed_s for r in rounds)
    out: dict[str, Any] = {
        "rounds": len(rounds),
        "requests": int(latency.size),
        "errors": sum(r.errors for r in rounds),
        "non_200": sum(n for r in rounds for s, n in r.statuses.items() if s != "200"),
        **{k: round(v, 3) for k, v in zip(LABELS, quantiles(latency, QS), strict=True)},
        "mean_ms": round(float(latency.mean()), 3),
        "send_lag_p99_ms": round(quantiles(lag, [0.99])[0], 3),
        "envoy_rq_time": {
            "requests": sum(buckets.values()),
            **{k: None if v is None else round(v, 2) for k, v in zip(LABELS, envoy, strict=True)},
        },
        "cpu_share": {k: round(v / seconds, 3) for k, v in sorted(cpu.items())},
        "mirrored": sum(r.mirrored for r in rounds),
    }
    return out


def _comparator(rounds: list[Round]) -> dict[str, int]:
    total: dict[str, int] = {}
    for r in rounds:
        for key, value in (r.comparator or {}).items():
            total[key] = total.get(key, 0) + value
    return total


def summarize(rounds: list[Round], cfg: EnvoyConfig) -> dict[str, Any]:
    """Per-arm figures, the differences at p50/p99/p99.9 with 95% intervals, the verdict."""
    off = [r for r in rounds if r.arm == "off"]
    on = [r for r in rounds if r.arm == "on"]
    arms = {"off": _arm(off), "on": _arm(on)}
    arms["on"]["comparator"] = _comparator(on)
    diffs = bootstrap_differences(
        [_ms(r.latency_us) for r in off],
        [_ms(r.latency_us) for r in on],
        QS,
        iterations=cfg.iterations,
        block=max(1, int(cfg.rate / 2)),  # half a second of requests
        seed=cfg.seed,
    )
    test = mann_whitney(
        np.concatenate([_ms(r.latency_us) for r in off]),
        np.concatenate([_ms(r.latency_us) for r in on]),
    )
    return {
        **_setup(cfg, "rounds"),
        "order": [r.arm for r in rounds],
        **arms,
        "diff_ms": {label: _difference(d) for label, d in zip(LABELS, diffs, strict=True)},
        "mann_whitney": None
        if test is None
        else {"p_value": float(f"{test[0]:.3g}"), "p_on_slower": round(test[1], 4)},
        **_reading(diffs[1], cfg, "more rounds, or the paired design"),
        "per_round": [
            {
                "arm": r.arm,
                **{
                    k: round(v, 3)
                    for k, v in zip(LABELS[:2], quantiles(_ms(r.latency_us), QS[:2]), strict=True)
                },
                "mirrored": r.mirrored,
                "compared": (r.comparator or {}).get("compared"),
            }
            for r in rounds
        ],
        "bootstrap": {"iterations": cfg.iterations, "block_requests": max(1, int(cfg.rate / 2))},
    }


def summarize_paired(rounds: list[Round], cfg: EnvoyConfig) -> dict[str, Any]:
    """The paired design's figures: per arm (off: the twin route, never mirrored; on: the
    route under rollout, mirrored at ``mirror_percent``) the client's quantiles; what both
    arms shared (CPU, Envoy's listener histogram, the mirror); the differences with the
    paired two-stage interval (:func:`paired_bootstrap_differences`), the verdict."""
    block = max(1, int(cfg.rate / 2))  # half a second of requests, both arms together
    pairs = [(_ms(r.latency_us), np.asarray(r.twin, dtype=bool)) for r in rounds]
    arms: dict[str, Any] = {}
    for arm, on_twin in (("off", True), ("on", False)):
        latency = np.concatenate([lat[twin == on_twin] for lat, twin in pairs])
        arms[arm] = {
            "route": "twin (never mirrored)" if on_twin else "the route under rollout",
            "requests": int(latency.size),
            **{k: round(v, 3) for k, v in zip(LABELS, quantiles(latency, QS), strict=True)},
            "mean_ms": round(float(latency.mean()), 3),
            "sent": sum(r.sent_by_arm.get("twin" if on_twin else "route", 0) for r in rounds),
        }
    diffs = paired_bootstrap_differences(
        [(lat, ~twin) for lat, twin in pairs],
        QS,
        iterations=cfg.iterations,
        block=block,
        seed=cfg.seed,
    )
    both = _arm(rounds)
    both["comparator"] = _comparator(rounds)
    return {
        **_setup(cfg, "paired"),
        "rounds": len(rounds),
        **arms,
        "both": both,
        "diff_ms": {label: _difference(d) for label, d in zip(LABELS, diffs, strict=True)},
        **_reading(diffs[1], cfg, "more rounds"),
        "bootstrap": {"iterations": cfg.iterations, "block_requests": block},
    }


def _setup(cfg: EnvoyConfig, design: str) -> dict[str, Any]:
    """What both designs' figures open with: how the stack and the load were set up."""
    consumers = "controller+comparator, candidate" + (" and primary replica" if cfg.primary else "")
    pinned = {
        None: None,
        "users": f"users' path (Envoy, baseline, load) on one CPU, {consumers} on the other",
        "gateway": f"Envoy alone on one CPU; baseline and load on the other, {consumers}"
        " there under SCHED_IDLE",
    }[cfg.pinned]
    return {
        "design": design,
        "comparator_in": "sluice serve --parity-address (the controller's process)",
        "pinned": pinned,
        "aa_calibration": cfg.aa,
        "primary_replica": cfg.primary,
        "mirror_percent": cfg.mirror_percent,
        "rate_per_s": cfg.rate,
        "requests_per_round": cfg.requests,
        "warmup_per_round": cfg.warmup,
    }


def _reading(p99: Difference, cfg: EnvoyConfig, narrower: str) -> dict[str, Any]:
    """The p99 difference against the bound (``--p99-bound-ratio`` of the off arm's p99)."""
    bound = cfg.bound_ratio * p99.off
    return {
        "p99_bound_ms": round(bound, 3),
        "verdict": verdict(p99, bound, narrower),
        "target_met": p99.high <= bound,
    }


def _difference(d: Difference) -> dict[str, float]:
    return {"diff": round(d.diff, 3), "ci95_low": round(d.low, 3), "ci95_high": round(d.high, 3)}


def report(envoy: dict[str, Any]) -> str:
    """Human-readable lines for the figures of :func:`measure_envoy`."""
    lines = [
        f"mirror: {envoy['mirror_percent']:g}% of the GETs; the comparator's primary:"
        + (" a baseline replica of its own" if envoy["primary_replica"] else " the baseline")
    ]
    if envoy["aa_calibration"]:
        lines[0] = (
            "A/A CALIBRATION: mirroring off in both arms; a sound method finds no difference"
            " (in about 95% of runs)"
        )
    if envoy["pinned"]:
        lines.append(f"pinned: {envoy['pinned']}")
    if envoy["design"] == "paired":
        lines += _paired_lines(envoy)
    else:
        lines += _rounds_lines(envoy)
    m = envoy["machine"]
    lines.append(
        f"machine: {m['cpus']} CPUs {m['busy_share']:.0%} busy during the rounds; other"
        f" processes' CPU seconds {m['others_top_cpu_s']}; load average before"
        f" {m['loadavg_before']}, after {m['loadavg_after']}"
    )
    lines.append(f"verdict: {envoy['verdict']}")
    return "\n".join(lines)


def _differences(envoy: dict[str, Any]) -> list[str]:
    return [
        f"on - off {label[:-3]}: {d['diff']:+.3f} ms, 95% CI"
        f" [{d['ci95_low']:+.3f}, {d['ci95_high']:+.3f}] ms"
        for label, d in envoy["diff_ms"].items()
    ]


def _paired_lines(envoy: dict[str, Any]) -> list[str]:
    lines = [
        f"paired design: {envoy['rounds']} rounds at {envoy['rate_per_s']:g}/s, every request"
        " sent at random to the route under rollout (on) or to its twin route (off), same"
        " baseline"
    ]
    for arm in ("off", "on"):
        a = envoy[arm]
        lines.append(
            f"{arm:>3} ({a['route']}): {a['requests']} requests: p50 {a['p50_ms']:.3f} ms,"
            f" p99 {a['p99_ms']:.3f} ms, p99.9 {a['p999_ms']:.3f} ms (client)"
        )
    b = envoy["both"]
    e = b["envoy_rq_time"]
    c = b["comparator"]
    lines.append(
        f"both arms: Envoy downstream_rq_time p50 {e['p50_ms']} p99 {e['p99_ms']} p99.9"
        f" {e['p999_ms']} ms; errors {b['errors']}, non-200 {b['non_200']}, send lag p99"
        f" {b['send_lag_p99_ms']:.2f} ms; CPU {b['cpu_share']}; mirrored by Envoy"
        f" {b['mirrored']} of {envoy['on']['sent']} sent to the route; the comparator"
        f" compared {c.get('compared', 0)} (mismatched {c.get('mismatched', 0)}, errors"
        f" {c.get('errors', 0)}, dropped {c.get('dropped', 0)})"
    )
    return lines + _differences(envoy)


def _rounds_lines(envoy: dict[str, Any]) -> list[str]:
    lines = []
    for arm in ("off", "on"):
        a = envoy[arm]
        e = a["envoy_rq_time"]
        lines.append(
            f"mirroring {arm:>3}: {a['requests']} requests in {a['rounds']} rounds at"
            f" {envoy['rate_per_s']:g}/s: p50 {a['p50_ms']:.3f} ms, p99 {a['p99_ms']:.3f} ms,"
            f" p99.9 {a['p999_ms']:.3f} ms (client); Envoy downstream_rq_time p50"
            f" {e['p50_ms']} p99 {e['p99_ms']} p99.9 {e['p999_ms']} ms (1 ms buckets);"
            f" errors {a['errors']}, non-200 {a['non_200']}, send lag p99"
            f" {a['send_lag_p99_ms']:.2f} ms; CPU {a['cpu_share']}"
        )
    c = envoy["on"]["comparator"]
    lines.append(
        f"mirrored by Envoy: {envoy['on']['mirrored']} in the on rounds,"
        f" {envoy['off']['mirrored']} in the off rounds; the comparator compared"
        f" {c.get('compared', 0)} (matched {c.get('matched', 0)}, mismatched"
        f" {c.get('mismatched', 0)}, errors {c.get('errors', 0)}, dropped {c.get('dropped', 0)})"
    )
    lines += _differences(envoy)
    if envoy["mann_whitney"] is not None:
        mw = envoy["mann_whitney"]
        lines.append(
            f"Mann-Whitney U: p = {mw['p_value']}, P(on slower than off) = {mw['p_on_slower']}"
        )
    return lines
