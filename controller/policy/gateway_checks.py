"""Cross-reference checks of a gateway that field validation cannot see.

Each check guards against something Envoy would reject (a NACK: the whole update is refused) or
would accept and then serve wrongly (a route to an unknown cluster answers 503 to users).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Hashable, Iterator

from controller.policy.gateway import Gateway, Listener, Route
from controller.policy.source import FieldPath, format_path

Problem = tuple[FieldPath, str]
"""A field path in the file's spelling (``("spec", "clusters", 1, "name")``) and a message."""

_LISTENERS: FieldPath = ("spec", "listeners")


def check_gateway(gw: Gateway) -> list[Problem]:
    """Cross-reference problems of a validated gateway, grouped by check; empty when sound.

    Reported: duplicate listener names; two listeners bound to the same address and port (a
    wildcard address overlaps every address of its family; port 0 never conflicts); listener
    addresses that are not IP addresses; duplicate virtual host names within a listener;
    domains served twice by one listener (Envoy NACKs the route configuration); route names
    used twice in the gateway; duplicate cluster names; routes naming an undeclared cluster.
    """
    problems: list[Problem] = []
    problems += _duplicates(
        ((*_LISTENERS, i, "name"), listener.name, f"listener name {listener.name!r}")
        for i, listener in enumerate(gw.spec.listeners)
    )
    problems += _listener_addresses(gw.spec.listeners)
    for i, listener in enumerate(gw.spec.listeners):
        problems += _listener_hosts(listener, (*_LISTENERS, i))
    problems += _duplicates(
        ((*path, "name"), route.name, f"route name {route.name!r}") for path, route in _routes(gw)
    )
    problems += _duplicates(
        (("spec", "clusters", i, "name"), cluster.name, f"cluster name {cluster.name!r}")
        for i, cluster in enumerate(gw.spec.clusters)
    )
    problems += _unknown_clusters(gw)
    return problems


def _duplicates(items: Iterator[tuple[FieldPath, Hashable, str]], why: str = "") -> list[Problem]:
    """A problem for each item whose key was already seen, naming the first occurrence."""
    first: dict[Hashable, FieldPath] = {}
    problems: list[Problem] = []
    for path, key, what in items:
        if key in first:
            problems.append((path, f"{what} is already used at {format_path(first[key])}{why}"))
        else:
            first[key] = path
    return problems


def _listener_addresses(listeners: tuple[Listener, ...]) -> list[Problem]:
    problems: list[Problem] = []
    bound: list[tuple[FieldPath, Listener, ipaddress.IPv4Address | ipaddress.IPv6Address]] = []
    for i, listener in enumerate(listeners):
        path = (*_LISTENERS, i)
        try:
            ip = ipaddress.ip_address(listener.address)
        except ValueError:
            msg = f"{listener.address!r} is not an IP address; Envoy listens on IP addresses only"
            problems.append(((*path, "address"), msg))
            continue
        if listener.port == 0:
            continue
        for other_path, other, other_ip in bound:
            if other.port == listener.port and _overlap(ip, other_ip):
                msg = (
                    f"listener {listener.name!r} binds {listener.address} port {listener.port},"
                    f" already bound by listener {other.name!r} ({format_path(other_path)})"
                )
                problems.append(((*path, "port"), msg))
                break
        bound.append((path, listener, ip))
    return problems


def _overlap(
    a: ipaddress.IPv4Address | ipaddress.IPv6Address,
    b: ipaddress.IPv4Address | ipaddress.IPv6Address,
) -> bool:
    return a == b or (a.version == b.version and (a.is_unspecified or b.is_unspecified))


def _listener_hosts(listener: Listener, path: FieldPath) -> list[Problem]:
    hosts = tuple(enumerate(listener.virtual_hosts))
    problems = _duplicates(
        ((*path, "virtualHosts", j, "name"), vh.name, f"virtual host name {vh.name!r}")
        for j, vh in hosts
    )
    problems += _duplicates(
        (
            ((*path, "virtualHosts", j, "domains", k), domain.lower(), f"domain {domain!r}")
            for j, vh in hosts
            for k, domain in enumerate(vh.domains)
        ),
        why=f"; Envoy would NACK the routes of listener {listener.name!r} (one domain, one host)",
    )
    return problems


def _routes(gw: Gateway) -> Iterator[tuple[FieldPath, Route]]:
    for i, listener in enumerate(gw.spec.listeners):
        for j, vhost in enumerate(listener.virtual_hosts):
            for k, route in enumerate(vhost.routes):
                yield (*_LISTENERS, i, "virtualHosts", j, "routes", k), route


def _unknown_clusters(gw: Gateway) -> list[Problem]:
    known = gw.cluster_names()
    listed = ", ".join(sorted(known))
    problems: list[Problem] = []
    for path, route in _routes(gw):
        targets: list[tuple[FieldPath, str]] = []
        if route.cluster is not None:
            targets.append(((*path, "cluster"), route.cluster))
        for w, weight in enumerate(route.weighted_clusters or ()):
            targets.append(((*path, "weightedClusters", w, "cluster"), weight.cluster))
        for target_path, name in targets:
            if name not in known:
                msg = (
                    f"route {route.name!r} names unknown cluster {name!r}: Envoy would answer"
                    f" 503 to users on this route; known clusters: {listed}"
                )
                problems.append((target_path, msg))
    return problems
