"""The fence of a replica (controller.runtime.fencing) on a hand-driven clock."""

from __future__ import annotations

import logging

import pytest
from kubernetes.client.exceptions import ApiException

from controller.runtime.fencing import (
    MAX_ERROR_CHARS,
    RECLOSE_S,
    describe,
    fence_max_age_s,
    lease_fence,
)
from controller.runtime.freshness import REPORT_RENEWAL, STORE_READ


class Clock:
    def __init__(self) -> None:
        self.now = 500.0

    def __call__(self) -> float:
        return self.now


def test_the_fence_closes_streams_with_the_reason_and_logs_each_change_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    closed: list[str] = []

    def close(reason: str) -> int:
        closed.append(reason)
        return 3

    fence = lease_fence(
        close, renew_deadline_s=10.0, lease_duration_s=15.0, check_s=1.0, monotonic=clock
    )
    read, report = fence.outcome(STORE_READ), fence.outcome(REPORT_RENEWAL)
    caplog.set_level(logging.WARNING, logger="controller.runtime.fencing")
    clock.now += 9.0
    read(None, clock.now)
    report(ApiException(status=503, reason="Service Unavailable"), clock.now)
    assert not fence.check().stale
    assert (fence.stale(), fence.reason(), closed) == (False, None, [])

    clock.now += 2.0  # the report: 11 s without a success
    assert fence.check().stale
    assert fence.stale()
    reason = fence.reason()
    assert reason is not None
    assert "no successful report renewal for 11.0 s" in reason
    assert "ApiException: 503 Service Unavailable" in reason
    assert closed == [f"this xDS server is stale: {reason}"]
    clock.now += 1.0
    fence.check()
    assert len(closed) == 1  # not at every check
    clock.now += RECLOSE_S - 1.0
    fence.check()
    assert len(closed) == 2  # again soon: reconnects may land here until the pod leaves

    read(None, clock.now)
    report(None, clock.now)
    assert not fence.check().stale
    assert fence.reason() is None
    fence.check()
    changes = [r.getMessage() for r in caplog.records if "this replica is" in r.getMessage()]
    assert len(changes) == 2
    assert "stale, fencing it" in changes[0]
    assert "current again" in changes[1]


def test_a_success_counts_from_the_start_of_its_attempt() -> None:
    """A renewal that took 4 s proves the API answered after its start, and the report it
    wrote is dated then: the leader drops it a lease duration after that date."""
    clock = Clock()
    fence = lease_fence(
        lambda _: 0, renew_deadline_s=10.0, lease_duration_s=15.0, check_s=1.0, monotonic=clock
    )
    read, report = fence.outcome(STORE_READ), fence.outcome(REPORT_RENEWAL)
    started = clock.now + 5.0
    clock.now = started + 4.0  # the answer came 4 s after the request
    read(None, clock.now)
    report(None, started)
    clock.now = started + 10.5
    assert fence.check().stale  # 10.5 s since the report's date, not 6.5 s since its answer


def test_the_fence_acts_before_the_leader_drops_the_report() -> None:
    assert fence_max_age_s(10.0, 15.0, 1.0) == 10.0
    # A renew deadline close to the lease: the fence, checked every second, comes earlier.
    assert fence_max_age_s(10.0, 11.0, 1.0) == 9.5
    with pytest.raises(ValueError, match="no time to fence"):
        fence_max_age_s(0.5, 1.2, 1.0)


def test_an_unknown_source_is_refused_when_the_hook_is_made() -> None:
    fence = lease_fence(lambda _: 0, renew_deadline_s=10.0, lease_duration_s=15.0, check_s=1.0)
    with pytest.raises(ValueError, match="unknown source"):
        fence.outcome("lease")


def test_errors_are_described_on_one_short_line() -> None:
    assert describe(ApiException(status=403, reason="Forbidden")) == "ApiException: 403 Forbidden"
    assert describe(ConnectionRefusedError(111, "refused")) == (
        "ConnectionRefusedError: [Errno 111] refused"
    )
    assert describe(TimeoutError()) == "TimeoutError"
    long = describe(RuntimeError("x\n" * 500))
    assert "\n" not in long
    assert len(long) == len("RuntimeError: ") + MAX_ERROR_CHARS
