"""A route under comparison: what the policy asks (:class:`RouteParity`) and what the
comparator keeps for it (:class:`RouteState`)."""

from __future__ import annotations

from dataclasses import dataclass

from controller.parity.forward import Failure
from controller.parity.noise import NoiseModel
from controller.parity.rules import CompareRules
from controller.parity.tally import RouteTally
from controller.policy.parity import SAFE_METHODS, ParityPolicy

_NONE: frozenset[str] = frozenset()
_SAFE = frozenset(SAFE_METHODS)


@dataclass(frozen=True)
class RouteParity:
    """One route under comparison.

    Attributes:
        route: the route's name (the value of the mirrored request's route header).
        policy: its policy's ``parity`` section.
        baseline: the baseline's cluster (the primary, unless ``policy.primary`` names one).
        candidate: the candidate's cluster.
    """

    route: str
    policy: ParityPolicy
    baseline: str
    candidate: str


@dataclass
class RouteState:
    """A route's configuration as used per request, and its state kept across configures:
    its tally, its learnt noise, what its sister targets exercised, its last failure."""

    parity: RouteParity
    rules: CompareRules
    timeout_s: float
    redact: frozenset[str]
    compared_methods: frozenset[str]
    sister_methods: frozenset[str]
    tally: RouteTally
    noise: NoiseModel
    exercised: int = 0
    last_error: tuple[float, Failure] | None = None

    def configured(self, parity: RouteParity) -> None:
        """Take ``parity``'s rules, keeping the tally, the learnt noise and the counts."""
        policy = parity.policy
        self.parity = parity
        self.rules = CompareRules.from_policy(policy.compare)
        self.timeout_s = policy.timeout.total_seconds()
        self.redact = frozenset(policy.redact)
        methods = frozenset(policy.methods)
        self.compared_methods = methods & _SAFE
        self.sister_methods = methods - _SAFE if policy.sister is not None else _NONE

    @classmethod
    def new(cls, parity: RouteParity) -> RouteState:
        route = cls(
            parity,
            CompareRules.from_policy(parity.policy.compare),
            0.0,
            _NONE,
            _NONE,
            _NONE,
            RouteTally(samples=parity.policy.samples),
            NoiseModel(),
        )
        route.configured(parity)
        return route


def route_clusters(parity: RouteParity) -> list[str]:
    """Every cluster the comparator may forward ``parity``'s requests to: baseline, candidate,
    primary, secondary, sisters."""
    policy = parity.policy
    out = [parity.baseline, parity.candidate]
    if policy.primary is not None:
        out.append(policy.primary.cluster)
    if policy.secondary is not None:
        out.append(policy.secondary.cluster)
    if policy.sister is not None:
        out.append(policy.sister.candidate.cluster)
        if policy.sister.baseline is not None:
            out.append(policy.sister.baseline.cluster)
    return out
