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
    """How two replies are compared (the comparator's rules): the status, the listed headers
    and the body (as JSON when both bodies are JSON)."""

    headers: tuple[str, ...] = Field(
        default=("content-type",),
        description="Response headers compared (names, case-insensitive); the others are ignored.",
    )
    ignore: tuple[Annotated[str, Field(pattern=_POINTER)], ...] = Field(
        default=(),
        description="JSON Pointers (RFC 6901) of body fields never compared, e.g. a"
        " generation timestamp; a `*` segment matches any key or array index.",
    )
    unordered: tuple[Annotated[str, Field(pattern=_POINTER)], ...] = Field(
        default=(),
        description="JSON Pointers of arrays compared as multisets (order ignored).",
    )
    absolute_tolerance: float = Field(
        default=0.0,
        ge=0,
        description="Two JSON numbers `a`, `b` are equal when `|a - b| <= absoluteTolerance +"
        " relativeTolerance * max(|a|, |b|)`; in the numbers' own unit. 0: exact.",
    )
    relative_tolerance: float = Field(
        default=0.0,
        ge=0,
        lt=1,
        description="See `absoluteTolerance`: a ratio (`1e-9`), not a percentage. 0: exact.",
    )

    @field_validator("headers")
    @classmethod
    def _lower(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(name.lower() for name in value)


class SisterTargets(PolicyModel):
    """Where mirrored writes go: never to the production datastores."""

    candidate: Side = Field(
        description="A deployment of the candidate writing to its own (sister) datastores."
    )
    baseline: Side | None = Field(
        default=None,
        description="The same for the baseline. Omitted: writes are exercised on the"
        " candidate's sister (its errors are seen) but not compared (no baseline reply exists"
        " that would not write twice to production).",
    )


class ParityPolicy(PolicyModel):
    """Tap-compare for the route under rollout (see the module docstring for the shape).

    Envoy mirrors a share of the route's requests to the comparator, which sends each to the
    baseline and the candidate and compares their replies (the parity SLO judges the result).
    """

    mirror: MirrorShare = Field(
        default=10.0,
        description="The share of the route's requests Envoy mirrors to the comparator, in"
        " percent (more than 0%, at most 100%, at most four decimals: Envoy takes it per"
        " million).",
    )
    methods: tuple[Annotated[str, Field(pattern=_METHOD)], ...] = Field(
        default=SAFE_METHODS,
        min_length=1,
        description="HTTP methods mirrored; only the safe ones (GET, HEAD) unless `sister` is set.",
    )
    comparator: Side = Field(
        default=Side(cluster="sluice-parity"),
        description="The gateway cluster where the comparator listens.",
    )
    primary: Side | None = Field(
        default=None,
        description="A baseline replica kept for the comparator: it answers every mirrored"
        " request as the primary, so the instances serving users do not answer each mirrored"
        " request a second time (at `mirror: 100%`, twice their load). Omitted: the baseline"
        " cluster.",
    )
    secondary: Side | None = Field(
        default=None,
        description="A second baseline replica: differences between the two baseline replies"
        " are noise, not mismatches (Diffy's rule). Omitted: none, every difference counts.",
    )
    sister: SisterTargets | None = Field(
        default=None,
        description="Where mirrored writes (methods other than GET and HEAD) go. Omitted:"
        " writes are not mirrored.",
    )
    shadow_suffix: bool = Field(
        default=True,
        description="Envoy appends `-shadow` to the mirrored request's Host (its default);"
        " `false` sets `disable_shadow_host_suffix_append`, for a candidate that cannot"
        " accept it.",
    )
    compare: ParityCompare = Field(default=ParityCompare(), description="The comparison rules.")
    redact: tuple[str, ...] = Field(
        default=("authorization", "cookie", "set-cookie", "proxy-authorization"),
        description="Request and response headers (names, case-insensitive) whose values"
        " mismatch samples never keep.",
    )
    samples: int = Field(
        default=20,
        ge=0,
        le=1000,
        description="Mismatch samples kept per route (the newest), a count.",
    )
    timeout: Duration = Field(
        default=timedelta(seconds=5),
        description="Per request the comparator forwards; above 0s. A target slower than this"
        " is an error, not a reply.",
    )

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
