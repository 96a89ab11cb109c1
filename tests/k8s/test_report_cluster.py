"""``sluice rollout report`` in cluster mode: the report of a Rollout object whose status (and
analysis log, ``status.analyses``) was written through the real machine and the Kubernetes
store, on a (fake) API server reached from a kubeconfig."""

from __future__ import annotations

from pathlib import Path

from fakekube import FakeKube
from typer.testing import CliRunner

from controller.cli.app import app
from controller.k8s.store import KubernetesRolloutStore
from tests import report_rollouts

NS = "team-a"


def test_report_of_a_rollout_in_a_cluster(kube: FakeKube, tmp_path: Path) -> None:
    store = KubernetesRolloutStore(kube.api_client(), NS)
    try:
        report_rollouts.rolled_back(store)
        analyses = store.analyses("comments-v3")
        history = store.history("comments-v3")
    finally:
        store.close()
    [obj] = kube.objects("rollouts", NS)
    compact = obj["status"]["analyses"]
    assert [e["o"] for e in compact if "o" in e] == [p.outcome for p in analyses]
    assert obj["status"]["analysisSeq"] == compact[-1]["s"]

    out = tmp_path / "report.html"
    kubeconfig = kube.kubeconfig(tmp_path / "kubeconfig", namespace=NS)
    result = CliRunner().invoke(
        app, ["rollout", "report", "comments-v3", "--kubeconfig", str(kubeconfig), "-o", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert result.output.strip() == str(out)
    page = out.read_text(encoding="utf-8")
    assert page.count("<tr data-seq=") == len(history)
    assert page.count('<td class="outcome-') == len(analyses) == 3  # the stage-ending pass too
    assert "&lt;script&gt;alert" in page
    assert "<script>alert" not in page
