"""Leader election decisions over a ``coordination.k8s.io/v1`` Lease: pure, no I/O, no clock.

One round of the election (what client-go's ``tryAcquireOrRenew`` decides, in
``k8s.io/client-go/tools/leaderelection``) is :func:`decide`: given the Lease's record, the
local time at which this replica first saw that record, and the local time now, it says
whether to acquire, renew, or follow, and which record to write. The I/O around it (read, CAS
write on ``resourceVersion``, stepping down) is :mod:`controller.k8s.leader`.

Expiry is judged on *locally observed* time, never on the holder's ``renewTime``: a record is
expired when this replica has seen it unchanged for ``leaseDurationSeconds`` by its own clock.
That makes the election immune to clock skew between replicas (not to clock *rate* skew; the
ratio ``lease_duration_s / renew_deadline_s`` bounds the rate skew tolerated, as client-go's
package documentation explains).

Times are epoch seconds (float) handed in by the caller. On the wire ``acquireTime`` and
``renewTime`` are ``MicroTime`` (RFC 3339 with microseconds, UTC, e.g.
``2026-01-02T03:04:05.123456Z``) and ``leaseDurationSeconds`` an integer.

Sources: Kubernetes API reference, ``coordination.k8s.io/v1`` ``LeaseSpec``; client-go
``tools/leaderelection/leaderelection.go`` and ``resourcelock/leaselock.go`` (semantics).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

JITTER_FACTOR = 1.2
"""Candidates wait ``retry_period_s * (1 + U(0, JITTER_FACTOR))`` between attempts (client-go's
``JitterFactor``); the renew deadline must leave room for one such wait."""

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, kw_only=True)
class LeaseConfig:
    """Who competes for which Lease, and how fast.

    ``lease_duration_s``: how long followers wait, after last seeing the record change, before
    taking the lease (written as ``leaseDurationSeconds``, rounded *up* to whole seconds since
    the API field is an integer). ``renew_deadline_s``: how long the leader keeps retrying a
    failed renewal before it stops leading; must be below ``lease_duration_s`` so the leader
    stops before anyone else may start. ``retry_period_s``: the wait between attempts. Defaults
    are client-go's (15 s, 10 s, 2 s).

    Raises ``ValueError`` (naming the field) on an empty name/namespace/identity, a
    non-positive duration, ``renew_deadline_s >= lease_duration_s`` or
    ``renew_deadline_s <= JITTER_FACTOR * retry_period_s`` (client-go's checks).
    """

    identity: str
    name: str = "sluice-controller"
    namespace: str = "sluice"
    lease_duration_s: float = 15.0
    renew_deadline_s: float = 10.0
    retry_period_s: float = 2.0

    def __post_init__(self) -> None:
        for field in ("identity", "name", "namespace"):
            if not getattr(self, field):
                raise ValueError(f"LeaseConfig.{field} must not be empty")
        for field in ("lease_duration_s", "renew_deadline_s", "retry_period_s"):
            value = getattr(self, field)
            if not (value > 0 and math.isfinite(value)):
                raise ValueError(f"LeaseConfig.{field} must be a positive number, got {value!r}")
        if self.renew_deadline_s >= self.lease_duration_s:
            raise ValueError(
                "LeaseConfig.renew_deadline_s must be less than lease_duration_s "
                f"({self.renew_deadline_s} >= {self.lease_duration_s}): the leader must stop "
                "before its lease can expire for others"
            )
        if self.renew_deadline_s <= JITTER_FACTOR * self.retry_period_s:
            raise ValueError(
                "LeaseConfig.renew_deadline_s must be greater than "
                f"{JITTER_FACTOR} * retry_period_s ({self.renew_deadline_s} <= "
                f"{JITTER_FACTOR * self.retry_period_s})"
            )


@dataclass(frozen=True)
class LeaseRecord:
    """The election state a Lease's ``spec`` holds.

    ``holder``: ``holderIdentity`` (``None`` when empty or absent: anyone may acquire).
    ``lease_duration_s``: ``leaseDurationSeconds``. ``acquire_time`` / ``renew_time``: epoch
    seconds from ``acquireTime`` / ``renewTime`` (informational: expiry is judged on local
    observation). ``transitions``: ``leaseTransitions``, +1 each time the holder changes.
    """

    holder: str | None
    lease_duration_s: float
    acquire_time: float | None
    renew_time: float | None
    transitions: int

    def to_spec(self) -> dict[str, Any]:
        """The ``LeaseSpec`` JSON dict (camelCase); ``holderIdentity`` omitted when ``None``,
        ``leaseDurationSeconds`` rounded up to an integer (at least 1)."""
        spec: dict[str, Any] = {
            "leaseDurationSeconds": max(1, math.ceil(self.lease_duration_s)),
            "leaseTransitions": self.transitions,
        }
        if self.holder:
            spec["holderIdentity"] = self.holder
        if self.acquire_time is not None:
            spec["acquireTime"] = format_micro_time(self.acquire_time)
        if self.renew_time is not None:
            spec["renewTime"] = format_micro_time(self.renew_time)
        return spec

    @classmethod
    def from_spec(cls, spec: dict[str, Any] | None) -> LeaseRecord:
        """Read a ``LeaseSpec`` JSON dict; absent fields read as empty (no holder, duration 0,
        no times, 0 transitions). Raises ``ValueError`` on a malformed time or number."""
        spec = spec or {}
        acquire = spec.get("acquireTime")
        renew = spec.get("renewTime")
        return cls(
            holder=spec.get("holderIdentity") or None,
            lease_duration_s=float(spec.get("leaseDurationSeconds") or 0),
            acquire_time=parse_micro_time(acquire) if acquire else None,
            renew_time=parse_micro_time(renew) if renew else None,
            transitions=int(spec.get("leaseTransitions") or 0),
        )


def format_micro_time(t: float) -> str:
    """Epoch seconds → Kubernetes ``MicroTime``: RFC 3339, six fractional digits, ``Z``."""
    moment = _EPOCH + timedelta(microseconds=round(t * 1_000_000))
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_micro_time(text: str) -> float:
    """RFC 3339 (``MicroTime`` or ``Time``: any fraction length, ``Z`` or an offset) → epoch
    seconds. Raises ``ValueError`` when it is not RFC 3339 with a zone."""
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        raise ValueError(f"time {text!r} has no zone (RFC 3339 requires one)")
    return (moment - _EPOCH) / timedelta(seconds=1)


@dataclass(frozen=True)
class Observation:
    """What this replica last saw of the Lease: its ``resourceVersion`` and record, and the
    local time (epoch s) it *first* saw that version. Expiry counts from ``observed_at``."""

    resource_version: str | None
    record: LeaseRecord | None
    observed_at: float


def observe(
    previous: Observation | None,
    resource_version: str | None,
    record: LeaseRecord | None,
    now: float,
) -> Observation:
    """Fold a fresh read into the observation: the clock restarts only when the Lease changed.

    A change is a new ``resourceVersion`` (any write, even one that rewrote the same record,
    proves its writer alive) or a different record; an unchanged Lease keeps the first
    ``observed_at``, so a holder that stopped renewing expires ``lease_duration_s`` later.
    """
    if (
        previous is not None
        and previous.resource_version == resource_version
        and previous.record == record
    ):
        return previous
    return Observation(resource_version, record, now)


@dataclass(frozen=True)
class Decision:
    """One round's outcome.

    ``action``: ``"acquire"`` (write ``write`` to take the lease: create it when there was no
    Lease, else a CAS update), ``"renew"`` (this replica holds it: write ``write``), or
    ``"follow"`` (someone else holds an unexpired lease: write nothing). ``holder``: who holds
    the lease as observed (``None``: nobody). ``expires_at``: for ``follow``, the local time
    (epoch s) from which this replica may take the lease if the record stays unchanged.
    """

    action: Literal["acquire", "renew", "follow"]
    holder: str | None
    write: LeaseRecord | None = None
    expires_at: float | None = None


def decide(
    record: LeaseRecord | None,
    observed_at: float,
    now: float,
    cfg: LeaseConfig,
    *,
    wall_now: float | None = None,
) -> Decision:
    """Decide one election round (client-go ``tryAcquireOrRenew``, without the I/O).

    ``record``: the Lease's record, ``None`` when the Lease does not exist. ``observed_at``:
    local time (s) this replica first saw ``record`` (see :func:`observe`). ``now``: local
    time (s) on the same clock. The record's own ``lease_duration_s`` (what its holder
    promised) bounds its validity, counted from ``observed_at``; the record's timestamps are
    never compared with the local clock. ``wall_now``: epoch seconds to write as
    ``acquireTime``/``renewTime`` when ``observed_at``/``now`` come from a monotonic clock
    (default: ``now``).

    - no Lease → acquire (create; transitions 0);
    - held by ``cfg.identity`` → renew (acquire time and transitions kept);
    - no holder (released) → acquire, transitions + 1;
    - held by another, ``now < observed_at + lease_duration`` → follow;
    - held by another, expired → acquire, transitions + 1.
    """
    stamp = now if wall_now is None else wall_now
    mine = LeaseRecord(cfg.identity, cfg.lease_duration_s, stamp, stamp, 0)
    if record is None:
        return Decision("acquire", None, mine)
    if record.holder == cfg.identity:
        acquired = record.acquire_time if record.acquire_time is not None else stamp
        kept = replace(mine, acquire_time=acquired, transitions=record.transitions)
        return Decision("renew", cfg.identity, kept)
    expires_at = observed_at + record.lease_duration_s
    if record.holder is not None and now < expires_at:
        return Decision("follow", record.holder, None, expires_at)
    return Decision("acquire", record.holder, replace(mine, transitions=record.transitions + 1))


def release_record(record: LeaseRecord | None, now: float, cfg: LeaseConfig) -> LeaseRecord | None:
    """The record that gives the lease up on a graceful stop (client-go ``release``): no holder,
    ``leaseDurationSeconds`` 1, times ``now``, transitions kept; ``None`` when the lease is not
    this replica's (nothing to release)."""
    if record is None or record.holder != cfg.identity:
        return None
    return LeaseRecord(None, 1.0, now, now, record.transitions)
