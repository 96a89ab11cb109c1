"""API errors as the server returns them: ``Status`` objects (``kind: Status``,
``status: Failure``, ``reason``, ``code``, ``message``, ``details``), which the client turns
into ``ApiException`` with ``status`` = code and ``body`` = the JSON."""

from __future__ import annotations

from typing import Any

from .resources import ResourceType

REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    409: "Conflict",
    410: "Expired",
    415: "UnsupportedMediaType",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}


class ApiError(Exception):
    """An error the server answers with a ``Status`` body."""

    def __init__(
        self,
        code: int,
        message: str,
        reason: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason or REASONS.get(code, "Unknown")
        self.details = details

    def status(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details is not None:
            body["details"] = self.details
        return body


def _details(res: ResourceType, name: str) -> dict[str, Any]:
    return {"name": name, "group": res.group, "kind": res.plural}


def not_found(res: ResourceType, name: str) -> ApiError:
    return ApiError(404, f'{res.qualified} "{name}" not found', details=_details(res, name))


def already_exists(res: ResourceType, name: str) -> ApiError:
    return ApiError(
        409, f'{res.qualified} "{name}" already exists', "AlreadyExists", _details(res, name)
    )


def conflict(res: ResourceType, name: str) -> ApiError:
    return ApiError(
        409,
        f'Operation cannot be fulfilled on {res.qualified} "{name}": the object has been '
        "modified; please apply your changes to the latest version and try again",
        "Conflict",
        _details(res, name),
    )


def expired(requested: int, oldest: int) -> ApiError:
    return ApiError(410, f"too old resource version: {requested} ({oldest})", "Expired")
