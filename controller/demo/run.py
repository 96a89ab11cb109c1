"""The demo's run: start everything on loopback, roll the route out, report, stop everything.

Order (each step waits for the previous one to be ready):

1. the baseline and the candidate (:mod:`controller.demo.service`);
2. Envoy (:mod:`controller.demo.envoy`), told where the controller will serve ADS;
3. Prometheus scraping the Envoy, when the provider is ``prometheus``;
4. the controller (``python -m controller serve``) with the demo gateway, an in-process
   comparator and the provider; then Envoy's listener and a first reply through it;
5. the load (:mod:`controller.demo.load`) and the rollout (recorded in the controller's state
   file as ``sluice rollout start`` does), watched until it ends;
6. the report (:mod:`controller.report`), Envoy's applied weights, the outcome.

Every child is stopped on the way out, whatever the way (end, error, Ctrl-C, SIGTERM).
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import os
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import httpx
import yaml

from controller.demo import scenarios
from controller.demo.children import Child, ChildError, Children
from controller.demo.envoy import DemoEnvoy, applied_weights, upstream_requests
from controller.demo.load import Load
from controller.demo.outcome import DemoOptions, DemoOutcome, DemoProgress, Provider
from controller.demo.prometheus import ScrapeTarget, prometheus_binary, start_prometheus
from controller.policy.loading import load_policy
from controller.rollout.machine import start as start_state
from controller.store.rollouts import HistoryEvent, PolicySource
from controller.store.sqlite_rollouts import SqliteRolloutStore


class DemoError(RuntimeError):
    """The demo could not run (a part did not start, or died); the message says which and
    where its logs are."""


def resolve_provider(provider: Provider) -> tuple[str, str | None, str | None]:
    """``(provider, prometheus binary, note for the screen)``.

    Raises:
        DemoError: ``prometheus`` was asked for and there is none.
    """
    binary = prometheus_binary()
    if provider == "envoy_admin":
        return "envoy_admin", None, None
    if binary is None:
        if provider == "prometheus":
            raise DemoError(
                "--provider prometheus: no prometheus binary (apt-get install prometheus, "
                "or SLUICE_PROMETHEUS=/path/to/prometheus)"
            )
        return (
            "envoy_admin",
            None,
            "Prometheus is not on PATH: the controller judges from Envoy's own "
            "/stats/prometheus (the envoy_admin provider), with the same queries",
        )
    return "prometheus", binary, None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def child_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The environment of the demo's children: the user's, without Sluice's own settings
    (``SLUICE_NAMESPACE`` would make the demo's controller a replica of a real cluster,
    ``SLUICE_NOTIFY`` would send the demo's rollbacks to a real webhook) but
    ``SLUICE_PROMETHEUS``, which names the Prometheus binary the demo itself runs."""
    return {
        k: v for k, v in environ.items() if not k.startswith("SLUICE_") or k == "SLUICE_PROMETHEUS"
    }


class Demo:
    """One run of the demo (see the module docstring). :meth:`run` does it all;
    ``on_progress`` is called with the progress a few times a second, and ``on_event`` once
    per new history event of the rollout (each decision as it happens)."""

    def __init__(
        self,
        options: DemoOptions,
        on_progress: Callable[[DemoProgress], None] = lambda _: None,
        on_event: Callable[[HistoryEvent], None] = lambda _: None,
    ) -> None:
        self.options = options
        self.on_progress = on_progress
        self.on_event = on_event
        provider, self._prometheus, note = resolve_provider(options.provider)  # before mkdtemp
        workdir = options.workdir or Path(tempfile.mkdtemp(prefix="sluice-demo-"))
        workdir.mkdir(parents=True, exist_ok=True)
        self.workdir = workdir.resolve()
        self.progress = DemoProgress(scenarios.SCENARIOS[options.scenario], provider, self.workdir)
        if note:
            self.progress.notes.append(note)
        self.children = Children(self.workdir, child_env(os.environ))
        self._exit_codes: list[dict[str, Any]] = []

    def run(self) -> DemoOutcome:
        """Run the demo to its end and stop everything it started.

        Raises:
            DemoError: a part did not start or died (everything is stopped first).
            KeyboardInterrupt: Ctrl-C (everything is stopped first).
        """
        try:
            try:
                return self._run()
            except ChildError as exc:
                raise DemoError(str(exc)) from exc
        finally:
            self._stop_all()

    # steps

    def _step(self, text: str) -> None:
        self.progress.step = text
        self.on_progress(self.progress)

    def _run(self) -> DemoOutcome:
        scenario = self.progress.scenario
        self._step("starting the baseline and the candidate")
        base = self._service(scenarios.BASELINE, scenarios.BASELINE_BEHAVIOUR.argv())
        cand = self._service(scenarios.CANDIDATE, scenario.candidate.argv())
        base_port = int(base.ready_line(20.0)["port"])
        cand_port = int(cand.ready_line(20.0)["port"])
        comparator_port = _free_port()
        gateway = self.workdir / "gateway.yaml"
        gateway.write_text(
            yaml.safe_dump(scenarios.gateway_document(base_port, cand_port, comparator_port))
        )
        policy_path = self.workdir / "policy.yaml"
        policy_text = yaml.safe_dump(scenarios.policy_document(), sort_keys=False)
        policy_path.write_text(policy_text)

        self._step("starting Envoy")
        xds_port = _free_port()
        envoy = DemoEnvoy.start(self.children, xds_port)
        self.progress.urls["envoy admin"] = envoy.admin_url
        extra: list[str]
        if self._prometheus is not None:
            self._step("starting Prometheus")
            shutil.rmtree(self.workdir / "prometheus-data", ignore_errors=True)
            address = envoy.admin_url.removeprefix("http://")
            url = start_prometheus(
                self.children, self._prometheus, [ScrapeTarget("envoy", address)]
            )
            self.progress.urls["prometheus"] = url
            extra = ["--prometheus-url", url]
        else:
            extra = ["--envoy-admin", envoy.admin_url, "--scrape-interval", "1s"]

        self._step("starting the controller (xDS, comparator, judge)")
        state = self.workdir / "state.db"
        for stale in (state, state.with_name("state.db-wal"), state.with_name("state.db-shm")):
            stale.unlink(missing_ok=True)  # a reused --workdir starts afresh
        controller = self.children.start(
            "controller",
            [
                sys.executable,
                "-m",
                "controller",
                "serve",
                "--gateway",
                str(gateway),
                "--xds-address",
                f"127.0.0.1:{xds_port}",
                "--admin-address",
                "127.0.0.1:0",
                "--state",
                str(state),
                "--parity-address",
                f"127.0.0.1:{comparator_port}",
                "--log-level",
                "warning",
                *extra,
            ],
        )
        ready = controller.ready_line(30.0)
        admin = f"http://{ready['admin']}"
        self.progress.urls["controller admin"] = admin
        listener = envoy.wait_listener()
        gateway_url = f"http://127.0.0.1:{listener}"
        self.progress.urls["gateway"] = f"{gateway_url}{scenarios.ROUTE_PREFIX}/42"
        self._wait_served(gateway_url)

        self._step("rolling out")
        store = SqliteRolloutStore(state)
        try:
            started = time.monotonic()
            asyncio.run(self._roll(store, gateway_url, policy_path, policy_text))
            duration = time.monotonic() - started
            self._step("writing the report")
            report, report_error = self._report(store, admin)
        finally:
            store.close()
        weights = applied_weights(envoy.admin_url, scenarios.ROLLOUT)
        sent = upstream_requests(envoy.admin_url, (scenarios.BASELINE, scenarios.CANDIDATE))
        self._step("stopping")
        self._stop_all()
        return DemoOutcome(
            self.progress, weights, sent, report, report_error, duration, self._exit_codes
        )

    def _service(self, name: str, behaviour: list[str]) -> Child:
        argv = [sys.executable, "-m", "controller.demo.service", name, *behaviour]
        return self.children.start(name, argv)

    def _wait_served(self, gateway_url: str, timeout_s: float = 20.0) -> None:
        """Wait for a first 200 through Envoy (its route configuration arrived)."""
        deadline = time.monotonic() + timeout_s
        last = "no reply"
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                reply = httpx.get(f"{gateway_url}{scenarios.ROUTE_PREFIX}/1", timeout=2.0)
                if reply.status_code == 200:
                    return
                last = f"HTTP {reply.status_code}"
            self._check_children()
            time.sleep(0.1)
        raise DemoError(f"Envoy did not serve the route within {timeout_s:g} s: {last}")

    def _check_children(self) -> None:
        dead = self.children.dead()
        if dead:
            raise DemoError("\n".join(c.describe() for c in dead))

    async def _roll(
        self, store: SqliteRolloutStore, gateway_url: str, policy_path: Path, text: str
    ) -> None:
        load = Load(gateway_url, self.options.rate)
        load.start()
        self.progress.load = load.figures
        try:
            policy = load_policy(text, str(policy_path))
            initial, event = start_state(policy, time.time(), f"{getpass.getuser()} (demo)")
            source = PolicySource(str(policy_path), None, False, text)
            await asyncio.to_thread(store.create, scenarios.ROLLOUT, policy, source, initial, event)
            deadline = time.monotonic() + self.options.timeout_s
            seen = 0
            while True:
                rollout = await asyncio.to_thread(store.get, scenarios.ROLLOUT)
                events = await asyncio.to_thread(store.history, scenarios.ROLLOUT)
                self.progress.rollout, self.progress.events = rollout, events
                for new in events[seen:]:
                    self.on_event(new)
                seen = len(events)
                rate, upstreams = load.recent()
                self.progress.recent_rate = rate
                self.progress.recent_by_upstream = dict(upstreams)
                self.on_progress(self.progress)
                if rollout.state.terminal:
                    return
                self._check_children()
                if time.monotonic() > deadline:
                    raise DemoError(
                        f"the rollout did not end within {self.options.timeout_s:g} s "
                        f"(phase {rollout.state.phase}: {rollout.state.reason}); logs in "
                        f"{self.workdir}"
                    )
                await asyncio.sleep(0.25)
        finally:
            await load.stop()

    def _report(self, store: SqliteRolloutStore, admin: str) -> tuple[Path | None, str | None]:
        # Imported here: plotly takes a while to import.
        from controller.report.collect import collect, write_report

        path = self.options.report or self.workdir / f"{scenarios.ROLLOUT}-report.html"
        try:
            write_report(collect(store, scenarios.ROLLOUT, admin), path)
        except OSError as exc:
            return None, f"cannot write the report to {path}: {exc}"
        return path.resolve(), None

    def _stop_all(self) -> None:
        names = {c.pid: c.name for c in self.children.started}
        codes = self.children.stop_all()
        for pid, name in reversed(names.items()):
            self._exit_codes.append({"name": name, "pid": pid, "exit_code": codes.get(pid)})
