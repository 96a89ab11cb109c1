"""A replica's freshness (controller.runtime.freshness): pure decisions, time passed in."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import controller.runtime.freshness as module
from controller.runtime.freshness import REPORT_RENEWAL, STORE_READ, StoreFreshness

START = 1000.0


def tracker(max_age_s: float = 10.0, reclose_s: float = 15.0) -> StoreFreshness:
    return StoreFreshness(max_age_s, START, reclose_s)


def test_a_fresh_process_is_current_until_max_age_after_start() -> None:
    fresh = tracker()
    assert not fresh.stale(START)
    assert not fresh.stale(START + 10.0)  # "more than max_age": exactly max_age is current
    assert fresh.reason(START + 10.0) is None
    assert fresh.stale(START + 10.1)
    reason = fresh.reason(START + 10.1)
    assert reason is not None
    assert "no successful store read for 10.1 s" in reason
    assert "no successful report renewal for 10.1 s" in reason
    assert "may hang" in reason  # nothing failed: the calls never came back


def test_stale_when_one_source_has_not_succeeded_for_max_age() -> None:
    fresh = tracker()
    for t in range(1, 30):
        fresh.succeeded(STORE_READ, START + t)  # the store reads keep working
    fresh.succeeded(REPORT_RENEWAL, START + 2.0)
    assert not fresh.stale(START + 12.0)
    assert fresh.stale(START + 12.5)
    reason = fresh.reason(START + 12.5)
    assert reason is not None
    assert "report renewal" in reason
    assert "store read" not in reason


def test_a_success_resets_and_failures_alone_do_not_make_stale() -> None:
    fresh = tracker()
    fresh.failed(STORE_READ, START + 1.0, "ApiException(503)")
    assert not fresh.stale(START + 5.0)  # failing, but the last success is recent
    assert fresh.stale(START + 11.0)
    fresh.succeeded(STORE_READ, START + 11.0)
    fresh.succeeded(REPORT_RENEWAL, START + 11.0)
    assert not fresh.stale(START + 11.0)
    later = fresh.reason(START + 21.5)
    assert later is not None
    assert "ApiException" not in later  # the old error went with the success


def test_the_reason_names_what_failed_for_how_long_and_the_last_error() -> None:
    fresh = tracker()
    fresh.succeeded(STORE_READ, START + 30.0)
    fresh.succeeded(REPORT_RENEWAL, START + 30.0)
    fresh.failed(REPORT_RENEWAL, START + 31.0, "ConnectionRefusedError()")
    fresh.failed(REPORT_RENEWAL, START + 35.0, "ApiException(503)")
    fresh.succeeded(STORE_READ, START + 40.0)
    reason = fresh.reason(START + 42.0)
    assert reason == (
        "no successful report renewal for 12.0 s (failing for 11.0 s; last error: "
        "ApiException(503)) (limit 10 s)"
    )


def test_a_late_success_never_moves_the_record_backwards() -> None:
    fresh = tracker()
    fresh.succeeded(STORE_READ, START + 20.0)
    fresh.succeeded(STORE_READ, START + 5.0)  # a worker thread's answer, reported late
    fresh.succeeded(REPORT_RENEWAL, START + 20.0)
    assert not fresh.stale(START + 29.0)


def test_streams_close_on_becoming_stale_then_every_reclose_while_stale() -> None:
    fresh = tracker(max_age_s=10.0, reclose_s=15.0)
    first = fresh.check(START + 5.0)
    assert (first.stale, first.changed, first.close_streams) == (False, False, False)
    became = fresh.check(START + 11.0)
    assert (became.stale, became.changed, became.close_streams) == (True, True, True)
    assert became.reason is not None
    assert "store read" in became.reason
    still = fresh.check(START + 25.0)
    assert (still.stale, still.changed, still.close_streams) == (True, False, False)
    again = fresh.check(START + 26.0)
    assert (again.stale, again.changed, again.close_streams) == (True, False, True)
    assert not fresh.check(START + 40.0).close_streams
    fresh.succeeded(STORE_READ, START + 41.0)
    assert fresh.check(START + 41.5).stale  # the report is still overdue: both matter
    fresh.succeeded(REPORT_RENEWAL, START + 42.0)
    back = fresh.check(START + 42.0)
    assert (back.stale, back.changed, back.close_streams, back.reason) == (
        False,
        True,
        False,
        None,
    )
    assert not fresh.check(START + 43.0).changed
    # stale again later: closed at once, not after reclose_s from the last close
    relapse = fresh.check(START + 52.5)
    assert (relapse.stale, relapse.changed, relapse.close_streams) == (True, True, True)


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="positive"):
        StoreFreshness(0.0, START, 15.0)
    with pytest.raises(ValueError, match="positive"):
        StoreFreshness(10.0, START, 0.0)
    with pytest.raises(ValueError, match="source"):
        StoreFreshness(10.0, START, 15.0, sources=())
    with pytest.raises(ValueError, match="unknown source"):
        tracker().succeeded("lease", START)
    with pytest.raises(ValueError, match="unknown source"):
        tracker().failed("lease", START, "x")


def test_the_module_stays_pure() -> None:
    """No I/O and no clock: it imports nothing but dataclasses (pyproject's "pure core"
    import-linter contract does not list it; this holds it to the same rule)."""
    tree = ast.parse(Path(module.__file__).read_text())
    imported = {
        alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    } | {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert imported <= {"__future__", "dataclasses"}, imported
