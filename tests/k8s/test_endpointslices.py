"""EndpointSlices → endpoints: the pure mapping (``controller.k8s.endpointslices``)."""

from __future__ import annotations

from typing import Any

import pytest

from controller.k8s.endpointslices import (
    SERVICE_NAME_LABEL,
    ready_endpoints,
    service_of,
    slice_port,
)
from controller.policy.gateway import Cluster, Endpoint
from controller.xds.resources import load_assignment

HTTP = [{"name": "http", "port": 8080, "protocol": "TCP"}, {"name": "metrics", "port": 9090}]


def _slice(
    endpoints: list[dict[str, Any]],
    ports: list[dict[str, Any]] | None = None,
    *,
    name: str = "comments-abc",
    service: str | None = "comments",
    address_type: str = "IPv4",
) -> dict[str, Any]:
    labels = {SERVICE_NAME_LABEL: service} if service is not None else {}
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": name, "namespace": "shop", "labels": labels},
        "addressType": address_type,
        "ports": HTTP if ports is None else ports,
        "endpoints": endpoints,
    }


def _ep(address: str, ready: bool | None = True, *more: str) -> dict[str, Any]:
    endpoint: dict[str, Any] = {"addresses": [address, *more]}
    if ready is not None:
        endpoint["conditions"] = {"ready": ready, "serving": ready}
    return endpoint


def _pairs(endpoints: tuple[Endpoint, ...]) -> list[tuple[str, int]]:
    return [(e.address, e.port) for e in endpoints]


def test_only_ready_endpoints_and_unset_means_ready() -> None:
    slice_ = _slice(
        [
            _ep("10.0.0.1", True),
            _ep("10.0.0.2", False),
            _ep("10.0.0.3", None),  # no conditions at all
            {"addresses": ["10.0.0.4"], "conditions": {}},  # ready unset
            {"addresses": ["10.0.0.5"], "conditions": {"ready": False, "terminating": True}},
        ]
    )
    assert _pairs(ready_endpoints([slice_], "http")) == [
        ("10.0.0.1", 8080),
        ("10.0.0.3", 8080),
        ("10.0.0.4", 8080),
    ]


def test_port_by_name_and_by_number() -> None:
    slice_ = _slice([_ep("10.0.0.1")])
    assert _pairs(ready_endpoints([slice_], "metrics")) == [("10.0.0.1", 9090)]
    assert _pairs(ready_endpoints([slice_], 9090)) == [("10.0.0.1", 9090)]
    assert _pairs(ready_endpoints([slice_], 8080)) == [("10.0.0.1", 8080)]
    assert ready_endpoints([slice_], "grpc") == ()
    assert ready_endpoints([slice_], 8081) == ()


def test_port_rules() -> None:
    unnamed = _slice([_ep("10.0.0.1")], [{"name": "", "port": 8000}])
    assert slice_port(unnamed, 8000) == 8000
    assert slice_port(unnamed, "http") is None
    udp = _slice([_ep("10.0.0.1")], [{"name": "dns", "port": 53, "protocol": "UDP"}])
    assert slice_port(udp, "dns") is None
    assert slice_port(udp, 53) is None
    every = _slice([_ep("10.0.0.1")], [{"name": "all"}])  # port unset: all ports
    assert slice_port(every, 7000) == 7000
    assert slice_port(every, "all") is None  # a name needs a number to go with it
    assert ready_endpoints([_slice([_ep("10.0.0.1")], [])], 8080) == ()


def test_several_slices_are_joined_deduplicated_and_sorted() -> None:
    a = _slice([_ep("10.0.0.10"), _ep("10.0.0.2")], name="a")
    # While the EndpointSlice controller moves an endpoint, it may sit in two slices.
    b = _slice([_ep("10.0.0.2"), _ep("10.0.0.1")], name="b")
    v6 = _slice([_ep("fd00::1"), _ep("fd00:0:0:0::2")], name="c", address_type="IPv6")
    got = ready_endpoints([v6, b, a], "http")
    assert _pairs(got) == [
        ("10.0.0.1", 8080),
        ("10.0.0.2", 8080),
        ("10.0.0.10", 8080),  # numeric order, not text order
        ("fd00::1", 8080),
        ("fd00::2", 8080),  # canonical form
    ]
    assert ready_endpoints([a, b, v6], "http") == got


def test_the_same_set_gives_byte_identical_assignments() -> None:
    a = _slice([_ep("10.0.0.2"), _ep("10.0.0.1")], name="a")
    b = _slice([_ep("10.0.0.3")], name="b")
    first = ready_endpoints([a, b], "http")
    second = ready_endpoints([b, _slice([_ep("10.0.0.1"), _ep("10.0.0.2")], name="a")], "http")
    cluster = Cluster(name="comments", kubernetes={"service": "comments", "port": "http"})
    assert bytes(load_assignment(cluster, first)) == bytes(load_assignment(cluster, second))


def test_only_the_first_address_of_an_endpoint() -> None:
    slice_ = _slice([_ep("10.0.0.1", True, "10.0.0.99")])
    assert _pairs(ready_endpoints([slice_], "http")) == [("10.0.0.1", 8080)]


@pytest.mark.parametrize(
    "slice_",
    [
        _slice([_ep("comments.shop.example")], address_type="FQDN"),
        _slice([_ep("not-an-ip")]),
        _slice([{"addresses": []}]),
        _slice([]),
        {"metadata": {"name": "bare"}},
    ],
)
def test_what_cannot_be_served_is_skipped(slice_: dict[str, Any]) -> None:
    assert ready_endpoints([slice_], "http") == ()


def test_service_of() -> None:
    assert service_of(_slice([])) == ("shop", "comments")
    assert service_of(_slice([], service=None)) is None
    assert service_of({"metadata": {"labels": {SERVICE_NAME_LABEL: ""}}}) is None
