"""Cross-field checks of a rollout policy, and checks of a policy against a gateway.

Field validation (types, units, ranges) is pydantic's; these see what one field alone cannot:
stages that do not move forward, a rollout that never reaches its candidate, a route or
cluster the gateway does not serve. The parity section's and the shadow stage's checks are in
:mod:`controller.policy.parity_checks` and run from here.
"""

from __future__ import annotations

from controller.policy.gateway import Gateway
from controller.policy.gateway_checks import Problem
from controller.policy.parity_checks import check_parity, check_parity_against_gateway
from controller.policy.rollout_policy import RolloutPolicy, slo_name
from controller.policy.units import format_duration

_STAGES = ("spec", "stages")


def check_policy(policy: RolloutPolicy) -> list[Problem]:
    """Problems of a validated policy; empty when sound.

    Reported: stage weights that do not strictly increase (a rollout moves forward only); a
    0% stage (shadow stage) anywhere but first; a last stage below 100% (the rollout would
    never finish the migration); a stage deadline not longer than the analysis' initial delay;
    the same cluster as baseline and candidate; two SLOs with the
    same name (verdicts are reported by name); and the problems of
    :func:`~controller.policy.parity_checks.check_parity` (tap-compare, the shadow stage).
    """
    problems: list[Problem] = []
    stages = policy.spec.stages
    for i in range(1, len(stages)):
        if stages[i].shadow:
            problems.append(
                (
                    (*_STAGES, i, "weight"),
                    f"a 0% stage (shadow stage) can only be the first stage (stage {i} is 0%)",
                )
            )
        elif stages[i].weight <= stages[i - 1].weight:
            problems.append(
                (
                    (*_STAGES, i, "weight"),
                    f"stage weights must increase: {stages[i].weight:g}% follows "
                    f"{stages[i - 1].weight:g}% (stage {i})",
                )
            )
    if stages[-1].weight != 100:
        problems.append(
            (
                (*_STAGES, len(stages) - 1, "weight"),
                f"the last stage must send 100% to the candidate, got {stages[-1].weight:g}%",
            )
        )
    if policy.spec.baseline.cluster == policy.spec.candidate.cluster:
        problems.append(
            (("spec", "candidate", "cluster"), "the candidate must differ from the baseline")
        )
    delay = policy.spec.analysis.initial_delay
    for i, stage in enumerate(stages):
        if stage.deadline is not None and stage.deadline <= delay:
            problems.append(
                (
                    (*_STAGES, i, "deadline"),
                    f"the deadline ({format_duration(stage.deadline)}) must be longer than"
                    f" spec.analysis.initialDelay ({format_duration(delay)}): no analysis"
                    " could pass the stage before it",
                )
            )
    seen: dict[str, int] = {}
    for i, slo in enumerate(policy.spec.analysis.slos):
        name = slo_name(slo)
        if name in seen:
            problems.append(
                (
                    ("spec", "analysis", "slos", i, "metric"),
                    f"SLO {name!r} is already defined at spec.analysis.slos[{seen[name]}]",
                )
            )
        else:
            seen[name] = i
    return problems + check_parity(policy)


def check_against_gateway(policy: RolloutPolicy, gateway: Gateway) -> list[Problem]:
    """Problems running ``policy`` on ``gateway`` would meet; empty when it fits.

    Reported: the route is not in the gateway; the baseline or candidate cluster is not
    declared (Envoy would answer 503); the route does not send traffic to the baseline today
    (the rollout would move traffic from somewhere else); a parity cluster (comparator,
    primary, secondary, sister) the gateway does not declare.
    """
    problems: list[Problem] = []
    routes = gateway.routes()
    clusters = gateway.cluster_names()
    route = routes.get(policy.spec.route)
    if route is None:
        known = ", ".join(sorted(routes)) or "none"
        problems.append(
            (
                ("spec", "route"),
                f"gateway {gateway.metadata.name!r} has no route {policy.spec.route!r}"
                f" (routes: {known})",
            )
        )
    for side in ("baseline", "candidate"):
        cluster = getattr(policy.spec, side).cluster
        if cluster not in clusters:
            problems.append(
                (
                    ("spec", side, "cluster"),
                    f"gateway {gateway.metadata.name!r} declares no cluster {cluster!r}"
                    f" (clusters: {', '.join(sorted(clusters))})",
                )
            )
    if route is not None and policy.spec.baseline.cluster not in route.referenced_clusters():
        problems.append(
            (
                ("spec", "baseline", "cluster"),
                f"route {route.name!r} does not send traffic to {policy.spec.baseline.cluster!r}"
                f" (it sends to {', '.join(route.referenced_clusters())})",
            )
        )
    return problems + check_parity_against_gateway(policy, gateway)
