"""The controller's own Prometheus metrics, served by the admin API's ``GET /metrics``.

State is read at scrape time by a custom collector (``prometheus_client.registry.Collector``):
the store and the snapshot cache are the one record, so a scrape never disagrees with
``sluice rollout status`` or ``sluice xds status``. Only events that leave no record behind
(verdicts, transitions, NACKs, push-to-ACK times) are counted as they happen, through the
hooks :meth:`ControllerMetrics.verdict`, :meth:`~ControllerMetrics.transitions`,
:meth:`~ControllerMetrics.push` and :meth:`~ControllerMetrics.nack`.

Exported:

* ``sluice_rollouts{phase}`` (gauge): rollouts in the store per phase, every phase present.
* ``sluice_rollout_weight_percent{rollout, route, kind}`` (gauge, percent 0-100): the
  candidate's share of each active rollout, ``kind`` ``desired`` (what the controller serves or
  pushes) or ``acked`` (what every Envoy last ACKed; absent until known).
* ``sluice_rollout_stage{rollout, route}`` (gauge): each active rollout's stage, 1-based
  (0 before the first).
* ``sluice_verdicts_total{rollout, outcome}`` (counter): verdicts the reconciler applied,
  ``outcome`` ``pass``, ``fail`` or ``inconclusive``.
* ``sluice_rollout_transitions_total{to}`` (counter): phase changes the reconciler applied, by
  the phase entered (an operator's command applied by another process is not counted).
* ``sluice_xds_connected_nodes{protocol}`` (gauge): Envoy nodes with an open ADS stream, by
  ``protocol`` ``sotw`` or ``delta``.
* ``sluice_xds_push_ack_seconds{outcome}`` (histogram, seconds): from a weight change being
  served to its outcome (``acked``, ``nacked``, ``timeout``, ``no_nodes``, ``superseded``;
  :class:`controller.xds.acks.AckResult`), for every push of the reconciler and every manual
  change through the admin API (not the removal of a finished rollout's route options, nor
  gateway reloads).
* ``sluice_xds_nacks_total{type}`` (counter): NACKs received, by type short name (``RDS``...).
* ``sluice_leader`` (gauge, 0/1): this replica drives the rollouts (always 1 outside
  Kubernetes mode).
* ``sluice_store_stale`` (gauge, 0/1): this replica is fenced, cut off from the store or
  unable to renew its report (:mod:`controller.runtime.fencing`; always 0 outside
  Kubernetes mode).
* ``sluice_build_info{version}`` (gauge, always 1).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter as Tally
from collections.abc import Callable, Iterable, Iterator, Sequence

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from controller import __version__
from controller.rollout.actions import RecordEvent
from controller.rollout.state import Phase
from controller.store.rollouts import RolloutStore, StoredRollout
from controller.xds.cache import SnapshotCache
from controller.xds.typeurls import short_name
from controller.xds.weight_changes import WeightChange

log = logging.getLogger(__name__)

PUSH_ACK_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)
"""Buckets of ``sluice_xds_push_ack_seconds`` (seconds): 1 ms (one local Envoy) to 30 s
(the longest usual ``ackTimeout``)."""

LIST_TTL_S = 1.0
"""How long a listing of the store serves scrapes (seconds): a scrape costs at most one list
per second, whatever the number of scrapers."""

PROTOCOLS = ("sotw", "delta")
"""Values of the ``protocol`` label of ``sluice_xds_connected_nodes``."""

_ARROW = " → "
"""Separates the phases of a ``RecordEvent.transition`` that changed phase."""


def rollout_families(rollouts: Sequence[StoredRollout]) -> list[Metric]:
    """``sluice_rollouts``, ``sluice_rollout_weight_percent`` and ``sluice_rollout_stage`` from
    one listing of the store (pure: see the module doc for the series)."""
    phases = GaugeMetricFamily(
        "sluice_rollouts", "Rollouts in the store by phase.", labels=("phase",)
    )
    counts = Tally(r.state.phase for r in rollouts)
    for phase in Phase:
        phases.add_metric((phase.value,), counts.get(phase, 0))
    weight = GaugeMetricFamily(
        "sluice_rollout_weight_percent",
        "Candidate share of each active rollout in percent (kind: desired or acked).",
        labels=("rollout", "route", "kind"),
    )
    stage = GaugeMetricFamily(
        "sluice_rollout_stage",
        "Current stage of each active rollout, 1-based (0 before the first).",
        labels=("rollout", "route"),
    )
    for rollout in sorted(rollouts, key=lambda r: r.name):
        if not rollout.active:
            continue
        state = rollout.state
        weight.add_metric((rollout.name, rollout.route, "desired"), state.desired_weight)
        if state.acked_weight is not None:
            weight.add_metric((rollout.name, rollout.route, "acked"), state.acked_weight)
        stage.add_metric((rollout.name, rollout.route), state.stage + 1)
    return [phases, weight, stage]


def transition_target(transition: str) -> str | None:
    """The phase a ``RecordEvent.transition`` entered (``"progressing → paused"`` → ``paused``),
    or None when the phase did not change (a one-phase transition, e.g. a stage passed)."""
    if _ARROW not in transition:
        return None
    return transition.rsplit(_ARROW, 1)[1].strip()


class _StateCollector(Collector):
    """Reads the store (through :class:`ControllerMetrics`' cached listing), the cache's
    streams and the leadership at each scrape."""

    def __init__(self, owner: ControllerMetrics) -> None:
        self._owner = owner

    def collect(self) -> Iterator[Metric]:
        """The gauges of the module doc."""
        yield from rollout_families(self._owner.listing())
        nodes = GaugeMetricFamily(
            "sluice_xds_connected_nodes",
            "Envoy nodes with an open ADS stream, by protocol.",
            labels=("protocol",),
        )
        cache = self._owner.cache
        connected: Tally[str] = Tally()
        if cache is not None:
            connected.update(n.protocol for n in cache.nodes() if n.stream_ids)
        for protocol in PROTOCOLS:
            nodes.add_metric((protocol,), connected[protocol])
        yield nodes
        leader = GaugeMetricFamily(
            "sluice_leader", "1 when this replica drives the rollouts (always outside Kubernetes)."
        )
        leader.add_metric((), 1 if self._owner.leading() else 0)
        yield leader
        stale = GaugeMetricFamily(
            "sluice_store_stale",
            "1 while this replica is fenced: it cannot read the store or renew its report.",
        )
        stale.add_metric((), 1 if self._owner.stale() else 0)
        yield stale
        build = GaugeMetricFamily(
            "sluice_build_info", "The running controller's version (always 1).", labels=("version",)
        )
        build.add_metric((__version__,), 1)
        yield build


class _Joined(Collector):
    """Another registry's metrics, exported through this one."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry

    def collect(self) -> Iterator[Metric]:
        """Everything ``registry`` collects."""
        yield from self._registry.collect()


class ControllerMetrics:
    """One controller's registry (:attr:`registry`) and its event hooks.

    Args:
        rollouts: the rollout store, listed at most once per :data:`LIST_TTL_S` by scrapes.
        cache: the snapshot cache (connected nodes); None: no xDS server (0 nodes).
        leading: whether this replica leads now (default: always).
        monotonic: monotonic seconds, for the listing's age.
        stale: whether this replica is fenced now (default: never).

    Methods are called on the event loop (the cache is single-threaded); :meth:`refresh` lists
    the store in a worker thread, so the admin handler awaits it before rendering.
    """

    def __init__(
        self,
        rollouts: RolloutStore,
        cache: SnapshotCache | None = None,
        leading: Callable[[], bool] = lambda: True,
        monotonic: Callable[[], float] = time.monotonic,
        stale: Callable[[], bool] = lambda: False,
    ) -> None:
        self._rollouts = rollouts
        self.cache = cache
        self.leading = leading
        self.stale = stale
        self._monotonic = monotonic
        self._listed: list[StoredRollout] = []
        self._listed_at: float | None = None
        self.registry = CollectorRegistry(auto_describe=False)
        """What ``/metrics`` exposes; other collectors (the in-process comparator's) join it."""
        self._verdicts = Counter(
            "sluice_verdicts",
            "Verdicts the reconciler applied, by rollout and outcome.",
            ("rollout", "outcome"),
            registry=self.registry,
        )
        self._transitions = Counter(
            "sluice_rollout_transitions",
            "Phase changes the reconciler applied, by the phase entered.",
            ("to",),
            registry=self.registry,
        )
        self._push_ack = Histogram(
            "sluice_xds_push_ack_seconds",
            "Seconds from a weight change being served to its ACK outcome.",
            ("outcome",),
            buckets=PUSH_ACK_BUCKETS,
            registry=self.registry,
        )
        self._nacks = Counter(
            "sluice_xds_nacks",
            "NACKs received from Envoy, by resource type.",
            ("type",),
            registry=self.registry,
        )
        self.registry.register(_StateCollector(self))

    def join(self, registry: CollectorRegistry) -> None:
        """Export ``registry``'s metrics too (the in-process comparator's ``sluice_parity_*``),
        so that one ``/metrics`` serves both. Its names must not collide with these."""
        self.registry.register(_Joined(registry))

    # -- hooks --------------------------------------------------------------------------------

    def verdict(self, rollout: str, outcome: str) -> None:
        """Count a verdict (``pass``, ``fail``, ``inconclusive``) fed to ``rollout``."""
        self._verdicts.labels(rollout, outcome).inc()

    def transitions(self, events: Iterable[RecordEvent]) -> None:
        """Count the phase changes among a decision's recorded events."""
        for event in events:
            target = transition_target(event.transition)
            if target is not None:
                self._transitions.labels(target).inc()

    def push(self, change: WeightChange) -> None:
        """Observe a weight change's push-to-outcome time (``change.ack.elapsed_s``)."""
        self._push_ack.labels(change.ack.outcome).observe(change.ack.elapsed_s)

    def nack(self, type_url: str) -> None:
        """Count a NACK of ``type_url`` (the cache's ``on_nack`` hook)."""
        self._nacks.labels(short_name(type_url)).inc()

    # -- the store's listing ------------------------------------------------------------------

    def _fresh(self) -> bool:
        return self._listed_at is not None and self._monotonic() - self._listed_at < LIST_TTL_S

    def _list(self) -> None:
        try:
            self._listed = self._rollouts.list()
        except Exception:
            # A scrape must not fail with the store: the last listing stays (and its age is
            # visible in the logs), the cache's and the counters' series are still exported.
            log.warning(
                "metrics: cannot list the rollouts; exporting the last listing", exc_info=True
            )
        self._listed_at = self._monotonic()

    async def refresh(self) -> None:
        """List the store in a worker thread unless the last listing is fresh."""
        if not self._fresh():
            await asyncio.to_thread(self._list)

    def listing(self) -> list[StoredRollout]:
        """The store's rollouts as last listed (listed now, blocking, when stale)."""
        if not self._fresh():
            self._list()
        return self._listed
