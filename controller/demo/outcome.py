"""What a demo run is asked (:class:`DemoOptions`), shows while it runs (:class:`DemoProgress`)
and ends with (:class:`DemoOutcome`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from controller.demo.load import LoadFigures
from controller.demo.scenarios import Scenario, ScenarioName
from controller.store.rollouts import HistoryEvent, StoredRollout

Provider = Literal["auto", "prometheus", "envoy_admin"]


@dataclass(frozen=True)
class DemoOptions:
    """What to run.

    Attributes:
        scenario: which candidate (:data:`controller.demo.scenarios.SCENARIOS`).
        provider: where verdicts come from: ``prometheus`` (needs the binary), ``envoy_admin``
            (the controller scrapes Envoy itself), ``auto`` (Prometheus when found).
        rate: requests per second sent through Envoy.
        workdir: where logs, state, configs and the report go (None: a new temporary
            directory, kept after the run).
        report: the report's path (None: ``<workdir>/comments-report.html``).
        timeout_s: the longest the rollout may take, in seconds.
    """

    scenario: ScenarioName = "healthy"
    provider: Provider = "auto"
    rate: float = 250.0
    workdir: Path | None = None
    report: Path | None = None
    timeout_s: float = 300.0


@dataclass
class DemoProgress:
    """What the live view shows, refreshed a few times a second.

    Attributes:
        scenario: the scenario running.
        provider: ``prometheus`` or ``envoy_admin``, resolved.
        step: what the demo is doing now, for people.
        notes: things said once (e.g. why Prometheus is not used).
        urls: what a person can open meanwhile (gateway, Envoy admin, controller admin,
            Prometheus).
        workdir: where the logs are.
        rollout: the rollout as stored (None before it is recorded).
        events: its history, oldest first.
        load: what the clients received so far (None before the load starts).
        recent_rate: replies per second over the last 5 s.
        recent_by_upstream: replies per upstream over the last 5 s.
    """

    scenario: Scenario
    provider: str
    workdir: Path
    step: str = "starting"
    notes: list[str] = field(default_factory=list)
    urls: dict[str, str] = field(default_factory=dict)
    rollout: StoredRollout | None = None
    events: list[HistoryEvent] = field(default_factory=list)
    load: LoadFigures | None = None
    recent_rate: float = 0.0
    recent_by_upstream: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class DemoOutcome:
    """How the demo ended.

    Attributes:
        progress: the last progress (rollout, history, load figures).
        envoy_weights: the weights Envoy applied at the end (from its ``/config_dump``).
        envoy_requests: requests Envoy sent to the baseline and the candidate in all (its
            ``upstream_rq_total`` counters; the comparator's requests do not pass through it).
        report: the report's path (None when it could not be written; ``report_error`` says
            why).
        duration_s: seconds from the rollout's start to its end.
        processes: every child started: ``{"name", "pid", "exit_code"}`` (after the stop).
    """

    progress: DemoProgress
    envoy_weights: dict[str, int] | None
    envoy_requests: dict[str, int] | None
    report: Path | None
    report_error: str | None
    duration_s: float
    processes: list[dict[str, Any]]

    @property
    def phase(self) -> str:
        rollout = self.progress.rollout
        return "unknown" if rollout is None else str(rollout.state.phase)

    @property
    def as_expected(self) -> bool:
        """The rollout ended as the scenario says (promoted, or rolled back by a fail verdict
        of the scenario's SLO)."""
        scenario, rollout = self.progress.scenario, self.progress.rollout
        if rollout is None or self.phase != scenario.expected_phase:
            return False
        if scenario.expected_slo is None:
            return True
        return rollout.state.cause == "verdict" and scenario.expected_slo in failed_slos(rollout)


def failed_slos(rollout: StoredRollout) -> list[str]:
    """The SLOs whose verdict was ``fail`` in the rollout's last verdict."""
    verdict = rollout.state.last_verdict
    if verdict is None:
        return []
    slos = verdict.details.get("slos")
    if not isinstance(slos, dict):
        return []
    return [
        name
        for name, figures in slos.items()
        if isinstance(figures, dict) and figures.get("outcome") == "fail"
    ]
