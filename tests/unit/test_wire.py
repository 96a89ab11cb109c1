"""The hand-written ADS wire codec agrees with betterproto2 (envoy-data-plane) both ways.

Our encoder's bytes must parse with betterproto2 into the expected messages; betterproto2's
request bytes must decode with our parser into the same fields; malformed bytes must raise
:class:`controller.xds.wire.WireError` (betterproto2 accepts garbage silently, a stream must not).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import pytest
import yaml
from envoy_data_plane.envoy.config.cluster.v3 import Cluster as EnvoyCluster
from envoy_data_plane.envoy.config.core.v3 import Locality, Node
from envoy_data_plane.envoy.config.endpoint.v3 import ClusterLoadAssignment
from envoy_data_plane.envoy.config.listener.v3 import Listener as EnvoyListener
from envoy_data_plane.envoy.config.route.v3 import RouteConfiguration
from envoy_data_plane.envoy.service.discovery.v3 import (
    DeltaDiscoveryRequest,
    DeltaDiscoveryResponse,
    DiscoveryRequest,
    DiscoveryResponse,
    Resource,
    ResourceLocator,
)
from envoy_data_plane.google.protobuf import Any as ProtoAny
from envoy_data_plane.google.rpc import Status
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controller.policy.gateway import Gateway
from controller.xds import resources, typeurls, wire
from controller.xds.resources import build_snapshot

# --- strategies ------------------------------------------------------------------------------

# Any Unicode text protobuf accepts as a string (no lone surrogates: not encodable as UTF-8).
TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)
NAMES = st.lists(TEXT, max_size=6)
NODES = st.none() | st.builds(
    Node,
    id=TEXT,
    cluster=TEXT,
    user_agent_name=TEXT,
    user_agent_version=TEXT,
    client_features=st.lists(TEXT, max_size=3),
)
# google.rpc.Code values are small; the property covers every non-negative int32.
STATUSES = st.none() | st.builds(Status, code=st.integers(0, 2**31 - 1), message=TEXT)

SETTINGS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _node_info(node: Node | None) -> wire.NodeInfo | None:
    if node is None:
        return None
    return wire.NodeInfo(node.id, node.cluster, node.user_agent_name, node.user_agent_version)


def _error(status: Status | None) -> wire.ErrorDetail | None:
    return None if status is None else wire.ErrorDetail(status.code, status.message)


# --- our encoder → betterproto2 ------------------------------------------------------------


def test_encode_any_parses_as_any() -> None:
    assert ProtoAny.parse(wire.encode_any("type.googleapis.com/x.Y", b"\x08\x01")) == ProtoAny(
        type_url="type.googleapis.com/x.Y", value=b"\x08\x01"
    )


def test_empty_sotw_response_parses() -> None:
    body = wire.sotw_response_body("", [], typeurls.ROUTE) + wire.nonce_field("1-1")
    assert DiscoveryResponse.parse(body) == DiscoveryResponse(type_url=typeurls.ROUTE, nonce="1-1")


@SETTINGS
@given(
    version=TEXT,
    type_url=TEXT,
    nonce=TEXT,
    items=st.lists(st.tuples(TEXT, st.binary(max_size=300)), max_size=5),
)
def test_sotw_response_parses_with_betterproto(
    version: str, type_url: str, nonce: str, items: list[tuple[str, bytes]]
) -> None:
    body = wire.sotw_response_body(version, [wire.encode_any(t, v) for t, v in items], type_url)
    parsed = DiscoveryResponse.parse(body + wire.nonce_field(nonce))
    assert parsed == DiscoveryResponse(
        version_info=version,
        resources=[ProtoAny(type_url=t, value=v) for t, v in items],
        type_url=type_url,
        nonce=nonce,
    )


@SETTINGS
@given(
    version=TEXT,
    type_url=TEXT,
    nonce=TEXT,
    items=st.lists(st.tuples(TEXT, TEXT, TEXT, st.binary(max_size=300)), max_size=5),
    removed=NAMES,
)
def test_delta_response_parses_with_betterproto(
    version: str,
    type_url: str,
    nonce: str,
    items: list[tuple[str, str, str, bytes]],
    removed: list[str],
) -> None:
    encoded = [wire.delta_resource(n, v, wire.encode_any(t, b)) for n, v, t, b in items]
    parsed = DeltaDiscoveryResponse.parse(
        wire.delta_response(version, encoded, type_url, removed, nonce)
    )
    assert parsed == DeltaDiscoveryResponse(
        system_version_info=version,
        resources=[
            Resource(name=n, version=v, resource=ProtoAny(type_url=t, value=b))
            for n, v, t, b in items
        ],
        type_url=type_url,
        nonce=nonce,
        removed_resources=removed,
    )


GATEWAY = """
apiVersion: sluice.dev/v1alpha1
kind: Gateway
metadata: {name: wire}
spec:
  listeners:
    - name: public
      address: 127.0.0.1
      port: 10000
      virtualHosts:
        - name: api
          routes:
            - name: comments
              match: {prefix: /api/comments}
              weightedClusters:
                - {cluster: comments-python, weight: 90}
                - {cluster: comments-go, weight: 10}
  clusters:
    - name: comments-python
      endpoints: [{address: 127.0.0.1, port: 8001}]
    - name: comments-go
      protocol: http2
      endpoints: [{address: 127.0.0.1, port: 8002}]
"""


def test_snapshot_bodies_carry_the_builders_messages() -> None:
    """Responses assembled from a snapshot decode into exactly what the builders produced."""
    gateway = Gateway.model_validate(yaml.safe_load(GATEWAY))
    snapshot = build_snapshot(gateway, {})
    spec = gateway.spec
    expected = {
        typeurls.CLUSTER: {c.name: resources.cluster(c) for c in spec.clusters},
        typeurls.ENDPOINT: {c.name: resources.load_assignment(c) for c in spec.clusters},
        typeurls.LISTENER: {ls.name: resources.listener(ls) for ls in spec.listeners},
        typeurls.ROUTE: {ls.name: resources.route_configuration(ls, {}) for ls in spec.listeners},
    }
    parsers = {
        typeurls.CLUSTER: EnvoyCluster.parse,
        typeurls.ENDPOINT: ClusterLoadAssignment.parse,
        typeurls.LISTENER: EnvoyListener.parse,
        typeurls.ROUTE: RouteConfiguration.parse,
    }
    for type_url, by_name in expected.items():
        ts = snapshot.get(type_url)
        assert ts is not None
        sotw = DiscoveryResponse.parse(ts.sotw_body(None) + wire.nonce_field("7-1"))
        assert sotw.version_info == ts.version
        assert sotw.type_url == type_url
        assert sotw.nonce == "7-1"
        assert [parsers[type_url](a.value) for a in sotw.resources] == [
            by_name[n] for n in sorted(by_name)
        ]
        assert {a.type_url for a in sotw.resources} == {type_url}

        delta = DeltaDiscoveryResponse.parse(
            wire.delta_response(
                ts.version, [r.delta_bytes for r in ts.resources.values()], type_url, [], "7-2"
            )
        )
        assert delta.system_version_info == ts.version
        for item in delta.resources:
            assert item.version == ts.resources[item.name].version
            assert item.resource is not None
            assert parsers[type_url](item.resource.value) == by_name[item.name]
        assert sorted(r.name for r in delta.resources) == sorted(by_name)


# --- betterproto2 → our parser -------------------------------------------------------------


@SETTINGS
@given(
    version=TEXT,
    node=NODES,
    names=NAMES,
    type_url=TEXT,
    nonce=TEXT,
    error=STATUSES,
)
def test_sotw_request_decodes_like_betterproto(
    version: str,
    node: Node | None,
    names: list[str],
    type_url: str,
    nonce: str,
    error: Status | None,
) -> None:
    message = DiscoveryRequest(
        version_info=version,
        node=node,
        resource_names=names,
        type_url=type_url,
        response_nonce=nonce,
        error_detail=error,
    )
    assert wire.parse_sotw_request(bytes(message)) == wire.SotwRequest(
        version_info=version,
        node=_node_info(node),
        resource_names=tuple(names),
        type_url=type_url,
        response_nonce=nonce,
        error_detail=_error(error),
    )


@SETTINGS
@given(
    node=NODES,
    type_url=TEXT,
    subscribe=NAMES,
    unsubscribe=NAMES,
    initial=st.dictionaries(TEXT, TEXT, max_size=5),
    nonce=TEXT,
    error=STATUSES,
)
def test_delta_request_decodes_like_betterproto(
    node: Node | None,
    type_url: str,
    subscribe: list[str],
    unsubscribe: list[str],
    initial: dict[str, str],
    nonce: str,
    error: Status | None,
) -> None:
    message = DeltaDiscoveryRequest(
        node=node,
        type_url=type_url,
        resource_names_subscribe=subscribe,
        resource_names_unsubscribe=unsubscribe,
        initial_resource_versions=initial,
        response_nonce=nonce,
        error_detail=error,
    )
    assert wire.parse_delta_request(bytes(message)) == wire.DeltaRequest(
        node=_node_info(node),
        type_url=type_url,
        resource_names_subscribe=tuple(subscribe),
        resource_names_unsubscribe=tuple(unsubscribe),
        initial_resource_versions=initial,
        response_nonce=nonce,
        error_detail=_error(error),
    )


def test_empty_error_detail_is_still_a_nack() -> None:
    """Presence of ``error_detail`` makes a NACK, even with code 0 and no message."""
    raw = bytes(DiscoveryRequest(type_url=typeurls.ROUTE, error_detail=Status()))
    assert wire.parse_sotw_request(raw).error_detail == wire.ErrorDetail(0, "")
    raw = bytes(DeltaDiscoveryRequest(type_url=typeurls.ROUTE, error_detail=Status()))
    assert wire.parse_delta_request(raw).error_detail == wire.ErrorDetail(0, "")


def test_unknown_fields_are_skipped() -> None:
    message = DiscoveryRequest(
        node=Node(
            id="envoy-1",
            locality=Locality(region="eu", zone="a"),
            client_features=["envoy.lb.does_not_support_overprovisioning"],
        ),
        type_url=typeurls.CLUSTER,
        resource_locators=[ResourceLocator(name="xdstp://x")],
    )
    # Unknown fixed64 (field 15) and fixed32 (field 14) fields after the known ones.
    raw = bytes(message) + b"\x79" + bytes(8) + b"\x75" + bytes(4)
    parsed = wire.parse_sotw_request(raw)
    assert parsed.node == wire.NodeInfo(id="envoy-1")
    assert parsed.type_url == typeurls.CLUSTER
    assert parsed.resource_names == ()


def test_negative_status_code_decodes_as_int32() -> None:
    """``google.rpc.Status.code`` is an int32: -1 is sent as a 10-byte varint, read back as -1."""
    raw = bytes(
        DiscoveryRequest(type_url=typeurls.ROUTE, error_detail=Status(code=-1, message="x"))
    )
    assert DiscoveryRequest.parse(raw).error_detail == Status(code=-1, message="x")
    assert wire.parse_sotw_request(raw).error_detail == wire.ErrorDetail(-1, "x")


# --- malformed bytes -----------------------------------------------------------------------

PARSERS = [
    pytest.param(wire.parse_sotw_request, id="sotw"),
    pytest.param(wire.parse_delta_request, id="delta"),
]

MALFORMED = [
    pytest.param(b"\xff", id="truncated-varint-key"),
    pytest.param(b"\xff\xff\xff", id="truncated-varint-key-3-bytes"),
    pytest.param(b"\x20", id="truncated-varint-value"),
    pytest.param(b"\x22\x05ab", id="length-past-end"),
    pytest.param(b"\x22\x80", id="truncated-length"),
    pytest.param(b"\x22" + b"\xff" * 9 + b"\x01", id="huge-length"),
    pytest.param(b"\x08" + b"\xff" * 10 + b"\x01", id="varint-longer-than-10-bytes"),
    pytest.param(b"\x0b\x00", id="wire-type-3-start-group"),
    pytest.param(b"\x0c", id="wire-type-4-end-group"),
    pytest.param(b"\x0e\x00", id="wire-type-6"),
    pytest.param(b"\x0f\x00", id="wire-type-7"),
    pytest.param(b"\x02\x00", id="field-number-0"),
    pytest.param(b"\x79\x00\x00", id="truncated-fixed64"),
    pytest.param(b"\x75\x00", id="truncated-fixed32"),
    pytest.param(b"\x12\x02\xc3\x28", id="invalid-utf8-type-url-delta-or-node-sotw"),
    pytest.param(b"\x22\x02\xc3\x28", id="invalid-utf8-type-url-sotw-or-unsub-delta"),
    pytest.param(b"\x1a\x03\xed\xa0\x80", id="invalid-utf8-surrogate"),
    pytest.param(b"\x22\x01\xff", id="invalid-utf8-ff"),
    pytest.param(b"\x20\x01", id="varint-where-string-expected"),
    pytest.param(b"\x10\x01", id="varint-where-message-or-string-expected"),
]


@pytest.mark.parametrize("parse", PARSERS)
@pytest.mark.parametrize("raw", MALFORMED)
def test_malformed_bytes_raise_wire_error(parse, raw: bytes) -> None:
    with pytest.raises(wire.WireError):
        parse(raw)


def test_invalid_utf8_in_nested_node_id_raises() -> None:
    node = b"\x0a\x02\xc3\x28"  # Node.id: invalid UTF-8
    with pytest.raises(wire.WireError, match="UTF-8"):
        wire.parse_sotw_request(b"\x12" + bytes([len(node)]) + node)
    with pytest.raises(wire.WireError, match="UTF-8"):
        wire.parse_delta_request(b"\x0a" + bytes([len(node)]) + node)


def test_invalid_status_code_wire_type_raises() -> None:
    status = b"\x0a\x01x"  # Status.code as a string
    with pytest.raises(wire.WireError):
        wire.parse_sotw_request(b"\x32" + bytes([len(status)]) + status)


def test_invalid_map_entry_raises() -> None:
    entry = b"\x0a\x01\xff"  # initial_resource_versions key: invalid UTF-8
    with pytest.raises(wire.WireError):
        wire.parse_delta_request(b"\x2a" + bytes([len(entry)]) + entry)


def test_betterproto_accepts_what_we_reject() -> None:
    """Why the hand parser exists: betterproto2 returns an empty message for garbage."""
    assert DiscoveryRequest.parse(b"\xff\xff\xff") == DiscoveryRequest()
    with pytest.raises(wire.WireError):
        wire.parse_sotw_request(b"\xff\xff\xff")


@settings(max_examples=500, deadline=None)
@given(raw=st.binary(max_size=64))
def test_arbitrary_bytes_parse_or_raise_wire_error_only(raw: bytes) -> None:
    for parse in (wire.parse_sotw_request, wire.parse_delta_request):
        with contextlib.suppress(wire.WireError):
            parse(raw)


def _sotw_fields_reference(raw: bytes) -> wire.SotwFields:
    """DiscoveryRequest decoded through the generic ``_fields`` loop (what the inlined
    ``sotw_request_fields`` must agree with)."""
    version_info = type_url = nonce = ""
    node = None
    names: list[str] = []
    error = None
    for number, _, value in wire._fields(raw):
        if number == 1:
            version_info = wire._text(number, value)
        elif number == 2:
            node = wire.parse_node(wire._bytes(number, value))
        elif number == 3:
            names.append(wire._text(number, value))
        elif number == 4:
            type_url = wire._text(number, value)
        elif number == 5:
            nonce = wire._text(number, value)
        elif number == 6:
            error = wire.parse_status(wire._bytes(number, value))
    return version_info, node, tuple(names), type_url, nonce, error


def _outcome(decode: Callable[[bytes], object], raw: bytes) -> object:
    try:
        return decode(raw)
    except wire.WireError:
        return wire.WireError


VALID_REQUEST = bytes(
    DiscoveryRequest(
        version_info="0123456789abcdef",
        node=Node(id="envoy-1", cluster="c", user_agent_name="envoy"),
        resource_names=["http"],
        type_url=typeurls.ROUTE,
        response_nonce="12-3",
        error_detail=Status(code=3, message="bad"),
    )
)


@settings(max_examples=500, deadline=None)
@given(
    raw=st.one_of(
        st.binary(max_size=64),
        # A valid request with bytes flipped, cut or inserted: mostly near-valid messages.
        st.tuples(st.integers(0, len(VALID_REQUEST) - 1), st.integers(0, 255), st.booleans()).map(
            lambda t: (
                VALID_REQUEST[: t[0]] + bytes([t[1]]) + VALID_REQUEST[t[0] + (1 if t[2] else 0) :]
            )
        ),
        st.integers(0, len(VALID_REQUEST)).map(lambda n: VALID_REQUEST[:n]),
    )
)
def test_inlined_sotw_decoder_accepts_and_rejects_like_the_generic_one(raw: bytes) -> None:
    _assert_same_outcome(raw)


# Every field number of DiscoveryRequest (and one past it) with every wire type, after a valid
# request: the cases where the two loops could differ.
@pytest.mark.parametrize("number", range(1, 8))
@pytest.mark.parametrize("tail", [b"\x01", b"\x81\x01", bytes(8), bytes(4), b"", b"\x02ab"])
@pytest.mark.parametrize("wire_type", range(6))
def test_inlined_sotw_decoder_per_field_and_wire_type(
    number: int, wire_type: int, tail: bytes
) -> None:
    _assert_same_outcome(VALID_REQUEST + bytes([number << 3 | wire_type]) + tail)


def _assert_same_outcome(raw: bytes) -> None:
    assert _outcome(wire.sotw_request_fields, raw) == _outcome(_sotw_fields_reference, raw)
