"""A real Prometheus for the tests: ``/usr/bin/prometheus`` (Debian package ``prometheus``).

:meth:`Prometheus.start` writes a config scraping the given targets every second, starts the
server on 127.0.0.1 with a free port and its TSDB in the test's temporary folder, and waits
for ``/-/ready``; :meth:`Prometheus.stop` sends SIGTERM, then SIGKILL after a grace period.
The process is recorded in the e2e harness' ``PROCESSES``, so failing tests show its log.

Where the binary is missing, :func:`require_prometheus` skips the test with the reason, except
under CI (``CI=true``), where a missing binary fails the test: CI installs it (``.ci/run``).
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from e2e.harness import Process, wait_until

from controller.demo.prometheus import ScrapeTarget, prometheus_binary, scrape_config

__all__ = ["Prometheus", "ScrapeTarget", "factory", "free_port", "require_prometheus"]

SCRAPE_INTERVAL_S = 1.0

INSTANCES: list[Prometheus] = []
"""Every Prometheus started, in start order (for failure reports)."""


def require_prometheus() -> str:
    """The Prometheus binary; skips the test without it, or fails it when ``CI=true``."""
    binary = prometheus_binary()
    if binary is not None:
        return binary
    reason = (
        "the Prometheus binary is missing (apt-get install -y prometheus, or set"
        " SLUICE_PROMETHEUS to its path)"
    )
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true: {reason}", pytrace=False)
    pytest.skip(reason)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (Prometheus cannot listen on port 0 and report
    the port, so the caller retries when another process takes it first)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Prometheus:
    """A running Prometheus and a small client of its HTTP API."""

    proc: Process
    url: str
    workdir: Path
    http: httpx.Client

    @classmethod
    def start(
        cls,
        workdir: Path,
        targets: Sequence[ScrapeTarget],
        *,
        interval_s: float = SCRAPE_INTERVAL_S,
        name: str = "prometheus",
        timeout: float = 20.0,
    ) -> Prometheus:
        """Start Prometheus scraping ``targets`` every ``interval_s`` and wait for /-/ready."""
        binary = require_prometheus()
        workdir.mkdir(parents=True, exist_ok=True)
        config_path = workdir / f"{name}.yml"
        config_path.write_text(yaml.safe_dump(scrape_config(targets, interval_s)))
        last_error: AssertionError | None = None
        for attempt in range(3):  # the free port may be taken before Prometheus binds it
            port = free_port()
            argv = [
                binary,
                f"--config.file={config_path}",
                f"--storage.tsdb.path={workdir / f'{name}-data-{attempt}'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--web.enable-lifecycle",
                "--log.level=info",
            ]
            proc = Process.start(name, argv, workdir)
            http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5.0)
            instance = cls(proc, f"http://127.0.0.1:{port}", workdir, http)
            INSTANCES.append(instance)
            try:
                instance.wait_ready(timeout)
            except AssertionError as exc:
                instance.stop()
                last_error = exc
                if "address already in use" in proc.logs(20):
                    continue
                raise
            return instance
        assert last_error is not None
        raise last_error

    def wait_ready(self, timeout: float = 20.0) -> None:
        def probe() -> bool:
            if not self.proc.alive():
                raise AssertionError(f"prometheus exited\n{self.proc.logs(20)}")
            with contextlib.suppress(httpx.TransportError):
                return self.http.get("/-/ready").status_code == 200
            return False

        wait_until(probe, timeout=timeout, what="prometheus /-/ready", diagnostics=self.logs)

    def stop(self, grace: float = 5.0) -> int:
        """SIGTERM, then SIGKILL after ``grace`` seconds; returns the exit code."""
        self.http.close()
        return self.proc.stop(grace=grace)

    def logs(self, lines: int = 40) -> str:
        return self.proc.logs(lines)

    # HTTP API

    def query(self, promql: str, at: float | None = None) -> dict[str, Any]:
        """``/api/v1/query`` → ``data`` (``resultType``, ``result``); raises on an error."""
        params: dict[str, str] = {"query": promql}
        if at is not None:
            params["time"] = f"{at:.3f}"
        response = self.http.get("/api/v1/query", params=params)
        body = response.json()
        assert body.get("status") == "success", f"{promql}: HTTP {response.status_code} {body}"
        return body["data"]  # type: ignore[no-any-return]

    def targets(self) -> list[dict[str, Any]]:
        response = self.http.get("/api/v1/targets", params={"state": "active"})
        response.raise_for_status()
        return response.json()["data"]["activeTargets"]  # type: ignore[no-any-return]

    def wait_scraped(self, after: float, *, scrapes: int = 1, timeout: float = 15.0) -> float:
        """Wait until every target was scraped successfully ``scrapes`` times after the epoch
        time ``after`` (each scrape seen starting after the previous one); returns the time of
        the last scrape seen."""
        seen = after
        for n in range(scrapes):

            def probe(since: float = seen) -> float | None:
                targets = self.targets()
                if not targets:
                    return None
                latest = []
                for target in targets:
                    if target.get("health") != "up":
                        return None
                    latest.append(_epoch(target["lastScrape"]))
                return min(latest) if min(latest) > since else None

            seen = wait_until(
                probe,
                timeout=timeout,
                what=f"scrape {n + 1}/{scrapes} of every target after {after:.3f}",
                diagnostics=lambda: f"targets: {self._safe_targets()}\n{self.logs(20)}",
                interval=0.1,
            )
        return seen

    def _safe_targets(self) -> object:
        try:
            return self.targets()
        except Exception as exc:
            return exc


@contextlib.contextmanager
def factory(workdir: Path) -> Iterator[Callable[..., Prometheus]]:
    """``start(targets, interval_s=1.0)`` starts a Prometheus under ``workdir``; every one
    started is stopped on exit (SIGTERM, then SIGKILL). Skips (or fails under CI=true)
    without the binary."""
    require_prometheus()
    started: list[Prometheus] = []

    def start(
        targets: Sequence[ScrapeTarget], *, interval_s: float = SCRAPE_INTERVAL_S
    ) -> Prometheus:
        name = f"prometheus-{len(started) + 1}"
        instance = Prometheus.start(workdir / name, targets, interval_s=interval_s, name=name)
        started.append(instance)
        return instance

    try:
        yield start
    finally:
        for instance in reversed(started):
            instance.stop()


def _epoch(rfc3339: str) -> float:
    """Prometheus' ``lastScrape`` (RFC 3339 with nanoseconds) as epoch seconds."""
    from datetime import datetime

    text = rfc3339.replace("Z", "+00:00")
    head, _, rest = text.partition(".")
    if rest:  # Python parses at most microseconds
        digits = "".join(c for c in rest if c.isdigit())
        zone = rest[len(digits) :]
        text = f"{head}.{digits[:6].ljust(6, '0')}{zone}"
    return datetime.fromisoformat(text).timestamp()
