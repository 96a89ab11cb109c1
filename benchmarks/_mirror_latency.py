"""Envoy's downstream latency for users with mirroring on versus off: the Envoy part of
``parity_throughput.py`` (see its docstring for the method; this module runs it).

The stack is the end-to-end suite's (``tests/e2e/harness.py``): two ``items_server.py``
upstreams (baseline and candidate), a real Envoy fed by ``sluice serve --parity-address``
(the comparator in the controller's process, no metrics provider), and a gateway whose
comparator cluster points at it. Mirroring is switched with the CLI: ``sluice rollout start``
(then ``retry``) of a policy holding a shadow stage that mirrors a share of GETs (``--mirror``),
and ``sluice rollout abort``; each switch waits for Envoy's ``/config_dump`` to show it.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.e2e.harness import (  # noqa: E402  (after the path)
    BASELINE,
    CANDIDATE,
    ROUTE,
    ROUTE_PREFIX,
    Controller,
    Envoy,
    Process,
    gateway_document,
    wait_until,
)

ITEMS_SCRIPT = ROOT / "tests" / "e2e" / "items_server.py"
LOAD_SCRIPT = Path(__file__).with_name("_mirror_load.py")
COMPARATOR = "sluice-parity"
ROLLOUT = "mirror-bench"
STAT_PREFIX = "e2e"  # the harness gateway's listener statPrefix
RQ_TIME = f"http.{STAT_PREFIX}.downstream_rq_time"
VOLATILE = ["/meta/generated_at", "/meta/request_id"]
TWIN_ROUTE = "twin"
"""The paired design's second route: the same prefix and weighted clusters, never under
rollout, so never mirrored; it takes the requests whose :data:`ARM_HEADER` is ``twin``."""
ARM_HEADER = "x-bench-arm"
PRIMARY = "baseline-parity"
"""``--primary``: a second baseline process, the policy's ``parity.primary``."""


def policy_yaml(mirror_percent: float = 100.0, primary: bool = False) -> str:
    """A shadow stage (0%) mirroring ``mirror_percent`` of GETs and HEADs, baked for an hour:
    it holds for the whole benchmark (no metrics provider: a stage with SLOs never passes)."""
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
                    {"weight": "0%", "bake": "1h", "deadline": "2h"},
                    {"weight": "100%", "bake": "1h", "deadline": "2h"},
                ],
                "analysis": {
                    "interval": "10s",
                    "slos": [{"metric": "parity", "minValue": "99.9%"}],
                },
                "parity": {
                    "mirror": f"{mirror_percent:g}%",
                    "comparator": {"cluster": COMPARATOR},
                    "compare": {"ignore": VOLATILE},
                    **({"primary": {"cluster": PRIMARY}} if primary else {}),
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


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a live process (``/proc/PID/stat``); 0.0 once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


PIN_LAYOUTS = ("users", "gateway")
"""``--pin`` layouts of the Envoy part's processes on two CPUs (:func:`bench_stack`)."""


def pin(pid: int, cpus: set[int], idle: bool = False) -> None:
    """Pin every thread of ``pid`` to ``cpus`` (``sched_setaffinity`` acts per thread; threads
    started later inherit their creator's set, and their scheduling policy); ``idle``: under
    ``SCHED_IDLE`` too."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(ProcessLookupError):
            os.sched_setaffinity(int(task.name), cpus)
            if idle:
                os.sched_setscheduler(int(task.name), os.SCHED_IDLE, os.sched_param(0))


def all_cpu() -> dict[int, tuple[str, float]]:
    """Every process's (``comm``, CPU seconds), by pid (for "what else was running")."""
    out: dict[int, tuple[str, float]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            text = (entry / "stat").read_text()
            comm = text[text.index("(") + 1 : text.rindex(")")]
            out[int(entry.name)] = (comm, cpu_s(int(entry.name)))
    return out


def busy_cpu_s() -> float:
    """CPU seconds the whole machine spent busy since boot (``/proc/stat``: all but idle and
    iowait)."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(values) - values[3] - values[4]) / os.sysconf("SC_CLK_TCK")


@dataclass
class Bench:
    """The running stack and the CLI to switch mirroring."""

    workdir: Path
    envoy: Envoy
    controller: Controller
    upstreams: dict[str, Process]
    state: Path
    policy: Path
    user_cpus: set[int] | None = None  # --pin: the load generator's CPUs
    started_rollout: bool = False

    @property
    def port(self) -> int:
        return self.envoy.listener_port()

    def processes(self) -> dict[str, int]:
        """Our long-lived processes' pids, by role."""
        return {
            "envoy": self.envoy.proc.pid,
            "controller": self.controller.proc.pid,
            **{name: p.pid for name, p in self.upstreams.items()},
        }

    def cli(self, *args: str) -> None:
        done = subprocess.run(
            [sys.executable, "-m", "controller", "rollout", *args, "--state", str(self.state)],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=ROOT,
        )
        if done.returncode != 0:
            raise RuntimeError(f"sluice rollout {' '.join(args)}: {done.stdout}{done.stderr}")

    def route_names(self) -> list[str]:
        for config in self.envoy.config_dump()["configs"]:
            if config.get("@type", "").endswith("RoutesConfigDump"):
                for dynamic in config.get("dynamic_route_configs", []):
                    for vhost in dynamic.get("route_config", {}).get("virtual_hosts", []):
                        return [r.get("name", "") for r in vhost.get("routes", [])]
        return []

    def comparator_counts(self) -> dict[str, int] | None:
        """The route's tally in the comparator (None: it has never compared the route)."""
        response = self.controller.http.get(f"/v1/parity/routes/{ROUTE}")
        if response.status_code == 404:
            return None
        response.raise_for_status()
        counts: dict[str, int] = response.json()["counts"]
        return counts

    def mirror_on(self) -> None:
        """Start (then retry) the rollout; return once Envoy mirrors and the comparator has a
        fresh tally for the route (each rollout starts one)."""
        if self.started_rollout:
            self.cli("retry", ROLLOUT)
        else:
            self.cli("start", ROLLOUT, "--policy", str(self.policy))
            self.started_rollout = True
        wait_until(
            lambda: self.route_names()[-2:] == [f"{ROUTE}.mirror", ROUTE],
            timeout=30,
            what="Envoy to apply the mirroring route",
            diagnostics=lambda: f"{self.route_names()}\n{self.controller.proc.logs(20)}",
            interval=0.05,
        )
        wait_until(
            lambda: (c := self.comparator_counts()) is not None and c["compared"] == 0,
            timeout=10,
            what="the comparator to compare the route (a fresh tally)",
            diagnostics=lambda: self.controller.proc.logs(20),
            interval=0.05,
        )

    def mirror_off(self) -> None:
        """Abort the rollout; return once Envoy no longer mirrors and the rollout is aborted
        (so that it can be retried)."""
        self.cli("abort", ROLLOUT)
        wait_until(
            lambda: (
                f"{ROUTE}.mirror" not in (names := self.route_names()) and names[-1:] == [ROUTE]
            ),
            timeout=30,
            what="Envoy to drop the mirroring route",
            diagnostics=lambda: f"{self.route_names()}\n{self.controller.proc.logs(20)}",
            interval=0.05,
        )
        wait_until(
            lambda: self.rollout_phase() == "aborted",
            timeout=30,
            what="the rollout to be aborted",
            interval=0.1,
        )

    def rollout_phase(self) -> str:
        """The rollout's phase as the controller recorded it (read from the state file)."""
        from controller.store.sqlite_rollouts import SqliteRolloutStore

        store = SqliteRolloutStore(self.state)
        try:
            return str(store.get(ROLLOUT).state.phase)
        finally:
            store.close()

    def rq_time_buckets(self) -> dict[float, tuple[float, int]]:
        """Envoy's cumulative ``downstream_rq_time`` buckets: lower bound -> (width, count)."""
        response = self.envoy.http.get(
            "/stats",
            params={
                "format": "json",
                "histogram_buckets": "detailed",
                "filter": f"^{RQ_TIME.replace('.', '[.]')}$",
            },
        )
        response.raise_for_status()
        out: dict[float, tuple[float, int]] = {}
        for stat in response.json().get("stats", []):
            for detail in (stat.get("histograms") or {}).get("details", []):
                if detail.get("name") != RQ_TIME:
                    continue
                for bucket in detail.get("totals", []):
                    lower = float(bucket["lower_bound"])
                    out[lower] = (float(bucket["width"]), int(bucket["count"]))
        return out

    def mirrored(self) -> int:
        """Requests Envoy sent to the comparator's cluster so far."""
        return self.envoy.cluster_counter(COMPARATOR, "upstream_rq_total")


@contextlib.contextmanager
def bench_stack(
    pinned: str | None = None,
    mirror_percent: float = 100.0,
    twin: bool = False,
    primary: bool = False,
) -> Iterator[Bench]:
    """Build the stack in a temporary directory; stop every process on the way out.

    ``primary``: a second baseline process (cluster :data:`PRIMARY`) answers the comparator's
    primary requests (the policy's ``parity.primary``), on the mirror's CPU when pinned.

    ``twin``: the gateway also has :data:`TWIN_ROUTE`, first in the virtual host, matching the
    route's prefix and ``ARM_HEADER: twin`` with the route's own weighted clusters (the paired
    design).

    ``pinned`` (``--pin``), one of :data:`PIN_LAYOUTS`:

    * ``users``: the users' path (Envoy, the baseline, the load generator) on the first CPU,
      the mirror's consumers (the controller with the comparator, the candidate, the primary
      replica) on the second, as if they ran on other machines; the baseline still answers
      the comparator's primary requests on the users' CPU (it does in production too);
    * ``gateway``: Envoy alone on the second CPU, as a gateway on cores of its own; the
      baseline and the load generator on the first, with the mirror's consumers under
      ``SCHED_IDLE`` there (sched(7): they run only when nothing else on that CPU can, and a
      waking user-path process preempts them), as if they ran on other machines.
    """
    with (
        tempfile.TemporaryDirectory(prefix="mirror-bench-") as tmp,
        contextlib.ExitStack() as stack,
    ):
        workdir = Path(tmp)
        upstreams: dict[str, Process] = {}
        for name in (BASELINE, CANDIDATE, *([PRIMARY] if primary else [])):
            # The primary replica serves what the baseline serves.
            content = BASELINE if name == PRIMARY else name
            proc = Process.start(
                f"items-{name}", [sys.executable, str(ITEMS_SCRIPT), content], workdir
            )
            stack.callback(proc.stop, grace=3.0)
            upstreams[name] = proc
        ports = {
            n: int(p.read_json_line("ready", timeout=10.0)["port"]) for n, p in upstreams.items()
        }
        document = gateway_document(ports[BASELINE], ports[CANDIDATE])
        if twin:
            routes = document["spec"]["listeners"][0]["virtualHosts"][0]["routes"]
            routes.insert(
                0,
                {
                    "name": TWIN_ROUTE,
                    "match": {
                        "prefix": ROUTE_PREFIX,
                        "headers": [{"name": ARM_HEADER, "exact": "twin"}],
                    },
                    # The route's own split (all to the baseline), so that the arms differ
                    # only by the mirror.
                    "weightedClusters": [dict(w) for w in routes[0]["weightedClusters"]],
                    "timeout": "5s",
                },
            )
        comparator_port = free_port()
        extra = {COMPARATOR: comparator_port, **({PRIMARY: ports[PRIMARY]} if primary else {})}
        document["spec"]["clusters"] += [
            {
                "name": name,
                "connectTimeout": "1s",
                "endpoints": [{"address": "127.0.0.1", "port": port}],
            }
            for name, port in extra.items()
        ]
        gateway = workdir / "gateway.yaml"
        gateway.write_text(yaml.safe_dump(document))
        policy = workdir / "policy.yaml"
        policy.write_text(policy_yaml(mirror_percent, primary))
        state = workdir / "state.db"
        # The controller first: an Envoy started before it waits out its initial fetch
        # timeouts (10 s per resource type) before it is ready.
        controller = Controller.start(
            workdir,
            gateway,
            state,
            extra=("--parity-address", f"127.0.0.1:{comparator_port}"),
        )
        stack.callback(controller.stop)
        envoy = Envoy.start(
            workdir, node_id="mirror-bench", xds_port=controller.xds_port, protocol="sotw"
        )
        stack.callback(envoy.stop)
        envoy.wait_live()
        controller.wait_node_synced(envoy.node_id, timeout=30, diag=envoy.logs)
        envoy.listener_port()
        user_cpus: set[int] | None = None
        if pinned is not None:
            cpus = sorted(os.sched_getaffinity(0))
            if len(cpus) < 2:
                raise RuntimeError("--pin needs two CPUs")
            mirror_pids = [
                controller.proc.pid,
                *(upstreams[n].pid for n in (CANDIDATE, *([PRIMARY] if primary else []))),
            ]
            user_cpus = {cpus[0]}
            pin(upstreams[BASELINE].pid, user_cpus)
            if pinned == "users":
                pin(envoy.proc.pid, user_cpus)
                for pid in mirror_pids:
                    pin(pid, {cpus[1]})
            elif pinned == "gateway":
                pin(envoy.proc.pid, {cpus[1]})
                for pid in mirror_pids:
                    pin(pid, user_cpus, idle=True)
            else:
                raise ValueError(f"--pin: {pinned!r} is not one of {PIN_LAYOUTS}")
        yield Bench(workdir, envoy, controller, upstreams, state, policy, user_cpus)


@dataclass
class Round:
    """One round's raw figures."""

    arm: str
    latency_us: list[int]
    lag_us: list[int]
    sent: int
    errors: int
    statuses: dict[str, int]
    opened: int
    elapsed_s: float
    mirrored: int
    comparator: dict[str, int] | None
    envoy_buckets: list[tuple[float, float, int]]
    cpu_s: dict[str, float] = field(default_factory=dict)
    twin: list[int] = field(default_factory=list)  # paired: 1 per request on the twin route
    sent_by_arm: dict[str, int] = field(default_factory=dict)  # paired: requests sent per arm


def run_round(
    bench: Bench, arm: str, rate: float, requests: int, warmup: int, seed: int | None = None
) -> Round:
    """One round of user load through Envoy in the current mirroring state.

    ``seed`` (the paired design): every request goes to the route or to its twin at random,
    drawn with ``seed`` (``_mirror_load.py --arm-header``).
    """
    paired = [] if seed is None else ["--arm-header", ARM_HEADER, "--seed", str(seed)]
    pids = bench.processes()
    buckets_before = bench.rq_time_buckets()
    mirrored_before = bench.mirrored()
    # Consecutive "on" rounds share a rollout, hence the comparator's tally.
    compared_before = (bench.comparator_counts() or {}) if arm != "off" else {}
    cpu_before = {name: cpu_s(pid) for name, pid in pids.items()}
    done = subprocess.run(
        [
            sys.executable,
            str(LOAD_SCRIPT),
            "--port",
            str(bench.port),
            "--rate",
            f"{rate:g}",
            "--requests",
            str(requests),
            "--warmup",
            str(warmup),
            "--path",
            f"{ROUTE_PREFIX}/items",
            *paired,
        ],
        capture_output=True,
        text=True,
        timeout=requests / rate + warmup / rate + 60,
        preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if (cpus := bench.user_cpus) else None,
    )
    if done.returncode != 0:
        raise RuntimeError(f"the load exited with {done.returncode}: {done.stderr[-2000:]}")
    load = json.loads(done.stdout.strip().splitlines()[-1])
    cpu = {name: round(cpu_s(pid) - cpu_before[name], 3) for name, pid in pids.items()}
    sent = warmup + requests
    # Mirrored requests still under comparison, and Envoy's histograms (merged from the
    # workers at each 1 s stats flush), settle within a few seconds.
    answered = sum(load["statuses"].values())
    comparator: dict[str, int] | None = None
    mirrored = 0
    deadline = time.monotonic() + 5.0
    while True:
        mirrored = bench.mirrored() - mirrored_before
        now = bench.comparator_counts() if arm != "off" else None
        comparator = (
            None if now is None else {k: v - compared_before.get(k, 0) for k, v in now.items()}
        )
        accounted = (
            sum(comparator[k] for k in ("compared", "errors", "dropped", "skipped"))
            if comparator is not None
            else mirrored
        )
        buckets = bench.rq_time_buckets()
        in_histogram = sum(n for _, n in buckets.values()) - sum(
            n for _, n in buckets_before.values()
        )
        if (accounted >= mirrored and in_histogram >= answered) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    delta = [
        (lower, width, count - buckets_before.get(lower, (width, 0))[1])
        for lower, (width, count) in buckets.items()
    ]
    return Round(
        arm,
        load["latency_us"],
        load["lag_us"],
        sent,
        load["errors"],
        load["statuses"],
        load["opened"],
        load["elapsed_s"],
        mirrored,
        comparator,
        [b for b in delta if b[2] > 0],
        cpu,
        load["twin"],
        load["sent"],
    )
