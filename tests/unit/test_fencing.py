"""The fence of a replica (controller.runtime.fencing) on a hand-driven clock."""

from __future__ import annotations

import logging

import pytest
from kubernetes.client.exceptions import ApiException

from controller.runtime.fencing import MAX_ERROR_CHARS, describe, lease_fence
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

    fence = lease_fence(close, renew_deadline_s=10.0, lease_duration_s=15.0, monotonic=clock)
    read, report = fence.outcome(STORE_READ), fence.outcome(REPORT_RENEWAL)
    caplog.set_level(logging.WARNING, logger="controller.runtime.fencing")
    clock.now += 9.0
    read(None)
    report(ApiException(status=503, reason="Service Unavailable"))
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
    clock.now += 14.0
    fence.check()
    assert len(closed) == 2  # again after the lease duration: reconnects may come back here

    read(None)
    report(None)
    assert not fence.check().stale
    assert fence.reason() is None
    fence.check()
    changes = [r.getMessage() for r in caplog.records if "this replica is" in r.getMessage()]
    assert len(changes) == 2
    assert "stale, fencing it" in changes[0]
    assert "current again" in changes[1]


def test_an_unknown_source_is_refused_when_the_hook_is_made() -> None:
    fence = lease_fence(lambda _: 0, renew_deadline_s=10.0, lease_duration_s=15.0)
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
