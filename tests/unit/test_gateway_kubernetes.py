"""Gateway clusters sourced from Kubernetes: ``kubernetes: {service, namespace, port}``."""

from __future__ import annotations

import pytest

from controller.policy.gateway import Endpoint
from controller.policy.gateway_kubernetes import KubernetesService
from controller.policy.loading import load_gateway
from controller.policy.source import DocumentError

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
          routes:
            - name: comments
              match: {prefix: /}
              weightedClusters:
                - {cluster: comments-python, weight: 100}
                - {cluster: comments-go, weight: 0}
  clusters:
    - name: comments-python
      endpoints: [{address: 127.0.0.1, port: 8001}]
    - name: comments-go
      kubernetes: {service: comments-go, namespace: shop, port: http}
"""
SOURCE = "      kubernetes: {service: comments-go, namespace: shop, port: http}\n"


def _with(source: str) -> str:
    assert BASE.count(SOURCE) == 1
    return BASE.replace(SOURCE, source)


def _issues(text: str) -> list[tuple[int | None, str, str]]:
    with pytest.raises(DocumentError) as info:
        load_gateway(text, "gw.yaml")
    return [(i.line, i.field, i.message) for i in info.value.issues]


def test_a_kubernetes_cluster_loads_with_its_service() -> None:
    gw = load_gateway(BASE, "gw.yaml")
    python, go = gw.spec.clusters
    assert python.kubernetes is None
    assert python.endpoints == (Endpoint(address="127.0.0.1", port=8001),)
    assert go.endpoints == ()
    assert go.kubernetes == KubernetesService(service="comments-go", namespace="shop", port="http")
    assert gw.kubernetes_clusters() == {"comments-go": go.kubernetes}


def test_namespace_defaults_to_the_controllers() -> None:
    gw = load_gateway(_with("      kubernetes: {service: comments-go, port: 8080}\n"), "gw.yaml")
    source = gw.kubernetes_clusters()["comments-go"]
    assert source.namespace is None
    assert source.namespace_or("sluice") == "sluice"
    assert source.port == 8080
    explicit = load_gateway(BASE, "gw.yaml").kubernetes_clusters()["comments-go"]
    assert explicit.namespace_or("sluice") == "shop"


@pytest.mark.parametrize(("written", "port"), [("8080", 8080), ("'8080'", 8080), ("h2c", "h2c")])
def test_port_by_number_or_name(written: str, port: int | str) -> None:
    gw = load_gateway(_with(f"      kubernetes: {{service: s, port: {written}}}\n"), "gw.yaml")
    assert gw.kubernetes_clusters()["comments-go"].port == port


def test_both_sources_is_refused_at_the_cluster() -> None:
    text = _with(SOURCE + "      endpoints: [{address: 127.0.0.1, port: 8002}]\n")
    [(line, field, message)] = _issues(text)
    assert (line, field) == (20, "spec.clusters[1]")
    assert "exactly one of endpoints" in message
    assert "got both" in message


def test_neither_source_is_refused_at_the_cluster() -> None:
    [(line, field, message)] = _issues(_with("      protocol: http1\n"))
    assert (line, field) == (20, "spec.clusters[1]")
    assert "'comments-go' needs exactly one of endpoints" in message
    assert "got neither" in message


def test_empty_static_endpoints_are_still_refused() -> None:
    [(line, field, message)] = _issues(_with("      endpoints: []\n"))
    assert (line, field) == (21, "spec.clusters[1].endpoints")
    assert "at least 1" in message


@pytest.mark.parametrize(
    ("source", "field", "words"),
    [
        ("{port: http}", "service", "required field is missing"),
        ("{service: Comments, port: http}", "service", "a Service name is"),
        ("{service: 9lives, port: http}", "service", "starting with a letter"),
        ("{service: s, namespace: Shop_1, port: http}", "namespace", "a namespace is"),
        ("{service: s}", "port", "required field is missing"),
        ("{service: s, port: 0}", "port", "1 to 65535, got 0"),
        ("{service: s, port: 65536}", "port", "1 to 65535"),
        ("{service: s, port: Http}", "port", "Service port name"),
        ("{service: s, port: a--b}", "port", "Service port name"),
        ("{service: s, port: a-very-long-port-name}", "port", "at most 15"),
        ("{service: s, port: [80]}", "port", "got [80]"),
        ("{service: s, port: true}", "port", "got True"),
        ("{service: s, port: http, path: /x}", "path", "unknown field"),
    ],
)
def test_field_errors_name_the_field(source: str, field: str, words: str) -> None:
    issues = _issues(_with(f"      kubernetes: {source}\n"))
    assert [(line, f) for line, f, _ in issues] == [(21, f"spec.clusters[1].kubernetes.{field}")]
    assert words in issues[0][2]
