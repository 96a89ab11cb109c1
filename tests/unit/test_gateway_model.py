"""Gateway files: the model, cross-reference checks, the default gateway and the examples."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
import yaml

from controller.policy.defaults import default_gateway_text
from controller.policy.gateway_checks import check_gateway
from controller.policy.loading import load_gateway
from controller.policy.source import DocumentError
from controller.policy.units import format_duration, parse_duration

POLICIES = Path(__file__).resolve().parents[2] / "policies"

# Line numbers are part of the tests below: keep this text's layout.
BASE = """\
apiVersion: sluice.dev/v1alpha1
kind: Gateway
metadata: {name: test}
spec:
  listeners:
    - name: http
      address: 127.0.0.1
      port: 10000
      virtualHosts:
        - name: api
          domains: ["*"]
          routes:
            - name: comments
              match: {prefix: /api/comments}
              weightedClusters:
                - {cluster: comments-python, weight: 100}
                - {cluster: comments-go, weight: 0}
              timeout: 5s
            - name: default
              match: {prefix: /}
              cluster: monolith
  clusters:
    - name: monolith
      endpoints: [{address: 127.0.0.1, port: 8001}]
    - name: comments-python
      endpoints: [{address: 127.0.0.1, port: 8001}]
    - name: comments-go
      endpoints: [{address: 127.0.0.1, port: 8002}]
"""


def _edit(old: str, new: str, text: str = BASE) -> str:
    assert text.count(old) == 1, f"{old!r} must occur once"
    return text.replace(old, new)


def _issues(text: str) -> list[tuple[int | None, str, str]]:
    with pytest.raises(DocumentError) as info:
        load_gateway(text, "gw.yaml")
    return [(i.line, i.field, i.message) for i in info.value.issues]


def _gateway_files() -> list[Path]:
    return sorted(
        path
        for path in POLICIES.glob("*.y*ml")
        if (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("kind") == "Gateway"
    )


def test_base_gateway_is_valid() -> None:
    gw = load_gateway(BASE, "gw.yaml")
    route = gw.routes()["comments"]
    assert route.timeout == timedelta(seconds=5)
    assert route.referenced_clusters() == ("comments-python", "comments-go")
    assert gw.cluster_names() == {"monolith", "comments-python", "comments-go"}
    assert check_gateway(gw) == []


def test_default_gateway_is_valid_and_as_documented() -> None:
    gw = load_gateway(default_gateway_text(), "<default>")
    [listener] = gw.spec.listeners
    assert (listener.name, listener.address, listener.port) == ("http", "127.0.0.1", 10000)
    [vhost] = listener.virtual_hosts
    assert (vhost.name, vhost.domains) == ("api", ("*",))
    comments, default = vhost.routes
    assert comments.name == "comments"
    assert comments.match.prefix == "/api/comments"
    assert [(w.cluster, w.weight) for w in comments.weighted_clusters or ()] == [
        ("comments-python", 100),
        ("comments-go", 0),
    ]
    assert comments.timeout == timedelta(seconds=5)
    assert comments.retry_policy is not None
    assert (default.name, default.match.prefix, default.cluster) == ("default", "/", "monolith")
    endpoints = {c.name: [(e.address, e.port) for e in c.endpoints] for c in gw.spec.clusters}
    assert endpoints == {
        "monolith": [("127.0.0.1", 8001)],
        "comments-python": [("127.0.0.1", 8001)],
        "comments-go": [("127.0.0.1", 8002)],
    }


def test_policies_folder_has_a_gateway_example() -> None:
    assert _gateway_files(), f"no Gateway file in {POLICIES}"


@pytest.mark.parametrize("path", _gateway_files(), ids=lambda p: p.name)
def test_every_gateway_in_policies_is_valid(path: Path) -> None:
    gw = load_gateway(path.read_text(encoding="utf-8"), str(path))
    assert check_gateway(gw) == []


def test_duration_without_unit_is_rejected() -> None:
    issues = _issues(_edit("timeout: 5s", "timeout: 5"))
    assert issues == [
        (
            18,
            "spec.listeners[0].virtualHosts[0].routes[0].timeout",
            "duration 5 has no unit; write e.g. '5s' or '5ms'",
        )
    ]


@pytest.mark.parametrize("bad", ["5 s", "5sec", "-5s", "s", "1e3s", "true"])
def test_malformed_durations_are_rejected(bad: str) -> None:
    [(line, field, message)] = _issues(_edit("timeout: 5s", f"timeout: {bad}"))
    assert (line, field) == (18, "spec.listeners[0].virtualHosts[0].routes[0].timeout")
    assert "duration" in message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("250ms", timedelta(milliseconds=250)),
        ("1h30m", timedelta(minutes=90)),
        ("1.5s", timedelta(seconds=1.5)),
        ("30d", None),
        ("99999999999999h", None),
    ],
)
def test_parse_duration(text: str, expected: timedelta | None) -> None:
    if expected is None:
        with pytest.raises(ValueError, match="duration"):
            parse_duration(text)
    else:
        assert parse_duration(text) == expected
        assert parse_duration(format_duration(expected)) == expected


@pytest.mark.parametrize("seconds", [0, 0.000001, 0.25, 1, 1.5, 2.000005, 2_592_000])
def test_format_duration_round_trips_without_exponents(seconds: float) -> None:
    value = timedelta(seconds=seconds)
    text = format_duration(value)
    assert "e" not in text
    assert parse_duration(text) == value


def test_unknown_cluster_in_cluster_is_a_503() -> None:
    [(line, field, message)] = _issues(_edit("cluster: monolith", "cluster: monolyth"))
    assert (line, field) == (21, "spec.listeners[0].virtualHosts[0].routes[1].cluster")
    assert "'monolyth'" in message
    assert "503" in message
    assert "known clusters: comments-go, comments-python, monolith" in message


def test_unknown_cluster_in_weighted_clusters_is_a_503() -> None:
    [(line, field, message)] = _issues(_edit("cluster: comments-go,", "cluster: comments-rs,"))
    assert (line, field) == (
        17,
        "spec.listeners[0].virtualHosts[0].routes[0].weightedClusters[1].cluster",
    )
    assert "'comments-rs'" in message
    assert "503" in message


def test_duplicate_names_are_reported_where_they_repeat() -> None:
    text = _edit("- name: default", "- name: comments")
    text = _edit("- name: comments-go", "- name: monolith", text)
    issues = _issues(text)
    assert [(line, field) for line, field, _ in issues] == [
        # comments-go is no longer declared
        (17, "spec.listeners[0].virtualHosts[0].routes[0].weightedClusters[1].cluster"),
        (19, "spec.listeners[0].virtualHosts[0].routes[1].name"),
        (27, "spec.clusters[2].name"),
    ]
    messages = {field: message for _, field, message in issues}
    assert messages["spec.listeners[0].virtualHosts[0].routes[1].name"] == (
        "route name 'comments' is already used at spec.listeners[0].virtualHosts[0].routes[0].name"
    )
    assert messages["spec.clusters[2].name"] == (
        "cluster name 'monolith' is already used at spec.clusters[0].name"
    )


SECOND_LISTENER = """\
    - name: {name}
      address: {address}
      port: {port}
      virtualHosts:
        - name: api
          routes:
            - {{name: other, match: {{prefix: /}}, cluster: monolith}}
"""


def _two_listeners(name: str = "http2", address: str = "127.0.0.1", port: int = 10000) -> str:
    second = SECOND_LISTENER.format(name=name, address=address, port=port)
    return _edit("  clusters:\n", second + "  clusters:\n")


def test_duplicate_listener_name() -> None:
    issues = _issues(_two_listeners(name="http", port=10001))
    assert issues == [
        (
            22,
            "spec.listeners[1].name",
            "listener name 'http' is already used at spec.listeners[0].name",
        )
    ]


@pytest.mark.parametrize("address", ["127.0.0.1", "0.0.0.0"])
def test_listeners_bound_to_the_same_address_and_port(address: str) -> None:
    [(line, field, message)] = _issues(_two_listeners(address=address))
    assert (line, field) == (24, "spec.listeners[1].port")
    assert "already bound by listener 'http'" in message


@pytest.mark.parametrize(
    ("address", "port"), [("127.0.0.2", 10000), ("127.0.0.1", 10001), ("::", 10000)]
)
def test_listeners_on_distinct_sockets_are_fine(address: str, port: int) -> None:
    load_gateway(_two_listeners(address=f'"{address}"', port=port), "gw.yaml")


def test_port_zero_never_conflicts() -> None:
    text = _edit("port: 10000", "port: 0", _two_listeners(port=0))
    load_gateway(text, "gw.yaml")


def test_listener_address_must_be_an_ip() -> None:
    [(line, field, message)] = _issues(_edit("address: 127.0.0.1\n", "address: localhost\n"))
    assert (line, field) == (7, "spec.listeners[0].address")
    assert "not an IP address" in message


SECOND_VHOST = """\
        - name: NAME
          domains: [DOMAINS]
          routes:
            - {name: www, match: {prefix: /}, cluster: monolith}
"""


def _two_vhosts(name: str, domains: str) -> str:
    second = SECOND_VHOST.replace("NAME", name).replace("DOMAINS", domains)
    return _edit("  clusters:\n", second + "  clusters:\n")


def test_duplicate_virtual_host_name_within_a_listener() -> None:
    [(line, field, message)] = _issues(_two_vhosts("api", "www.example.com"))
    assert (line, field) == (22, "spec.listeners[0].virtualHosts[1].name")
    assert message == (
        "virtual host name 'api' is already used at spec.listeners[0].virtualHosts[0].name"
    )


@pytest.mark.parametrize(
    ("domains", "field", "first"),
    [
        ('"*"', "virtualHosts[1].domains[0]", "virtualHosts[0].domains[0]"),
        ("a.example, A.EXAMPLE", "virtualHosts[1].domains[1]", "virtualHosts[1].domains[0]"),
    ],
)
def test_duplicate_domains_within_a_listener_would_be_nacked(
    domains: str, field: str, first: str
) -> None:
    [(line, reported, message)] = _issues(_two_vhosts("www", domains))
    assert (line, reported) == (23, f"spec.listeners[0].{field}")
    assert f"is already used at spec.listeners[0].{first}" in message
    assert "Envoy would NACK the routes of listener 'http'" in message


def test_distinct_domains_are_fine() -> None:
    gw = load_gateway(_two_vhosts("www", "www.example.com, example.com"), "gw.yaml")
    assert [vh.name for vh in gw.spec.listeners[0].virtual_hosts] == ["api", "www"]


def test_route_with_both_cluster_and_weighted_clusters() -> None:
    [(line, field, message)] = _issues(
        _edit("timeout: 5s", "timeout: 5s\n              cluster: monolith")
    )
    assert (line, field) == (13, "spec.listeners[0].virtualHosts[0].routes[0]")
    assert message == "route 'comments' needs exactly one of cluster or weightedClusters"


def test_header_match_needs_exactly_one_kind() -> None:
    text = _edit(
        "match: {prefix: /api/comments}",
        "match:\n                prefix: /api/comments\n                headers:\n"
        "                  - {name: x-beta, exact: '1', prefix: '1'}",
    )
    [(line, field, message)] = _issues(text)
    assert (line, field) == (17, "spec.listeners[0].virtualHosts[0].routes[0].match.headers[0]")
    assert "exactly one of exact, prefix, regex, present" in message


def test_fields_are_spelled_in_camel_case_only() -> None:
    issues = _issues(_edit("virtualHosts:", "virtual_hosts:"))
    # the missing virtualHosts is reported at its listener, the snake_case key where it is
    assert issues[0] == (6, "spec.listeners[0].virtualHosts", "required field is missing")
    assert issues[1][:2] == (9, "spec.listeners[0].virtual_hosts")
    assert issues[1][2].startswith("unknown field (did you mean 'virtualHosts'?); allowed: name,")
    assert len(issues) == 2


def test_several_errors_are_all_reported_in_line_order() -> None:
    text = _edit("port: 10000", "port: 70000")
    text = _edit("- name: comments-go", "- name: Comments-Go", text)
    text = _edit("apiVersion: sluice.dev/v1alpha1", "apiVersion: sluice.dev/v1", text)
    issues = _issues(text)
    assert [(line, field) for line, field, _ in issues] == [
        (1, "apiVersion"),
        (8, "spec.listeners[0].port"),
        (27, "spec.clusters[2].name"),
    ]
    assert issues[0][2] == "should be 'sluice.dev/v1alpha1', got 'sluice.dev/v1'"
    assert issues[1][2] == "Input should be less than or equal to 65535 (got 70000)"


def test_a_document_of_another_kind_is_refused_early() -> None:
    text = _edit("kind: Gateway", "kind: RolloutPolicy")
    assert _issues(text) == [(2, "kind", "this is a RolloutPolicy document, expected kind Gateway")]
