"""The ``parity`` section of a rollout policy: what Envoy mirrors to the comparator and how the
comparator compares the baseline's and the candidate's replies (tap-compare).

Shape (YAML)::

    parity:
      mirror: 10%                        # share of the route's requests mirrored
      methods: [GET, HEAD]               # mirrored methods; others only with `sister`
      comparator: {cluster: sluice-parity}   # the gateway cluster of the comparator
      secondary: {cluster: comments-python-2}   # a second baseline replica: learns noise
      sister: {candidate: {cluster: comments-go-sister}}   # writes go here, never to prod
      shadowSuffix: true                 # Envoy appends -shadow to the mirror's Host
      compare:
        headers: [content-type]
        ignore: [/meta/generated_at, /items/*/request_id]   # JSON Pointers, * = any segment
        unordered: [/tags]
        absoluteTolerance: 0.001
      redact: [authorization, cookie]
      samples: 20
      timeout: 5s

Envoy's side is ``envoy.config.route.v3.RouteAction.RequestMirrorPolicy`` (fire-and-forget:
the user's response never waits for the mirror).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from pydantic import Field, field_validator

from controller.policy.model_base import PolicyModel, Side
from controller.policy.units import Duration, Percent, PercentRange, format_duration

SAFE_METHODS = ("GET", "HEAD")
"""Methods mirrored by default: re-sending them to the baseline and the candidate changes no
data (RFC 9110 section 9.2.1)."""

ROUTE_HEADER = "x-sluice-parity-route"
"""The request header Envoy adds to every mirrored request (the mirror policy's
``request_headers_mutations``, overwriting any the client sent): the route's name. The
comparator counts per route and strips it before forwarding. Defined here, once, because the
xDS side (which adds it) and the comparator (which reads it) may not import each other."""

_METHOD = r"^[A-Z]+$"
_POINTER = r"^(/([^~/]|~[01])*)*$"
"""A JSON Pointer (RFC 6901): empty (the whole document) or ``/``-separated reference tokens
with ``~0`` (``~``) and ``~1`` (``/``) escapes; a token ``*`` matches any key or index."""

MirrorShare = Annotated[Percent, PercentRange(gt=0, le=100, decimals=4)]
"""The mirrored share of the route's requests: Envoy takes it per million
(``runtime_fraction.default_value``, ``FractionalPercent.MILLION``)."""


class ParityCompare(PolicyModel):
    """How two replies are compared (the comparator's rules).

    Attributes:
        headers: response headers compared (case-insensitive); the others are ignored.
        ignore: JSON Pointers of body fields never compared (``*`` matches any key or array
            index), e.g. a generation timestamp.
        unordered: JSON Pointers of arrays compared as multisets (order ignored).
        absolute_tolerance: two numbers ``a``, ``b`` are equal when ``|a - b| <= absolute +
            relative * max(|a|, |b|)``; in the field's own unit.
        relative_tolerance: see ``absolute_tolerance``; a ratio (``1e-9``), not a percentage.
    """

    headers: tuple[str, ...] = ("content-type",)
    ignore: tuple[Annotated[str, Field(pattern=_POINTER)], ...] = ()
    unordered: tuple[Annotated[str, Field(pattern=_POINTER)], ...] = ()
    absolute_tolerance: float = Field(default=0.0, ge=0)
    relative_tolerance: float = Field(default=0.0, ge=0, lt=1)

    @field_validator("headers")
    @classmethod
    def _lower(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(name.lower() for name in value)


class SisterTargets(PolicyModel):
    """Where mirrored writes go: never to the production datastores.

    Attributes:
        candidate: a deployment of the candidate writing to its own (sister) datastores.
        baseline: the same for the baseline; without it, writes are exercised on the
            candidate's sister (its errors are seen) but not compared (no baseline reply
            exists that would not write twice to production).
    """

    candidate: Side
    baseline: Side | None = None


class ParityPolicy(PolicyModel):
    """Tap-compare for the route under rollout (see the module docstring for the shape).

    Attributes:
        mirror: percent of the route's requests Envoy mirrors to the comparator.
        methods: methods mirrored; only safe ones (GET, HEAD) unless ``sister`` is set.
        comparator: the gateway cluster where the comparator listens.
        secondary: a second baseline replica; differences between the two baseline replies
            are noise, not mismatches (Diffy's rule).
        sister: targets for writes (non-safe methods).
        shadow_suffix: Envoy appends ``-shadow`` to the mirrored request's Host (its
            default); ``false`` sets ``disable_shadow_host_suffix_append`` for a candidate
            that cannot accept it.
        compare: the comparison rules.
        redact: request and response headers whose values mismatch samples never keep.
        samples: mismatch samples kept per route (the newest).
        timeout: per forwarded request; a target slower than this is an error, not a reply.
    """

    mirror: MirrorShare = 10.0
    methods: tuple[Annotated[str, Field(pattern=_METHOD)], ...] = Field(
        default=SAFE_METHODS, min_length=1
    )
    comparator: Side = Side(cluster="sluice-parity")
    secondary: Side | None = None
    sister: SisterTargets | None = None
    shadow_suffix: bool = True
    compare: ParityCompare = ParityCompare()
    redact: tuple[str, ...] = ("authorization", "cookie", "set-cookie", "proxy-authorization")
    samples: int = Field(default=20, ge=0, le=1000)
    timeout: Duration = timedelta(seconds=5)

    @field_validator("methods")
    @classmethod
    def _safe_unless_sister(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        # The sister check needs `sister`, declared later: see PolicySpec's cross checks.
        return tuple(dict.fromkeys(value))

    @field_validator("redact")
    @classmethod
    def _lower(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(name.lower() for name in value)

    @field_validator("timeout")
    @classmethod
    def _positive(cls, value: timedelta) -> timedelta:
        if value <= timedelta(0):
            raise ValueError(f"must be longer than 0s (got {format_duration(value)})")
        return value

    def unsafe_methods(self) -> tuple[str, ...]:
        """The listed methods that are not safe (they need ``sister``)."""
        return tuple(m for m in self.methods if m not in SAFE_METHODS)
