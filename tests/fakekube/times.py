"""Time fields as the API server decodes and re-encodes them: ``metav1.Time`` (RFC 3339,
whole seconds, UTC ``Z``) and ``metav1.MicroTime`` (RFC 3339 with six fractional digits, UTC
``Z``). A value that is not RFC 3339 with a zone is refused (400), as Go's decoder does.

Source: k8s.io/apimachinery/pkg/apis/meta/v1 ``Time`` and ``MicroTime`` JSON marshalling.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from .errors import ApiError
from .resources import ResourceType

_TIME = "time"
_MICRO = "micro"
_FIELDS: dict[str, tuple[tuple[tuple[str, ...], str], ...]] = {
    "coordination.k8s.io/leases": (
        (("spec", "acquireTime"), _MICRO),
        (("spec", "renewTime"), _MICRO),
    ),
    "/events": (
        (("firstTimestamp",), _TIME),
        (("lastTimestamp",), _TIME),
        (("eventTime",), _MICRO),
        (("series", "lastObservedTime"), _MICRO),
    ),
    "events.k8s.io/events": (
        (("eventTime",), _MICRO),
        (("deprecatedFirstTimestamp",), _TIME),
        (("deprecatedLastTimestamp",), _TIME),
        (("series", "lastObservedTime"), _MICRO),
    ),
}
_EVERY_KIND = ((("metadata", "deletionTimestamp"), _TIME),)


def _format(value: Any, kind: str, field: str) -> str:
    if not isinstance(value, str):
        raise ApiError(400, f"{field}: a time must be an RFC 3339 string, got {value!r}")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        raise ApiError(400, f'{field}: parsing time "{value}" as RFC 3339: not a time with a zone')
    moment = moment.astimezone(UTC)
    if kind == _MICRO:
        return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def normalize_times(res: ResourceType, obj: dict[str, Any]) -> None:
    """Re-encode ``obj``'s time fields in place as the server stores them."""
    for path, kind in (*_EVERY_KIND, *_FIELDS.get(res.key, ())):
        node: Any = obj
        for part in path[:-1]:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict) and node.get(path[-1]) is not None:
            node[path[-1]] = _format(node[path[-1]], kind, ".".join(path))
