"""Loading gateway and policy files: YAML text to a checked
:class:`~controller.policy.gateway.Gateway` or
:class:`~controller.policy.rollout_policy.RolloutPolicy`.

Pure: callers read the file and pass its text and name (used in messages only).
"""

from __future__ import annotations

from controller.policy.gateway import Gateway
from controller.policy.gateway_checks import check_gateway
from controller.policy.rollout_checks import check_against_gateway, check_policy
from controller.policy.rollout_policy import RolloutPolicy
from controller.policy.source import DocumentError, issue_at, load_yaml
from controller.policy.validation import check_kind, validate_data


def load_gateway(text: str, filename: str) -> Gateway:
    """Parse, validate and cross-check a gateway file.

    Returns the gateway only when it is sound: valid fields and no problem from
    :func:`~controller.policy.gateway_checks.check_gateway`.

    Raises:
        DocumentError: every problem found, each with its line and field path
            (``file:line: field: message``), sorted by line.
    """
    data, lines = load_yaml(text, filename)
    check_kind(data, lines, filename, "Gateway")
    gateway = validate_data(Gateway, data, lines, filename)
    issues = [issue_at(filename, lines, path, msg) for path, msg in check_gateway(gateway)]
    if issues:
        raise DocumentError(sorted(issues, key=lambda issue: issue.line or 0))
    return gateway


def load_policy(text: str, filename: str, gateway: Gateway | None = None) -> RolloutPolicy:
    """Parse, validate and cross-check a rollout policy file.

    Returns the policy only when it is sound: valid fields (explicit units, ranges), no problem
    from :func:`~controller.policy.rollout_checks.check_policy` and, when ``gateway`` is given,
    none from :func:`~controller.policy.rollout_checks.check_against_gateway` (the route and
    clusters exist there).

    Raises:
        DocumentError: every problem found, each with its line and field path, sorted by line.
    """
    data, lines = load_yaml(text, filename)
    check_kind(data, lines, filename, "RolloutPolicy")
    policy = validate_data(RolloutPolicy, data, lines, filename)
    problems = check_policy(policy)
    if gateway is not None:
        problems += check_against_gateway(policy, gateway)
    issues = [issue_at(filename, lines, path, msg) for path, msg in problems]
    if issues:
        raise DocumentError(sorted(issues, key=lambda issue: issue.line or 0))
    return policy
