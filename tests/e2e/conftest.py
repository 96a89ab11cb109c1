"""Fixtures of the end-to-end suite: real upstreams, a real controller, real Envoys.

Cost model (2 cores): the controller takes ~3 s to start (imports), Envoy ~0.3 s, an upstream
~0.1 s. So the upstreams and one controller are shared by the tests of the module (each test
sets the weights it needs and names its own Envoy node), while the test that restarts the
controller starts its own with :func:`controller_factory`. Every process is stopped by the
fixture that started it (SIGTERM, then SIGKILL after a grace period).

A failing test gets the log tails of the processes it ran (and of the shared ones still
running) appended to its report.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Generator, Iterator
from pathlib import Path

import pytest

from .harness import (
    BASELINE,
    CANDIDATE,
    PROCESSES,
    Controller,
    Envoy,
    Protocol,
    Stack,
    Upstream,
    write_gateway,
)

_FIRST_PROCESS = pytest.StashKey[int]()
_node_numbers = itertools.count(1)


# --- failure reports -------------------------------------------------------------------------


def pytest_runtest_setup(item: pytest.Item) -> None:
    item.stash[_FIRST_PROCESS] = len(PROCESSES)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.failed and report.when in ("setup", "call"):
        first = item.stash.get(_FIRST_PROCESS, 0)
        for index, proc in enumerate(PROCESSES):
            if index >= first or proc.alive():
                report.sections.append((f"e2e log tail: {proc.name}", proc.logs(60)))
    return report


# --- processes -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def upstreams(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Upstream]]:
    """The baseline and candidate upstreams (real HTTP/1.1 servers, one process each)."""
    workdir = tmp_path_factory.mktemp("upstreams")
    started: dict[str, Upstream] = {}
    try:
        for name in (BASELINE, CANDIDATE):
            started[name] = Upstream.start(name, workdir)
        yield started
    finally:
        for upstream in started.values():
            upstream.stop()


@pytest.fixture(scope="module")
def gateway_file(tmp_path_factory: pytest.TempPathFactory, upstreams: dict[str, Upstream]) -> Path:
    """The gateway: listener ``http`` on 127.0.0.1:0, route ``comments`` = baseline/candidate."""
    path = tmp_path_factory.mktemp("gateway") / "gateway.yaml"
    return write_gateway(path, upstreams[BASELINE].port, upstreams[CANDIDATE].port)


@pytest.fixture(scope="module")
def shared_controller(
    tmp_path_factory: pytest.TempPathFactory, gateway_file: Path
) -> Iterator[Controller]:
    """One ``sluice serve`` for the module's tests that do not restart the controller."""
    workdir = tmp_path_factory.mktemp("controller")
    controller = Controller.start(workdir, gateway_file, workdir / "state.db")
    try:
        yield controller
    finally:
        controller.stop()


@pytest.fixture
def controller_factory(tmp_path: Path, gateway_file: Path) -> Iterator[Callable[..., Controller]]:
    """Start controllers owned by the test:
    ``factory(state_path=..., xds_port=0, name=..., gateway_path=...)``."""
    started: list[Controller] = []

    def start(
        *,
        state_path: Path | None = None,
        xds_port: int = 0,
        name: str = "controller",
        gateway_path: Path | None = None,
    ) -> Controller:
        controller = Controller.start(
            tmp_path,
            gateway_path or gateway_file,
            state_path or tmp_path / "state.db",
            xds_port=xds_port,
            name=f"{name}-{len(started) + 1}",
        )
        started.append(controller)
        return controller

    try:
        yield start
    finally:
        for controller in reversed(started):
            controller.stop()


@pytest.fixture(params=["sotw", "delta"])
def protocol(request: pytest.FixtureRequest) -> Protocol:
    """ADS flavour of the Envoy under test: state-of-the-world (GRPC) or Delta (DELTA_GRPC)."""
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def node_id(protocol: Protocol) -> str:
    """A node id unique in the session (the shared controller sees every test's Envoy)."""
    return f"e2e-{protocol}-{next(_node_numbers)}"


@pytest.fixture
def envoy_factory(tmp_path: Path) -> Iterator[Callable[..., Envoy]]:
    """Start Envoys owned by the test; each is live and its listener bound on return.

    ``factory(controller, node_id=..., protocol=..., listeners=True)``; Envoys are stopped at
    teardown. ``listeners=False``: an Envoy that subscribes to clusters only.
    """
    started: list[Envoy] = []

    def start(
        controller: Controller, *, node_id: str, protocol: Protocol, listeners: bool = True
    ) -> Envoy:
        envoy = Envoy.start(
            tmp_path,
            node_id=node_id,
            xds_port=controller.xds_port,
            protocol=protocol,
            name=f"envoy-{len(started) + 1}",
            listeners=listeners,
        )
        started.append(envoy)
        envoy.wait_live()
        if listeners:
            envoy.listener_port()
        return envoy

    try:
        yield start
    finally:
        for envoy in reversed(started):
            envoy.stop()


@pytest.fixture
def stack(
    shared_controller: Controller,
    envoy_factory: Callable[..., Envoy],
    node_id: str,
    protocol: Protocol,
) -> Stack:
    """The shared controller and a fresh Envoy of the test's protocol."""
    envoy = envoy_factory(shared_controller, node_id=node_id, protocol=protocol)
    return Stack(shared_controller, envoy)
