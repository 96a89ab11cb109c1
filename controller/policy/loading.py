"""Loading gateway files: YAML text to a checked :class:`~controller.policy.gateway.Gateway`.

Pure: callers read the file and pass its text and name (used in messages only).
"""

from __future__ import annotations

from controller.policy.gateway import Gateway
from controller.policy.gateway_checks import check_gateway
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
