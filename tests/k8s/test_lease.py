"""Pure leader election decisions (controller.k8s.lease): every branch of decide, skew
immunity through locally observed time, transitions, and the Lease spec round trip."""

from __future__ import annotations

import pytest

from controller.k8s.lease import (
    LeaseConfig,
    LeaseRecord,
    decide,
    format_micro_time,
    observe,
    parse_micro_time,
    release_record,
)

CFG = LeaseConfig(identity="a", lease_duration_s=15, renew_deadline_s=10, retry_period_s=2)
T0 = 1_800_000_000.0


def held_by(holder: str | None, *, renew: float = T0, transitions: int = 3) -> LeaseRecord:
    return LeaseRecord(holder, 15.0, T0 - 100, renew, transitions)


def test_no_lease_is_acquired_by_creating_it() -> None:
    d = decide(None, observed_at=T0, now=T0, cfg=CFG)
    assert d.action == "acquire"
    assert d.write == LeaseRecord("a", 15.0, T0, T0, 0)


def test_own_lease_is_renewed_keeping_acquire_time_and_transitions() -> None:
    rec = held_by("a", renew=T0 - 5)
    # Even long after it was observed: the holder renews its own lease (client-go IsLeader).
    d = decide(rec, observed_at=T0 - 1000, now=T0, cfg=CFG)
    assert d.action == "renew"
    assert d.holder == "a"
    assert d.write == LeaseRecord("a", 15.0, T0 - 100, T0, 3)


def test_own_lease_without_acquire_time_gets_now() -> None:
    rec = LeaseRecord("a", 15.0, None, None, 0)
    d = decide(rec, observed_at=T0, now=T0 + 1, cfg=CFG)
    assert d.write is not None
    assert d.write.acquire_time == T0 + 1


def test_released_lease_is_acquired_at_once_counting_a_transition() -> None:
    rec = LeaseRecord(None, 1.0, T0, T0, 4)
    d = decide(rec, observed_at=T0, now=T0, cfg=CFG)
    assert d.action == "acquire"
    assert d.holder is None
    assert d.write == LeaseRecord("a", 15.0, T0, T0, 5)


def test_foreign_unexpired_lease_is_followed() -> None:
    d = decide(held_by("b"), observed_at=T0, now=T0 + 14.9, cfg=CFG)
    assert d.action == "follow"
    assert d.holder == "b"
    assert d.write is None
    assert d.expires_at == T0 + 15


def test_foreign_expired_lease_is_taken_counting_a_transition() -> None:
    d = decide(held_by("b"), observed_at=T0, now=T0 + 15, cfg=CFG)
    assert d.action == "acquire"
    assert d.holder == "b"
    assert d.write == LeaseRecord("a", 15.0, T0 + 15, T0 + 15, 4)


def test_expiry_uses_the_holders_promised_duration_not_ours() -> None:
    rec = LeaseRecord("b", 60.0, T0, T0, 0)
    assert decide(rec, observed_at=T0, now=T0 + 30, cfg=CFG).action == "follow"
    assert decide(rec, observed_at=T0, now=T0 + 60, cfg=CFG).action == "acquire"


@pytest.mark.parametrize("holder_skew_s", [-3600.0, -20.0, 0.0, 20.0, 3600.0])
def test_holder_clock_skew_does_not_matter(holder_skew_s: float) -> None:
    # The holder's clock is off by holder_skew_s: its renewTime says so, but only local
    # observation counts. Fresh (just observed) → follow; observed 15 s ago unchanged → take.
    rec = held_by("b", renew=T0 + holder_skew_s)
    assert decide(rec, observed_at=T0, now=T0 + 1, cfg=CFG).action == "follow"
    assert decide(rec, observed_at=T0, now=T0 + 15.5, cfg=CFG).action == "acquire"


def test_monotonic_local_time_with_wall_stamps() -> None:
    # Expiry on a monotonic clock (seconds since boot), stamps in epoch seconds.
    rec = held_by("b")
    follow = decide(rec, observed_at=100.0, now=114.0, cfg=CFG, wall_now=T0)
    assert (follow.action, follow.expires_at) == ("follow", 115.0)
    take = decide(rec, observed_at=100.0, now=115.0, cfg=CFG, wall_now=T0 + 1)
    assert take.write == LeaseRecord("a", 15.0, T0 + 1, T0 + 1, 4)
    own = decide(LeaseRecord("a", 15.0, None, T0, 0), 100.0, 200.0, CFG, wall_now=T0 + 2)
    assert own.write == LeaseRecord("a", 15.0, T0 + 2, T0 + 2, 0)


def test_observation_clock_restarts_only_on_change() -> None:
    rec = held_by("b")
    first = observe(None, "10", rec, T0)
    assert first.observed_at == T0
    same = observe(first, "10", rec, T0 + 9)
    assert same.observed_at == T0  # unchanged: the holder is not proven alive
    renewed = held_by("b", renew=T0 + 2)
    moved = observe(same, "11", renewed, T0 + 10)
    assert moved.observed_at == T0 + 10
    # Any write (new resourceVersion) proves the writer alive, even with an identical record.
    rewritten = observe(moved, "12", renewed, T0 + 11)
    assert rewritten.observed_at == T0 + 11
    # So a holder that keeps renewing is never taken over...
    assert decide(rewritten.record, rewritten.observed_at, T0 + 20, CFG).action == "follow"
    # ...and one that stopped is taken lease_duration after it was last seen changing.
    assert decide(rewritten.record, rewritten.observed_at, T0 + 26, CFG).action == "acquire"


def test_transitions_count_changes_of_holder_only() -> None:
    a = CFG
    b = LeaseConfig(identity="b", lease_duration_s=15, renew_deadline_s=10, retry_period_s=2)
    created = decide(None, T0, T0, a).write
    assert created is not None
    assert created.transitions == 0
    renewed = decide(created, T0, T0 + 2, a).write
    assert renewed is not None
    assert renewed.transitions == 0
    taken = decide(renewed, T0 + 2, T0 + 20, b).write
    assert taken is not None
    assert (taken.holder, taken.transitions) == ("b", 1)
    released = release_record(taken, T0 + 21, b)
    assert released == LeaseRecord(None, 1.0, T0 + 21, T0 + 21, 1)
    back = decide(released, T0 + 21, T0 + 21, a).write
    assert back is not None
    assert (back.holder, back.transitions) == ("a", 2)


def test_release_only_of_ones_own_lease() -> None:
    assert release_record(None, T0, CFG) is None
    assert release_record(held_by("b"), T0, CFG) is None
    assert release_record(held_by(None), T0, CFG) is None
    assert release_record(held_by("a"), T0, CFG) == LeaseRecord(None, 1.0, T0, T0, 3)


def test_spec_round_trip_and_wire_format() -> None:
    rec = LeaseRecord("pod-1", 15.0, T0 + 0.123456, T0 + 7.5, 2)
    spec = rec.to_spec()
    assert spec == {
        "holderIdentity": "pod-1",
        "leaseDurationSeconds": 15,
        "acquireTime": "2027-01-15T08:00:00.123456Z",
        "renewTime": "2027-01-15T08:00:07.500000Z",
        "leaseTransitions": 2,
    }
    assert isinstance(spec["leaseDurationSeconds"], int)
    back = LeaseRecord.from_spec(spec)
    assert back.holder == "pod-1"
    assert back.transitions == 2
    assert back.acquire_time == pytest.approx(T0 + 0.123456, abs=1e-6)
    assert back.renew_time == pytest.approx(T0 + 7.5, abs=1e-6)


def test_spec_duration_is_rounded_up_to_whole_seconds() -> None:
    # The API field is an integer; rounding down would let others take the lease early.
    assert LeaseRecord("a", 1.5, None, None, 0).to_spec()["leaseDurationSeconds"] == 2
    assert LeaseRecord("a", 0.2, None, None, 0).to_spec()["leaseDurationSeconds"] == 1


def test_empty_or_released_spec_reads_as_no_holder() -> None:
    assert LeaseRecord.from_spec(None) == LeaseRecord(None, 0.0, None, None, 0)
    assert LeaseRecord.from_spec({"holderIdentity": ""}).holder is None
    spec = LeaseRecord(None, 1.0, T0, T0, 5).to_spec()
    assert "holderIdentity" not in spec
    assert LeaseRecord.from_spec(spec).holder is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2027-01-15T08:00:00.123456Z", T0 + 0.123456),
        ("2027-01-15T08:00:00Z", T0),
        ("2027-01-15T10:00:00.5+02:00", T0 + 0.5),
        ("2027-01-15T08:00:00.123456789Z", T0 + 0.123456),
    ],
)
def test_parse_rfc3339(text: str, expected: float) -> None:
    assert parse_micro_time(text) == pytest.approx(expected, abs=1e-6)


def test_parse_rejects_times_without_zone_and_garbage() -> None:
    with pytest.raises(ValueError, match="zone"):
        parse_micro_time("2027-01-15T08:00:00")
    with pytest.raises(ValueError, match="yesterday"):
        parse_micro_time("yesterday")


def test_format_is_microsecond_rfc3339() -> None:
    assert format_micro_time(0) == "1970-01-01T00:00:00.000000Z"
    assert format_micro_time(T0 + 0.0000004) == "2027-01-15T08:00:00.000000Z"


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"identity": ""}, "identity"),
        ({"name": ""}, "name"),
        ({"namespace": ""}, "namespace"),
        ({"lease_duration_s": 0}, "lease_duration_s"),
        ({"retry_period_s": -1}, "retry_period_s"),
        ({"renew_deadline_s": float("nan")}, "renew_deadline_s"),
        ({"renew_deadline_s": 15}, "less than lease_duration_s"),
        ({"retry_period_s": 9}, "greater than 1.2"),
    ],
)
def test_config_validation(kwargs: dict[str, object], field: str) -> None:
    args: dict[str, object] = {"identity": "a"} | kwargs
    with pytest.raises(ValueError, match=field):
        LeaseConfig(**args)  # type: ignore[arg-type]


def test_config_defaults_are_client_gos() -> None:
    cfg = LeaseConfig(identity="pod")
    assert (cfg.name, cfg.namespace) == ("sluice-controller", "sluice")
    assert (cfg.lease_duration_s, cfg.renew_deadline_s, cfg.retry_period_s) == (15, 10, 2)
