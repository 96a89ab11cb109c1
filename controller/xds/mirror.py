"""Tap-compare through Envoy: a route's request mirror policy to the comparator's cluster.

Envoy's ``envoy.config.route.v3.RouteAction.RequestMirrorPolicy`` sends a copy of a share of
the route's requests to another cluster, fire and forget: the user's response never waits for
the mirror, and the mirror's response is discarded. Envoy appends ``-shadow`` to the copy's
Host (unless ``disable_shadow_host_suffix_append``) and, here, adds the header
:data:`ROUTE_HEADER` naming the route, so that one comparator serves every route.

A mirror policy has no method condition. Mirroring only some methods (safe ones, when no
sister datastore takes the writes) is done with a second route: a copy of the route matching
the ``:method`` pseudo-header too, carrying the mirror, placed before the route (see
:func:`controller.xds.resources.route_configuration`); the route itself mirrors nothing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from envoy_data_plane.envoy.config.common.mutation_rules.v3 import HeaderMutation
from envoy_data_plane.envoy.config.core.v3 import (
    HeaderValue,
    HeaderValueOption,
    HeaderValueOptionHeaderAppendAction,
    RuntimeFractionalPercent,
)
from envoy_data_plane.envoy.config.route.v3 import (
    HeaderMatcher,
    RouteActionRequestMirrorPolicy,
)
from envoy_data_plane.envoy.type.matcher.v3 import RegexMatcher, StringMatcher
from envoy_data_plane.envoy.type.v3 import FractionalPercent, FractionalPercentDenominatorType

from controller.policy.parity import ROUTE_HEADER as ROUTE_HEADER

MILLION = 1_000_000
"""``FractionalPercent.MILLION``: mirror shares are given per million requests."""

MIRROR_ROUTE_SUFFIX = ".mirror"
"""The copy of a route that mirrors some methods only is named ``<route>.mirror``."""

_METHOD = re.compile(r"^[A-Z]+$")


@dataclass(frozen=True)
class Mirror:
    """The mirror of a route under rollout to the comparator (tap-compare).

    Attributes:
        cluster: the comparator's cluster (a gateway cluster, so already in CDS).
        fraction_per_million: mirrored requests per million of the route's requests
            (``runtime_fraction.default_value``, denominator MILLION), 1 to 1,000,000.
        route: the route's name, sent in :data:`ROUTE_HEADER` with every mirrored request.
        methods: only requests with these methods are mirrored (a ``<route>.mirror`` copy of
            the route matching ``:method``); None: every method (writes go to sister
            datastores, the comparator's business).
        shadow_suffix: Envoy appends ``-shadow`` to the mirrored request's Host (its default);
            False sets ``disable_shadow_host_suffix_append``.

    Raises:
        ValueError: a fraction out of 1..1,000,000, an empty ``methods``, or a method that is
            not an upper-case token (it is written into a regular expression).
    """

    cluster: str
    fraction_per_million: int
    route: str
    methods: tuple[str, ...] | None
    shadow_suffix: bool = True

    def __post_init__(self) -> None:
        if not 0 < self.fraction_per_million <= MILLION:
            raise ValueError(
                f"mirror fraction must be 1 to {MILLION} per million,"
                f" got {self.fraction_per_million}"
            )
        if self.methods is not None:
            if not self.methods:
                raise ValueError("mirror methods: give at least one method, or None for all")
            bad = [m for m in self.methods if not _METHOD.match(m)]
            if bad:
                raise ValueError(f"mirror methods must be upper-case tokens, got {bad}")


def mirror_policy(mirror: Mirror) -> RouteActionRequestMirrorPolicy:
    """``RouteAction.RequestMirrorPolicy`` to ``mirror.cluster`` for the given share, adding
    (overwriting: a client cannot pick the route) :data:`ROUTE_HEADER`."""
    return RouteActionRequestMirrorPolicy(
        cluster=mirror.cluster,
        runtime_fraction=RuntimeFractionalPercent(
            default_value=FractionalPercent(
                numerator=mirror.fraction_per_million,
                denominator=FractionalPercentDenominatorType.MILLION,
            )
        ),
        disable_shadow_host_suffix_append=not mirror.shadow_suffix,
        request_headers_mutations=[
            HeaderMutation(
                append=HeaderValueOption(
                    header=HeaderValue(key=ROUTE_HEADER, value=mirror.route),
                    append_action=HeaderValueOptionHeaderAppendAction.OVERWRITE_IF_EXISTS_OR_ADD,
                )
            )
        ],
    )


def method_matcher(methods: tuple[str, ...]) -> HeaderMatcher:
    """A ``HeaderMatcher`` of the ``:method`` pseudo-header against ``methods`` (RE2
    ``^(?:GET|HEAD)$``; methods are upper-case tokens, see :class:`Mirror`)."""
    regex = "^(?:" + "|".join(methods) + ")$"
    return HeaderMatcher(
        name=":method", string_match=StringMatcher(safe_regex=RegexMatcher(regex=regex))
    )
