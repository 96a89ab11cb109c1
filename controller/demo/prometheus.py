"""The demo's Prometheus (when one is on PATH): scrapes the Envoy's ``/stats/prometheus`` every
second, its TSDB in the demo's work directory."""

from __future__ import annotations

import os
import shutil
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import yaml

from controller.demo.children import ChildError, Children

SCRAPE_INTERVAL_S = 1.0


def prometheus_binary() -> str | None:
    """``$SLUICE_PROMETHEUS``, else ``prometheus`` on PATH, else ``/usr/bin/prometheus`` (the
    Debian package's); None when there is none (or the one named is not executable)."""
    explicit = os.environ.get("SLUICE_PROMETHEUS")
    if explicit:
        return explicit if os.access(explicit, os.X_OK) else None
    found = shutil.which("prometheus")
    if found:
        return found
    return "/usr/bin/prometheus" if os.access("/usr/bin/prometheus", os.X_OK) else None


@dataclass(frozen=True)
class ScrapeTarget:
    """A scrape job of one ``host:port`` target at ``path`` (Envoy: ``/stats/prometheus``)."""

    job: str
    address: str
    path: str = "/stats/prometheus"


def scrape_config(targets: Sequence[ScrapeTarget], interval_s: float) -> dict[str, Any]:
    """A Prometheus configuration scraping ``targets`` every ``interval_s`` seconds (the
    scrape timeout and rule evaluation interval equal to it)."""
    interval = f"{interval_s:g}s"
    return {
        "global": {
            "scrape_interval": interval,
            "scrape_timeout": interval,
            "evaluation_interval": interval,
        },
        "scrape_configs": [
            {
                "job_name": t.job,
                "metrics_path": t.path,
                "static_configs": [{"targets": [t.address]}],
            }
            for t in targets
        ],
    }


def _free_port() -> int:
    # Prometheus cannot listen on port 0 and report the port: take a free one and retry
    # when another process takes it first.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_prometheus(
    children: Children, binary: str, targets: Sequence[ScrapeTarget], timeout_s: float = 30.0
) -> str:
    """Start Prometheus scraping ``targets`` every second; returns its URL once ``/-/ready``.

    Raises:
        ChildError: it exited or was not ready within ``timeout_s`` seconds (3 attempts when
            its port was taken).
    """
    config = children.workdir / "prometheus.yml"
    config.write_text(yaml.safe_dump(scrape_config(targets, SCRAPE_INTERVAL_S)))
    error: ChildError | None = None
    for attempt in range(3):
        port = _free_port()
        child = children.start(
            "prometheus" if attempt == 0 else f"prometheus-{attempt}",
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={children.workdir / 'prometheus-data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--log.level=warn",
            ],
        )
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + timeout_s
        while child.alive() and time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/-/ready", timeout=1.0).status_code == 200:
                    return url
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        child.stop()
        error = ChildError(f"prometheus was not ready\n{child.describe()}")
        if "address already in use" not in child.describe(40):
            break
    assert error is not None
    raise error
