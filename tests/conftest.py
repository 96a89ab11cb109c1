"""Suite-wide pytest options and fixtures: ``--e2e`` enables the end-to-end suite
(``tests/e2e``); ``prometheus_factory`` starts a real Prometheus; ``kube`` a fake Kubernetes
API server."""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator
from pathlib import Path

import prometheus_fixture
import pytest
from fakekube import FakeKube
from prometheus_fixture import Prometheus


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--e2e",
        action="store_true",
        default=False,
        help="run the end-to-end suite (real Envoy, real upstreams, real traffic)",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--e2e"):
        return
    skip = pytest.mark.skip(reason="end-to-end suite: run with --e2e")
    for item in items:
        if "e2e" in item.keywords:
            item.add_marker(skip)


# --- a real Prometheus (tests/prometheus_fixture.py) -----------------------------------------

_FIRST_PROMETHEUS = pytest.StashKey[int]()


@pytest.fixture
def prometheus_factory(tmp_path: Path) -> Iterator[Callable[..., Prometheus]]:
    """Start real Prometheus servers owned by the test:
    ``factory([ScrapeTarget(job, "127.0.0.1:port", "/stats/prometheus")], interval_s=1.0)``.

    Skips without the binary (fails under ``CI=true``); stops them at teardown (SIGTERM, then
    SIGKILL). A module that shares one Prometheus uses :func:`prometheus_fixture.factory`.
    """
    with prometheus_fixture.factory(tmp_path) as start:
        yield start


def pytest_runtest_setup(item: pytest.Item) -> None:
    item.stash[_FIRST_PROMETHEUS] = len(prometheus_fixture.INSTANCES)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """A failing test gets the log tails of the Prometheus servers it started or shared (the
    e2e suite's own hook already shows those of every process its tests ran)."""
    report = yield
    if report.failed and report.when in ("setup", "call") and "e2e" not in item.keywords:
        first = item.stash.get(_FIRST_PROMETHEUS, 0)
        for index, instance in enumerate(prometheus_fixture.INSTANCES):
            if index >= first or instance.proc.alive():
                report.sections.append((f"log tail: {instance.proc.name}", instance.logs(60)))
    return report


# --- a fake Kubernetes API server (tests/fakekube) ---------------------------------------------


@pytest.fixture
def kube() -> Iterator[FakeKube]:
    """A fake Kubernetes API server for one test (driven through the official client), stopped
    after it."""
    server = FakeKube.start()
    try:
        yield server
    finally:
        server.stop()
