"""The API calls of the Kubernetes rollout store, with their failures as store errors.

A thin layer over the ``kubernetes`` client (``CustomObjectsApi`` on ``rollouts.sluice.dev``
in one namespace, ``CoreV1Api`` for Events): objects go in and come out as JSON dicts; an
``ApiException`` becomes :class:`RolloutNotFoundError` (404 on a named object),
:class:`ConflictError` (409), :class:`ForbiddenError` (403) or
:class:`~controller.store.rollouts.StoreError` (anything else, with the status code and the
server's ``Status`` message); a connection failure becomes ``StoreError`` too.

Source: Kubernetes API concepts (``Status`` objects, HTTP status codes of the API).
"""

from __future__ import annotations

import builtins
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import urllib3.exceptions
from kubernetes import client as k8s_client
from kubernetes.client.exceptions import ApiException

from controller.k8s.crd import GROUP, PLURAL, VERSION
from controller.store.rollouts import RolloutNotFoundError, StoreError


class ConflictError(StoreError):
    """409 Conflict on a write: the object changed since it was read (resourceVersion), or
    one of this name was created meanwhile."""


class ForbiddenError(StoreError):
    """403 Forbidden: RBAC refuses the call."""


class RolloutApi:
    """``Rollout`` objects of one namespace, and Events about them.

    Args:
        api_client: the client (the caller owns it).
        namespace: the namespace of every call.
        timeout_s: each request's connect and read timeout, in seconds (> 0).
    """

    def __init__(self, api_client: k8s_client.ApiClient, namespace: str, timeout_s: float) -> None:
        self._objects = k8s_client.CustomObjectsApi(api_client)
        self._core = k8s_client.CoreV1Api(api_client)
        self.namespace = namespace
        self._timeout = float(timeout_s)

    def get(self, name: str) -> dict[str, Any]:
        """GET one object. Raises RolloutNotFoundError, StoreError."""
        with self._translated(name):
            return _dict(
                self._objects.get_namespaced_custom_object(
                    GROUP, VERSION, self.namespace, PLURAL, name, _request_timeout=self._timeout
                )
            )

    def list(self) -> builtins.list[dict[str, Any]]:
        """LIST every object of the namespace. Raises StoreError."""
        with self._translated(None):
            listed = _dict(
                self._objects.list_namespaced_custom_object(
                    GROUP, VERSION, self.namespace, PLURAL, _request_timeout=self._timeout
                )
            )
        return builtins.list(listed.get("items") or [])

    def create(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST a new object (its status is dropped by the server). Raises ConflictError
        (it exists), ForbiddenError, StoreError."""
        with self._translated(name):
            return _dict(
                self._objects.create_namespaced_custom_object(
                    GROUP, VERSION, self.namespace, PLURAL, body, _request_timeout=self._timeout
                )
            )

    def replace(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        """PUT the object (spec and metadata; the server keeps the status) on
        ``body.metadata.resourceVersion``. Raises ConflictError, ForbiddenError,
        RolloutNotFoundError, StoreError."""
        return self._put(self._objects.replace_namespaced_custom_object, name, body)

    def replace_status(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        """PUT ``/status`` (only ``status`` changes) on ``body.metadata.resourceVersion``.
        Raises ConflictError, ForbiddenError, RolloutNotFoundError, StoreError."""
        return self._put(self._objects.replace_namespaced_custom_object_status, name, body)

    def delete(self, name: str, uid: str) -> None:
        """DELETE the object if its uid is still ``uid``. Raises StoreError (and kin)."""
        with self._translated(name):
            self._objects.delete_namespaced_custom_object(
                GROUP,
                VERSION,
                self.namespace,
                PLURAL,
                name,
                body=k8s_client.V1DeleteOptions(preconditions=k8s_client.V1Preconditions(uid=uid)),
                _request_timeout=self._timeout,
            )

    def create_event(self, body: dict[str, Any]) -> None:
        """POST a ``core/v1`` Event (a JSON dict). Raises ConflictError (same name),
        ForbiddenError, StoreError."""
        with self._translated(None):
            event = k8s_client.CoreV1Event.from_dict(body)
            if event is None:  # pragma: no cover - from_dict returns None for None only
                raise StoreError("an Event body must be a JSON object")
            response = self._core.create_namespaced_event(
                self.namespace,
                event,
                _preload_content=False,
                _request_timeout=self._timeout,
            )
            # the body unread, its connection must not go back to the pool (the next request
            # on it would read this reply): read it, then release
            response.read()  # type: ignore[attr-defined]
            response.release_conn()  # type: ignore[attr-defined]

    def _put(
        self, method: Callable[..., object], name: str, body: dict[str, Any]
    ) -> dict[str, Any]:
        with self._translated(name):
            return _dict(
                method(
                    GROUP,
                    VERSION,
                    self.namespace,
                    PLURAL,
                    name,
                    body,
                    _request_timeout=self._timeout,
                )
            )

    @contextmanager
    def _translated(self, name: str | None) -> Iterator[None]:
        try:
            yield
        except ApiException as exc:
            what = f"rollouts in namespace {self.namespace!r}" + (
                "" if name is None else f" ({name!r})"
            )
            message = f"Kubernetes API: {what}: {exc.status} {api_message(exc)}"
            if exc.status == 404 and name is not None:
                raise RolloutNotFoundError(name) from exc
            if exc.status == 409:
                raise ConflictError(message) from exc
            if exc.status == 403:
                raise ForbiddenError(message) from exc
            raise StoreError(message) from exc
        except urllib3.exceptions.HTTPError as exc:
            raise StoreError(f"Kubernetes API unreachable: {exc}") from exc


def api_message(exc: ApiException) -> str:
    """The ``message`` of the API's ``Status`` body, else the HTTP reason."""
    try:
        body = json.loads(exc.body or "")
        return str(body.get("message") or exc.reason)
    except (ValueError, AttributeError, TypeError):
        return str(exc.reason)


def _dict(value: object) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise StoreError(f"Kubernetes API: expected a JSON object, got {type(value).__name__}")
    return value
