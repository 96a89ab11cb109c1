"""EndpointSlices of one Service → the endpoints Sluice serves for a ``kubernetes`` cluster.

Pure (no I/O): the objects are the API's JSON dicts (``discovery.k8s.io/v1`` EndpointSlice), as
a list or watch returns them. Semantics from the API reference (EndpointSlice v1):

- a Service's slices carry the label ``kubernetes.io/service-name: <service>``; its full set
  of endpoints is the union over its slices (an endpoint may briefly sit in two slices while
  the EndpointSlice controller moves it: deduplicated here);
- ``conditions.ready`` unset means ready; a terminating endpoint is never ready;
- ``addresses`` holds at least one address; those beyond the first have no defined meaning
  (kube-proxy ignores them), so only the first is used;
- ``addressType`` ``IPv4`` or ``IPv6``; ``FQDN`` slices have no defined meaning and Envoy's
  EDS takes IP addresses only: they are skipped, as are addresses that are not IPs;
- ``ports``: each slice port has a unique ``name`` (``""`` when the Service port is unnamed),
  a ``port`` (the endpoints' port, i.e. the Service's target port; unset means "all ports")
  and a ``protocol`` (TCP when unset). Only TCP ports are used.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from typing import Any

from controller.policy.gateway import Endpoint

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
"""The label tying an EndpointSlice to its Service (set by the EndpointSlice controller)."""

_IP_TYPES = frozenset({"IPv4", "IPv6"})


def service_of(slice_: Mapping[str, Any]) -> tuple[str, str] | None:
    """``(namespace, service)`` of an EndpointSlice, from its namespace and
    ``kubernetes.io/service-name`` label; None when it has no such label."""
    metadata = slice_.get("metadata") or {}
    service = (metadata.get("labels") or {}).get(SERVICE_NAME_LABEL)
    if not isinstance(service, str) or not service:
        return None
    return str(metadata.get("namespace") or ""), service


def slice_port(slice_: Mapping[str, Any], port: int | str) -> int | None:
    """The port the slice's endpoints listen on for ``port``, or None when the slice has none.

    Args:
        slice_: an EndpointSlice object.
        port: a Service port name (matched against the slice ports' ``name``) or a port number
            (matched against their ``port``; a slice port without ``port``, meaning "all
            ports", matches any number).
    """
    for entry in slice_.get("ports") or ():
        if (entry.get("protocol") or "TCP") != "TCP":
            continue
        number = entry.get("port")
        if isinstance(port, str):
            if port == entry.get("name") and isinstance(number, int):
                return number
        elif number is None or number == port:
            return port
    return None


def ready_endpoints(slices: Iterable[Mapping[str, Any]], port: int | str) -> tuple[Endpoint, ...]:
    """The ready endpoints of one Service's EndpointSlices, for one port.

    Args:
        slices: the Service's EndpointSlice objects (any order; slices of other Services must
            be filtered out by the caller, e.g. with :func:`service_of`).
        port: the Service port name or endpoint port number (see :func:`slice_port`).

    Returns:
        ``(address, port)`` endpoints, deduplicated and sorted (IPv4 before IPv6, then by
        address and port), so the same set always yields the same tuple (and byte-identical
        EDS). Empty when nothing is ready.
    """
    found: set[tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int]] = set()
    for slice_ in slices:
        if slice_.get("addressType") not in _IP_TYPES:
            continue
        number = slice_port(slice_, port)
        if number is None:
            continue
        for endpoint in slice_.get("endpoints") or ():
            if (endpoint.get("conditions") or {}).get("ready") is False:
                continue
            addresses = endpoint.get("addresses") or ()
            if not addresses:
                continue
            try:
                ip = ipaddress.ip_address(addresses[0])
            except ValueError:
                continue
            found.add((ip, number))
    ordered = sorted(found, key=lambda item: (item[0].version, int(item[0]), item[1]))
    return tuple(Endpoint(address=str(ip), port=number) for ip, number in ordered)
