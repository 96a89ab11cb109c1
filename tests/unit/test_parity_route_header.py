"""The mirrored request's route header is defined once, in the policy (both the xDS side that
adds it and the comparator that reads it take it from there)."""

from __future__ import annotations

from controller.parity import forward
from controller.policy import parity
from controller.xds import mirror


def test_route_header_is_defined_once_in_the_policy() -> None:
    assert parity.ROUTE_HEADER == "x-sluice-parity-route"
    assert mirror.ROUTE_HEADER is parity.ROUTE_HEADER
    assert forward.ROUTE_HEADER is parity.ROUTE_HEADER


def test_the_comparator_never_forwards_it() -> None:
    raw = ((parity.ROUTE_HEADER.upper().encode(), b"items"), (b"accept", b"*/*"))
    assert forward.forwarded_headers(raw) == (("accept", "*/*"),)
