"""The resource kinds the fake API server serves, and URL path parsing.

Path shapes as the real API server's: ``/api/v1/...`` for the core group,
``/apis/{group}/{version}/...`` otherwise, ``namespaces/{ns}/`` before the plural for
namespaced kinds, and the cluster-wide list/watch without it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ResourceType:
    """One served kind: ``group`` is "" for the core group."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool = True
    status_subresource: bool = False
    custom: bool = False
    """A custom resource: its list items carry ``apiVersion`` / ``kind`` and DELETE answers
    with the deleted object; built-in kinds omit those in lists and answer DELETE with a
    ``Status`` of ``status: Success``."""

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def qualified(self) -> str:
        """``plural.group`` as the server names the resource in messages."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def key(self) -> str:
        return f"{self.group}/{self.plural}"


RESOURCES: tuple[ResourceType, ...] = (
    ResourceType(
        "sluice.dev", "v1alpha1", "rollouts", "Rollout", status_subresource=True, custom=True
    ),
    ResourceType("coordination.k8s.io", "v1", "leases", "Lease"),
    ResourceType("", "v1", "events", "Event"),
    ResourceType("events.k8s.io", "v1", "events", "Event"),
    ResourceType("discovery.k8s.io", "v1", "endpointslices", "EndpointSlice"),
    ResourceType("", "v1", "services", "Service"),
    ResourceType("", "v1", "namespaces", "Namespace", namespaced=False),
)
_BY_GROUP_VERSION = {(r.group, r.version, r.plural): r for r in RESOURCES}


@dataclass(frozen=True)
class Target:
    """What a request path addresses: a collection (``name`` None) or one object."""

    resource: ResourceType
    namespace: str | None
    name: str | None
    subresource: str | None


class PathError(Exception):
    """The path names no served resource (404)."""


def parse_path(path: str) -> Target:
    """Parse an API path into its :class:`Target`; :class:`PathError` if not served."""
    segs = [s for s in path.split("/") if s]
    if len(segs) >= 2 and segs[0] == "api":
        group, version, rest = "", segs[1], segs[2:]
    elif len(segs) >= 3 and segs[0] == "apis":
        group, version, rest = segs[1], segs[2], segs[3:]
    else:
        raise PathError(path)
    namespace = None
    if (
        len(rest) >= 3
        and rest[0] == "namespaces"
        and (group, version, rest[2]) in _BY_GROUP_VERSION
        and _BY_GROUP_VERSION[(group, version, rest[2])].namespaced
    ):
        namespace, rest = rest[1], rest[2:]
    if not rest or len(rest) > 3:
        raise PathError(path)
    resource = _BY_GROUP_VERSION.get((group, version, rest[0]))
    if resource is None:
        raise PathError(path)
    name = rest[1] if len(rest) >= 2 else None
    sub = rest[2] if len(rest) == 3 else None
    if sub is not None and (sub != "status" or not resource.status_subresource):
        raise PathError(path)
    if resource.namespaced and name is not None and namespace is None:
        raise PathError(path)
    return Target(resource, namespace, name, sub)
