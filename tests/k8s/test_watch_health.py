"""When a watch counts as current (controller.k8s.watch_health): pure, times passed in."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import controller.k8s.cache_freshness
import controller.k8s.watch_health
from controller.k8s.watch_health import WatchHealth


def health(down_since: float | None = 0.0) -> WatchHealth:
    return WatchHealth(max_down_s=3.0, max_silent_s=45.0, proven_after_s=1.0, down_since=down_since)


def test_down_until_the_first_stream_proves_healthy() -> None:
    h = health(down_since=0.0)
    assert h.fit(3.0)
    assert not h.fit(3.1)  # the first list took too long
    h.opened(3.2)
    assert not h.fit(3.5)  # answered: not proof (its backlog, or its 410, may follow)
    h.progress(3.6)
    assert h.fit(3.6)


def test_a_stream_open_for_a_while_is_healthy_without_delivering_anything() -> None:
    h = health(down_since=0.0)
    h.opened(3.2)
    assert h.fit(4.2)
    assert h.down_since is None


def test_streams_ending_right_after_their_answer_never_end_the_outage() -> None:
    """Each answered, each ended at once (an ERROR event, an empty stream): down from the
    first end, whatever the number of answers."""
    h = health(down_since=None)
    h.opened(0.0)
    h.progress(1.0)
    h.ended(10.0)  # a healthy stream's end: the outage starts here
    for at in (10.5, 11.0, 11.5, 12.0, 12.5, 13.0):
        h.opened(at)
        assert h.fit(at) is (at - 10.0 <= 3.0)
        h.ended(at + 0.01)
    h.opened(13.5)
    assert not h.fit(13.6)
    assert h.down_since == 10.0


def test_a_routine_reconnect_of_an_idle_watch_stays_fit() -> None:
    h = health(down_since=None)
    h.opened(0.0)
    h.progress(0.5)
    h.ended(30.0)  # the server's timeoutSeconds
    h.opened(30.01)
    for at in (30.02, 30.5, 31.0, 60.0):
        assert h.fit(at)


def test_a_stream_silent_longer_than_max_silent_is_unfit() -> None:
    h = health(down_since=0.0)
    h.opened(1.0)
    h.progress(2.0)
    assert h.fit(47.0)
    assert not h.fit(47.1)  # connected, yet nothing for over 45 s
    h.progress(48.0)  # a bookmark
    assert h.fit(48.0)


def test_a_silent_stream_that_ends_leaves_the_watch_unfit_until_a_new_one_proves_healthy() -> None:
    """The silent stream hits its read timeout (45 s): its end must not open a fresh 3 s of
    trust in what it last delivered."""
    h = health(down_since=0.0)
    h.opened(1.0)
    h.progress(3.0)
    assert not h.fit(48.1)
    h.ended(48.2)
    for at in (48.3, 50.0, 51.0):
        assert not h.fit(at)
    h.opened(52.0)
    assert not h.fit(52.5)  # answered, not proven
    h.progress(52.6)
    assert h.fit(52.6)


@pytest.mark.parametrize("module", [controller.k8s.watch_health, controller.k8s.cache_freshness])
def test_the_cache_decisions_stay_pure(module: object) -> None:
    """No I/O and no clock (pyproject's "pure core" import-linter contract does not list
    these modules; this holds them to the same rule)."""
    tree = ast.parse(Path(str(getattr(module, "__file__", ""))).read_text())
    imported = {
        alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    } | {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert imported <= {"__future__", "dataclasses", "typing", "collections.abc"}, imported
