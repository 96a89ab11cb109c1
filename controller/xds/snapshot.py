"""Immutable, versioned snapshots of everything the controller serves.

A :class:`Snapshot` holds, per type URL, the resources and their versions. Every resource is
serialized once, when it is built; responses to any number of streams are assembled from those
bytes (see :mod:`controller.xds.wire`).

Versions are content hashes (16 hex digits of SHA-256), per resource and per type. A restarted
controller therefore gives the same version to the same content: an Envoy that reconnects with
``version_info`` equal to what the controller would send is already up to date, and a counter
reset can never make two different configurations share a version.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from controller.xds import wire


def content_version(data: bytes) -> str:
    """16 hex digits of SHA-256 of ``data``: the version of one resource."""
    return hashlib.sha256(data).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class Resource:
    """One named xDS resource, serialized.

    Attributes:
        name: the resource name (listener, route configuration or cluster name).
        type_url: its type URL (see :mod:`controller.xds.typeurls`).
        version: content hash of the serialized message.
        any_bytes: ``google.protobuf.Any`` wrapping the message, encoded.
        delta_bytes: ``envoy.service.discovery.v3.Resource`` for Delta responses, encoded.
        clusters: for route configurations, the clusters their routes can send traffic to;
            the server holds a route table back until a stream has those clusters
            (make-before-break). Empty for other types.
    """

    name: str
    type_url: str
    version: str
    any_bytes: bytes
    delta_bytes: bytes
    clusters: frozenset[str] = frozenset()

    @classmethod
    def from_message_bytes(
        cls, name: str, type_url: str, message: bytes, clusters: Iterable[str] = ()
    ) -> Resource:
        """Wrap an already-serialized Envoy message."""
        version = content_version(message)
        any_bytes = wire.encode_any(type_url, message)
        return cls(
            name=name,
            type_url=type_url,
            version=version,
            any_bytes=any_bytes,
            delta_bytes=wire.delta_resource(name, version, any_bytes),
            clusters=frozenset(clusters),
        )


@dataclass(frozen=True)
class View:
    """What one subscription (a set of names, or all) sees of a type, computed once per
    snapshot and subscription and shared by every stream with that subscription.

    Attributes:
        resources: the existing resources named by the subscription, by name (read-only).
        clusters: for route configurations, the union of the clusters they name.
        body: the ``DiscoveryResponse`` without its nonce (append
            :func:`controller.xds.wire.nonce_field`).
    """

    resources: Mapping[str, Resource]
    clusters: frozenset[str]
    body: bytes


@dataclass(frozen=True)
class TypeSnapshot:
    """The resources of one type URL and the type's version.

    ``version`` hashes the names and versions of all resources of the type; it is the
    ``version_info`` of SotW responses and the ``system_version_info`` of Delta responses.
    """

    type_url: str
    version: str
    resources: Mapping[str, Resource]
    _views: dict[frozenset[str] | None, View] = field(
        default_factory=dict, repr=False, compare=False
    )

    @classmethod
    def build(cls, type_url: str, resources: Iterable[Resource]) -> TypeSnapshot:
        """Index resources by name and compute the type version.

        Raises:
            ValueError: two resources share a name, or a resource has another type.
        """
        by_name: dict[str, Resource] = {}
        for res in resources:
            if res.type_url != type_url:
                raise ValueError(f"resource {res.name!r} is a {res.type_url}, not a {type_url}")
            if res.name in by_name:
                raise ValueError(f"two {type_url} resources are named {res.name!r}")
            by_name[res.name] = res
        digest = hashlib.sha256()
        for name in sorted(by_name):
            digest.update(f"{name}\0{by_name[name].version}\0".encode())
        return cls(
            type_url, digest.hexdigest()[:16], MappingProxyType(dict(sorted(by_name.items())))
        )

    def select(self, names: frozenset[str] | None) -> list[Resource]:
        """The resources named in ``names`` that exist (all of them when ``names`` is None)."""
        if names is None:
            return list(self.resources.values())
        return [self.resources[n] for n in sorted(names) if n in self.resources]

    def view(self, names: frozenset[str] | None) -> View:
        """The :class:`View` of a subscription, memoized.

        The memo is what makes a push to N streams cost one encoding per distinct subscription,
        not N (the event loop is single-threaded, so the dict needs no lock).
        """
        view = self._views.get(names)
        if view is None:
            selected = self.select(names)
            clusters: set[str] = set()
            for res in selected:
                clusters |= res.clusters
            view = View(
                resources=MappingProxyType({r.name: r for r in selected}),
                clusters=frozenset(clusters),
                body=wire.sotw_response_body(
                    self.version, (r.any_bytes for r in selected), self.type_url
                ),
            )
            self._views[names] = view
        return view

    def sotw_body(self, names: frozenset[str] | None) -> bytes:
        """A ``DiscoveryResponse`` without nonce for the given subscription, memoized."""
        return self.view(names).body


@dataclass(frozen=True)
class Snapshot:
    """Everything served at one moment: a :class:`TypeSnapshot` per type URL.

    ``label`` is a human-readable tag for logs and status (e.g. ``"weights comments=90/10"``).
    """

    types: Mapping[str, TypeSnapshot]
    label: str = ""

    @classmethod
    def build(cls, resources: Mapping[str, Iterable[Resource]], label: str = "") -> Snapshot:
        """Build from resources grouped by type URL."""
        return cls(
            MappingProxyType({t: TypeSnapshot.build(t, rs) for t, rs in resources.items()}),
            label,
        )

    def get(self, type_url: str) -> TypeSnapshot | None:
        """The type's snapshot, or None for a type this snapshot does not serve."""
        return self.types.get(type_url)

    def version(self, type_url: str) -> str | None:
        """The type's version, or None for a type this snapshot does not serve."""
        ts = self.types.get(type_url)
        return ts.version if ts is not None else None
