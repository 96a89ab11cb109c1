"""The comparator's per-request fan-out: one mirrored request sent to the primary, the
secondary and the candidate (or the sister targets), and the outcome recorded in the route's
tally (:mod:`controller.parity.comparator` describes the rules)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from controller.parity.classify import classify
from controller.parity.diff import Reply
from controller.parity.forward import Failure, send
from controller.parity.http1 import Pool, encode_request
from controller.parity.route_state import RouteState
from controller.parity.samples import MismatchSample
from controller.parity.tally import NO_PATHS
from controller.parity.targets import Targets

UNANSWERED = ":unanswered"
"""The field path of a candidate that gave no reply where the primary did (comparator module
doc, item 5)."""
_UNANSWERED = frozenset({UNANSWERED})


@dataclass(frozen=True)
class MirroredRequest:
    """One request Envoy mirrored, as the comparator received it.

    Attributes:
        method: the HTTP method.
        path_qs: the raw path and query.
        headers: the headers to forward (``forward.forwarded_headers``).
        body: the body, bytes.
        at: when it was received, seconds since the epoch.
        sister: a write for the sister targets, not a safe method for the replicas.
    """

    method: str
    path_qs: str
    headers: tuple[tuple[str, str], ...]
    body: bytes
    at: float
    sister: bool


async def compare_mirrored(
    route: RouteState, request: MirroredRequest, *, pool: Pool, targets: Targets
) -> None:
    """Send one mirrored request to its targets and record how the replies compare in the
    route's tally (items 3, 5 and 6 of :mod:`controller.parity.comparator`'s docstring).

    Args:
        route: the route's state; its tally, noise model and last error are updated.
        request: the mirrored request.
        pool: the HTTP/1.1 client pool; targets: the clusters' endpoints.
    """
    parity = route.parity
    policy = parity.policy
    at, method = request.at, request.method
    if request.sister:
        assert policy.sister is not None
        primary_cluster = policy.sister.baseline.cluster if policy.sister.baseline else None
        candidate_cluster = policy.sister.candidate.cluster
        secondary_cluster = None
    else:
        primary_cluster = policy.primary.cluster if policy.primary else parity.baseline
        candidate_cluster = parity.candidate
        secondary_cluster = policy.secondary.cluster if policy.secondary else None
    deadline_s = route.timeout_s
    # One encoding for every target: the Host is the one received (Envoy's -shadow one).
    data = encode_request(method, request.path_qs, request.headers, request.body)

    def call(cluster: str) -> asyncio.Task[Reply | Failure]:
        target = targets.next(cluster)
        return asyncio.ensure_future(send(pool, target, method, data, deadline_s))

    # The candidate is sent first: with the primary awaited inline below, one task less.
    candidate_call = call(candidate_cluster)
    secondary_call = call(secondary_cluster) if secondary_cluster else None
    if primary_cluster is None:
        candidate = await candidate_call
        if isinstance(candidate, Failure):
            _failed(route, at, candidate)
        else:
            route.exercised += 1
        return
    target = targets.next(primary_cluster)
    primary = await send(pool, target, method, data, deadline_s)
    candidate = await candidate_call
    secondary = await secondary_call if secondary_call is not None else None
    if isinstance(primary, Failure):
        _failed(route, at, primary)
        return
    if isinstance(secondary, Failure):
        route.last_error = (at, secondary)
        secondary = None
    if isinstance(candidate, Failure):
        route.last_error = (at, candidate)
        # Nothing is learnt from the secondary here: noise is learnt in classify() alone,
        # and leaving the request out of the noise model's counts keeps its rates unbiased.
        failed = Reply(0, (), candidate.reason.encode("utf-8", "replace"))
        sample = _sample(route, request, primary, failed)
        route.tally.record("mismatched", _UNANSWERED, NO_PATHS, at, sample)
        return
    result = classify(primary, candidate, secondary, route.rules, route.noise)
    sample = None
    if result.outcome == "mismatched":
        sample = _sample(
            route, request, primary, candidate, secondary=secondary, paths=result.mismatched
        )
    route.tally.record(result.outcome, result.mismatched, result.noisy, at, sample)


def _sample(
    route: RouteState,
    request: MirroredRequest,
    primary: Reply,
    candidate: Reply,
    secondary: Reply | None = None,
    paths: frozenset[str] = _UNANSWERED,
) -> MismatchSample | None:
    if route.parity.policy.samples <= 0:
        return None
    return MismatchSample(
        at=request.at,
        method=request.method,
        url=request.path_qs,
        request_headers=request.headers,
        request_body=request.body,
        primary=primary,
        candidate=candidate,
        secondary=secondary,
        paths=tuple(sorted(paths)),
        redact=route.redact,
    )


def _failed(route: RouteState, at: float, failure: Failure) -> None:
    route.last_error = (at, failure)
    route.tally.record("error", NO_PATHS, NO_PATHS, at)
