"""Which cluster and namespace: explicit kubeconfig/context, in-cluster, default kubeconfig."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from fakekube import FakeKube

from controller.k8s.client import ClusterError, api_client, namespace_default
from controller.k8s.store import KubernetesRolloutStore


def kubeconfig(path: Path, current: str = "one") -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {"name": "c1", "cluster": {"server": "http://127.0.0.1:7001"}},
                    {"name": "c2", "cluster": {"server": "http://127.0.0.1:7002"}},
                ],
                "users": [{"name": "u", "user": {"token": "tok-123"}}],
                "contexts": [
                    {"name": "one", "context": {"cluster": "c1", "user": "u", "namespace": "ns1"}},
                    {"name": "two", "context": {"cluster": "c2", "user": "u"}},
                ],
                "current-context": current,
            }
        )
    )
    return path


@pytest.fixture(autouse=True)
def _no_cluster(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Outside any cluster, with an empty home: nothing of the machine leaks in."""
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_PORT", raising=False)
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


def test_explicit_kubeconfig_and_context(tmp_path: Path) -> None:
    path = kubeconfig(tmp_path / "config")
    client = api_client(path)
    assert client.configuration.host == "http://127.0.0.1:7001"
    assert client.configuration.auth_settings()["BearerToken"]["value"] == "Bearer tok-123"
    assert api_client(path, "two").configuration.host == "http://127.0.0.1:7002"
    assert namespace_default(path) == "ns1"
    assert namespace_default(path, "two") == "default"  # the context names none


def test_a_context_that_does_not_exist(tmp_path: Path) -> None:
    path = kubeconfig(tmp_path / "config")
    with pytest.raises(ClusterError, match="three"):
        api_client(path, "three")
    with pytest.raises(ClusterError, match="no context named 'three'"):
        namespace_default(path, "three")


def test_a_missing_or_broken_kubeconfig(tmp_path: Path) -> None:
    with pytest.raises(ClusterError, match=r"kubeconfig .*nope does not exist"):
        api_client(tmp_path / "nope")
    broken = tmp_path / "broken"
    broken.write_text("just a string\n")
    with pytest.raises(ClusterError, match="broken"):
        api_client(broken)


def test_nothing_configured(tmp_path: Path) -> None:
    with pytest.raises(ClusterError, match="no Kubernetes configuration") as info:
        api_client()
    assert "--kubeconfig" in str(info.value)
    assert namespace_default() == "default"


def test_default_kubeconfig_from_env_and_home(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    home_config = tmp_path / "home" / ".kube" / "config"
    home_config.parent.mkdir(parents=True)
    kubeconfig(home_config, current="two")
    assert api_client().configuration.host == "http://127.0.0.1:7002"
    assert api_client(context="one").configuration.host == "http://127.0.0.1:7001"
    assert namespace_default(context="one") == "ns1"
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig(tmp_path / "env-config", current="one")))
    assert api_client().configuration.host == "http://127.0.0.1:7001"
    assert namespace_default() == "ns1"


def test_in_cluster(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    sa = tmp_path / "sa"
    sa.mkdir()
    (sa / "token").write_text("pod-token")
    (sa / "ca.crt").write_text("not checked until a TLS connection\n")
    (sa / "namespace").write_text("sluice\n")
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    client = api_client(service_account_dir=sa)
    assert client.configuration.host == "https://10.96.0.1:443"
    token = client.configuration.auth_settings()["BearerToken"]["value"]
    assert token.lower() == "bearer pod-token"  # the scheme is case-insensitive (RFC 7235)
    assert client.configuration.ssl_ca_cert == str(sa / "ca.crt")
    assert namespace_default(service_account_dir=sa) == "sluice"
    # an explicit kubeconfig wins over the pod's service account
    path = kubeconfig(tmp_path / "config")
    assert api_client(path, service_account_dir=sa).configuration.host == "http://127.0.0.1:7001"
    assert namespace_default(path, service_account_dir=sa) == "ns1"
    (sa / "token").unlink()
    with pytest.raises(ClusterError, match="in-cluster"):
        api_client(service_account_dir=sa)


def test_a_client_from_a_kubeconfig_reaches_the_server(kube: FakeKube, tmp_path: Path) -> None:
    path = kube.kubeconfig(tmp_path / "config", context="fake", namespace="team-a")
    namespace = namespace_default(path)
    assert namespace == "team-a"
    client = api_client(path, "fake")
    try:
        assert KubernetesRolloutStore(client, namespace).list() == []
    finally:
        client.close()  # type: ignore[no-untyped-call]
    assert any(
        p == "/apis/sluice.dev/v1alpha1/namespaces/team-a/rollouts" for _, p, _ in kube.requests
    )
