"""Suite-wide pytest options: ``--e2e`` enables the end-to-end suite (``tests/e2e``)."""

from __future__ import annotations

import pytest


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
