"""Fixtures for the Kubernetes tests: ``kube``, a started fake API server (tests/fakekube)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fakekube import FakeKube


@pytest.fixture
def kube() -> Iterator[FakeKube]:
    """A fake Kubernetes API server for one test, stopped after it."""
    server = FakeKube.start()
    try:
        yield server
    finally:
        server.stop()
