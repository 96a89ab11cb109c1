"""What the ``envoy_admin`` provider costs the event loop: keeping scrapes, parsing, sampling.

    python3 benchmarks/envoy_admin_provider.py                    # 1 h of 1 s scrapes, 5 clusters
    python3 benchmarks/envoy_admin_provider.py --quick            # 5 min: a smoke run
    python3 benchmarks/envoy_admin_provider.py --memory           # + retained bytes (slower)

One Envoy's retention is filled with synthetic scrapes (``--clusters`` clusters, ~100 requests
per second each, latencies over Sluice's 257 buckets; the histograms change at every scrape,
as with the Sluice bootstrap's 1 s ``stats_flush_interval``) through the provider's own
``record()``, without HTTP. Then, on the event loop, ``sample()`` over windows of 3600 s
(the whole retention, like the judge's reference: the rollout so far), 600 s and 60 s (a
stage), and the parse of one Envoy-shaped ``/stats/prometheus`` text with the same clusters.
Times are medians of ``--repeat`` runs, per Envoy (the provider sums Envoys: multiply by their
number).

The script only uses what the provider had before and after its series were made compact
(``_series[i].record(at, stats, retention_s)``, ``sample()``, ``parse_envoy_stats``), so the
same figures can be taken of an older checkout: ``PYTHONPATH=<checkout> python3 ...``.
Prints one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import math
import random
import statistics
import sys
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parents[1]))  # after PYTHONPATH: see above

from controller.analysis.providers import envoy_stats
from controller.analysis.providers.envoy_admin import EnvoyAdminProvider
from controller.analysis.providers.envoy_stats import ClusterStats
from controller.analysis.sli import Sample
from controller.xds.bootstrap import latency_buckets_ms

BOUNDS = (*latency_buckets_ms(), math.inf)
T0 = 1_800_000_000.0


def scrapes(clusters: list[str], count: int, seed: int) -> Iterator[dict[str, ClusterStats]]:
    """Cumulative per-cluster values, one dict per scrape (1 s apart)."""
    rnd = random.Random(seed)
    requests = dict.fromkeys(clusters, 0.0)
    errors = dict.fromkeys(clusters, 0.0)
    per_bucket = {c: [0.0] * len(BOUNDS) for c in clusters}
    for _ in range(count):
        out = {}
        for cluster in clusters:
            new = rnd.randint(50, 150)
            for _ in range(new // 10):  # 10 requests per draw: fast enough, same shape
                slot = min(int(rnd.lognormvariate(3.4, 0.6) * 4), len(BOUNDS) - 1)
                per_bucket[cluster][slot] += 10
            requests[cluster] += new
            errors[cluster] += rnd.randint(0, 2)
            buckets = tuple(itertools.accumulate(per_bucket[cluster]))
            out[cluster] = ClusterStats(requests[cluster], errors[cluster], BOUNDS, buckets)
        yield out


def envoy_text(stats: dict[str, ClusterStats]) -> str:
    """The scrape as Envoy writes it (with the stats filter: these three stats)."""
    lines = ["# TYPE envoy_cluster_upstream_rq_total counter"]
    lines += [
        f'envoy_cluster_upstream_rq_total{{envoy_cluster_name="{c}"}} {s.requests:.0f}'
        for c, s in stats.items()
    ]
    lines.append("# TYPE envoy_cluster_upstream_rq_xx counter")
    for c, s in stats.items():
        for code_class, value in (("2", s.requests - s.errors), ("5", s.errors)):
            lines.append(
                f'envoy_cluster_upstream_rq_xx{{envoy_response_code_class="{code_class}",'
                f'envoy_cluster_name="{c}"}} {value:.0f}'
            )
    lines.append("# TYPE envoy_cluster_upstream_rq_time histogram")
    for c, s in stats.items():
        for bound, count in zip(s.bounds, s.buckets, strict=True):
            le = "+Inf" if math.isinf(bound) else f"{bound:g}"
            lines.append(
                f'envoy_cluster_upstream_rq_time_bucket{{envoy_cluster_name="{c}",le="{le}"}}'
                f" {count:.0f}"
            )
        lines.append(f'envoy_cluster_upstream_rq_time_sum{{envoy_cluster_name="{c}"}} 1.5e6')
        lines.append(
            f'envoy_cluster_upstream_rq_time_count{{envoy_cluster_name="{c}"}} {s.requests:.0f}'
        )
    return "\n".join(lines) + "\n"


def median_ms(runs: list[float]) -> float:
    return round(statistics.median(runs) * 1000, 3)


async def run(args: argparse.Namespace) -> dict[str, object]:
    clusters = ["baseline", "candidate", *(f"other-{i}" for i in range(args.clusters - 2))]
    now = T0 + args.retention
    provider = EnvoyAdminProvider(["http://envoy:9901"], retention_s=args.retention)
    provider._clock = lambda: now
    provider._tasks = [asyncio.create_task(asyncio.sleep(0))]  # sample() must not scrape
    series = provider._series[0]

    if args.memory:
        tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0] if args.memory else 0
    record_s: list[float] = []
    last: dict[str, ClusterStats] = {}
    for index, stats in enumerate(scrapes(clusters, int(args.retention) + 1, args.seed)):
        last = dict(stats)
        started = time.perf_counter()
        series.record(T0 + index, stats, args.retention)
        record_s.append(time.perf_counter() - started)
    retained = tracemalloc.get_traced_memory()[0] - before if args.memory else None
    if args.memory:
        tracemalloc.stop()

    windows = {f"{length:.0f}s": length for length in (args.retention, 600.0, 60.0)}
    sample_ms: dict[str, float] = {}
    for name, length in windows.items():
        runs = []
        for _ in range(args.repeat):
            started = time.perf_counter()
            result = await provider.sample("baseline", "candidate", now - length, now)
            runs.append(time.perf_counter() - started)
            assert isinstance(result, Sample), result
        sample_ms[name] = median_ms(runs)

    text = envoy_text(last)
    assert envoy_stats.parse_envoy_stats(text) == last
    parse_runs = []
    for _ in range(args.repeat):
        started = time.perf_counter()
        envoy_stats.parse_envoy_stats(text)
        parse_runs.append(time.perf_counter() - started)
    for task in provider._tasks:
        await task
    return {
        "clusters": args.clusters,
        "buckets": len(BOUNDS),
        "scrapes_retained": len(series.times),
        "sample_ms": sample_ms,
        "parse_ms": median_ms(parse_runs),
        "scrape_text_bytes": len(text),
        "record_ms_p50": median_ms(record_s),
        "record_ms_max": round(max(record_s) * 1000, 3),
        "retained_mb": None if retained is None else round(retained / 1e6, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clusters", type=int, default=5, help="clusters per Envoy (>= 2)")
    parser.add_argument("--retention", type=float, default=3600.0, help="seconds of 1 s scrapes")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--memory", action="store_true", help="measure retained bytes")
    parser.add_argument("--quick", action="store_true", help="300 s of scrapes, 3 repeats")
    args = parser.parse_args()
    if args.clusters < 2:
        parser.error("--clusters must be at least 2")
    if args.quick:
        args.retention, args.repeat = 300.0, 3
    print(json.dumps(asyncio.run(run(args))))


if __name__ == "__main__":
    main()
