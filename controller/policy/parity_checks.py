"""Cross-field checks of a policy's tap-compare (``spec.parity``) and shadow stage, and of its
parity clusters against a gateway.

What one field alone cannot see: a parity SLO with nothing to compare, a write mirrored to
production datastores, a shadow stage that nothing could ever judge, a comparator that is one
of the rollout's own sides.
"""

from __future__ import annotations

from controller.policy.gateway import Gateway
from controller.policy.gateway_checks import Problem
from controller.policy.parity import SAFE_METHODS, ParityPolicy
from controller.policy.rollout_policy import ParitySlo, RolloutPolicy
from controller.policy.source import FieldPath

_PARITY: FieldPath = ("spec", "parity")


def check_parity(policy: RolloutPolicy) -> list[Problem]:
    """Problems of a validated policy's parity section and shadow stage; empty when sound.

    Reported: a parity SLO without ``spec.parity`` (nothing would be compared, so it could
    never pass); a first stage at 0% (a shadow stage) without ``spec.parity`` or without a
    parity SLO (only mirroring happens there, and only parity can judge it); a method other
    than GET and HEAD in ``parity.methods`` without ``parity.sister`` (a mirrored write would
    reach the production datastores a second time); a comparator, primary, secondary or
    sister cluster that is the baseline or the candidate (the comparator would receive its
    own users' traffic, a primary on the candidate would compare the candidate with itself, a
    "sister" would write to production); a secondary that is the primary (noise would be
    learnt from one replica).

    A shadow stage after the first is reported by
    :func:`controller.policy.rollout_checks.check_policy` (stage order).
    """
    spec = policy.spec
    problems: list[Problem] = []
    parity_slos = [i for i, slo in enumerate(spec.analysis.slos) if isinstance(slo, ParitySlo)]
    if spec.parity is None:
        problems += [
            (
                ("spec", "analysis", "slos", i, "metric"),
                "a parity SLO needs spec.parity (tap-compare): without it nothing is compared"
                " and the SLO never passes; add e.g. `parity: {mirror: 10%}`",
            )
            for i in parity_slos
        ]
    if spec.stages[0].shadow:
        shadow = ("spec", "stages", 0, "weight")
        if spec.parity is None:
            problems.append(
                (
                    shadow,
                    "a 0% stage (shadow stage) only mirrors requests to the comparator:"
                    " it needs spec.parity",
                )
            )
        if not parity_slos:
            problems.append(
                (
                    shadow,
                    "a 0% stage (shadow stage) is judged on parity alone: it needs a parity"
                    " SLO in spec.analysis.slos, e.g. {metric: parity, minValue: 99.9%}",
                )
            )
    if spec.parity is not None:
        problems += _unsafe_methods(spec.parity)
        problems += _distinct_clusters(policy, spec.parity)
    return problems


def check_parity_against_gateway(policy: RolloutPolicy, gateway: Gateway) -> list[Problem]:
    """Problems of the parity clusters on ``gateway``: the comparator, the primary, the
    secondary and the sister clusters must be declared there (Envoy mirrors to the
    comparator's cluster, and the comparator forwards to the clusters' endpoints); the clusters
    the comparator forwards to (baseline, candidate, primary, secondary, sisters) must speak
    HTTP/1.1, the only protocol its client speaks, and have static endpoints (it does not
    follow EndpointSlices). Empty without ``spec.parity``."""
    parity = policy.spec.parity
    if parity is None:
        return []
    known = gateway.cluster_names()
    problems: list[Problem] = [
        (
            path,
            f"gateway {gateway.metadata.name!r} declares no cluster {cluster!r}"
            f" (clusters: {', '.join(sorted(known))})",
        )
        for path, cluster in parity_clusters(parity)
        if cluster not in known
    ]
    spec = policy.spec
    forwarded = [
        (("spec", "baseline", "cluster"), spec.baseline.cluster),
        (("spec", "candidate", "cluster"), spec.candidate.cluster),
        *parity_clusters(parity)[1:],  # not the comparator: Envoy talks to it
    ]
    protocols = {c.name: c.protocol for c in gateway.spec.clusters}
    problems.extend(
        (
            path,
            f"cluster {cluster!r} speaks {protocols[cluster]} in gateway "
            f"{gateway.metadata.name!r}: the comparator forwards mirrored requests over "
            "HTTP/1.1 only, so parity cannot be compared there",
        )
        for path, cluster in forwarded
        if protocols.get(cluster, "http1") != "http1"
    )
    followed = gateway.kubernetes_clusters()
    problems.extend(
        (
            path,
            f"cluster {cluster!r} takes its endpoints from the Kubernetes Service "
            f"{followed[cluster].service!r} in gateway {gateway.metadata.name!r}: the "
            "comparator forwards to static endpoints only, so parity cannot be compared there",
        )
        for path, cluster in forwarded
        if cluster in followed
    )
    return problems


def parity_clusters(parity: ParityPolicy) -> list[tuple[FieldPath, str]]:
    """Every cluster the parity section names, with its field path: the comparator, the
    primary, the secondary, the sister targets (in that order)."""
    found: list[tuple[FieldPath, str]] = [
        ((*_PARITY, "comparator", "cluster"), parity.comparator.cluster)
    ]
    if parity.primary is not None:
        found.append(((*_PARITY, "primary", "cluster"), parity.primary.cluster))
    if parity.secondary is not None:
        found.append(((*_PARITY, "secondary", "cluster"), parity.secondary.cluster))
    if parity.sister is not None:
        sister = (*_PARITY, "sister")
        found.append(((*sister, "candidate", "cluster"), parity.sister.candidate.cluster))
        if parity.sister.baseline is not None:
            found.append(((*sister, "baseline", "cluster"), parity.sister.baseline.cluster))
    return found


def _unsafe_methods(parity: ParityPolicy) -> list[Problem]:
    if parity.sister is not None:
        return []
    return [
        (
            (*_PARITY, "methods", i),
            f"{method} is not a safe method (RFC 9110 9.2.1): mirroring it would write to the"
            " production datastores a second time; set parity.sister (a candidate writing to"
            f" its own datastores) or mirror only {' and '.join(SAFE_METHODS)}",
        )
        for i, method in enumerate(parity.methods)
        if method not in SAFE_METHODS
    ]


def _distinct_clusters(policy: RolloutPolicy, parity: ParityPolicy) -> list[Problem]:
    sides = {
        policy.spec.baseline.cluster: "the baseline",
        policy.spec.candidate.cluster: "the candidate",
    }
    problems: list[Problem] = []
    for path, cluster in parity_clusters(parity):
        side = sides.get(cluster)
        if side is not None:
            problems.append((path, f"must not be {side} ({cluster}): {_why(path)}"))
    comparator = parity.comparator.cluster
    for path, cluster in parity_clusters(parity)[1:]:
        if cluster == comparator:
            problems.append(
                (path, f"must not be the comparator ({cluster}): it would forward to itself")
            )
    if (
        parity.primary is not None
        and parity.secondary is not None
        and parity.secondary.cluster == parity.primary.cluster
    ):
        problems.append(
            (
                (*_PARITY, "secondary", "cluster"),
                f"must not be the primary ({parity.primary.cluster}): the secondary is a second"
                " baseline replica, whose differences from the primary are noise",
            )
        )
    return problems


def _why(path: FieldPath) -> str:
    if "comparator" in path:
        return "the comparator is a cluster of its own, which Envoy mirrors to"
    if "sister" in path:
        return "a sister target writes to its own datastores, never to production's"
    if "primary" in path:
        return (
            "the primary is a baseline replica kept for the comparator; omit parity.primary"
            " to send the primary requests to the baseline"
        )
    return "the secondary is a second baseline replica, apart from both sides"
