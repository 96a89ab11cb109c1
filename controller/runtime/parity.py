"""The comparator inside ``sluice serve`` (``--parity-address``): which routes it compares, and
its tallies as the judge's parity SLI.

The comparator runs on the controller's event loop: simple for the embedded default and the
demo. At production rates run it apart (``sluice parity serve``, judged through Prometheus),
so that comparing never delays an xDS push.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable

from controller.analysis.sli import ParitySli
from controller.parity.comparator import Comparator, RouteParity
from controller.policy.gateway import Gateway
from controller.store.rollouts import RolloutStore, StoredRollout

log = logging.getLogger(__name__)


def parity_routes(rollouts: Iterable[StoredRollout]) -> list[RouteParity]:
    """The routes to compare: those of active rollouts whose policy has a ``parity`` section."""
    routes = []
    for rollout in rollouts:
        spec = rollout.policy.spec
        if rollout.state.terminal or spec.parity is None:
            continue
        routes.append(
            RouteParity(
                route=spec.route,
                policy=spec.parity,
                baseline=spec.baseline.cluster,
                candidate=spec.candidate.cluster,
            )
        )
    return routes


class LocalParitySource:
    """The in-process comparator's tallies as a
    :class:`~controller.analysis.providers.base.ParitySource`."""

    def __init__(self, comparator: Comparator) -> None:
        self._comparator = comparator

    async def window(self, route: str, start: float, end: float) -> ParitySli | str:
        """The route's comparisons over ``[start, end]`` (seconds since the epoch), or why
        there are none (a string)."""
        tally = self._comparator.tally(route)
        if tally is None:
            return f"the comparator is not comparing route {route!r} yet"
        counts = tally.window(start, end)
        if counts.compared == 0 and counts.errors == 0:
            return (
                f"no mirrored request of route {route!r} reached the comparator in the window"
                " (is Envoy mirroring to the comparator's cluster?)"
            )
        return ParitySli(
            compared=float(counts.compared),
            mismatched=float(counts.mismatched),
            noisy=float(counts.noisy),
            errors=float(counts.errors),
        )


def follow_gateway(comparator: Comparator) -> Callable[[Gateway], None]:
    """What a reloaded gateway tells the comparator: its clusters' endpoints, so it compares
    the upstreams Envoy now reaches (a candidate redeployed at a new address). A gateway that
    lacks a cluster under comparison is logged, and the comparator keeps the old endpoints."""

    def loaded(gateway: Gateway) -> None:
        try:
            comparator.set_gateway(gateway)
        except ValueError as exc:
            log.error("the comparator keeps the previous gateway's endpoints: %s", exc)

    return loaded


async def follow_rollouts(
    comparator: Comparator, store: RolloutStore, stop: asyncio.Event, poll_s: float
) -> None:
    """Keep the comparator's routes those of the active rollouts (re-read every ``poll_s``)
    until ``stop`` is set."""
    current: list[RouteParity] | None = None
    refused: list[RouteParity] | None = None
    while not stop.is_set():
        try:
            active = await asyncio.to_thread(store.list, active_only=True)
        except Exception:  # a store hiccup: keep comparing what we compare
            log.exception("reading the rollouts for the comparator failed")
        else:
            routes = parity_routes(active)
            if routes != current:
                try:
                    comparator.configure(routes)
                except ValueError as exc:
                    # A policy naming a cluster the gateway lacks (the rollout's own checks
                    # report it): keep comparing what we compared, and try again at every
                    # poll (a gateway reload may add the cluster); log each refusal once.
                    if routes != refused:
                        log.error("cannot compare routes %s: %s", [r.route for r in routes], exc)
                        refused = routes
                else:
                    log.info("comparing routes: %s", [r.route for r in routes] or "none")
                    current, refused = routes, None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), poll_s)
