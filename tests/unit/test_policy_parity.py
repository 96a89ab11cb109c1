"""The policy's tap-compare: ``spec.parity``, the parity SLO's ``minCompared``, the shadow stage
(0%), their cross-field checks and the checks against a gateway, as ``sluice policy validate``
reports them (``file:line: field: message``)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from controller.cli.app import app
from controller.policy.gateway import Gateway
from controller.policy.gateway_kubernetes import KubernetesService
from controller.policy.loading import load_gateway, load_policy
from controller.policy.parity import ParityPolicy
from controller.policy.rollout_policy import ParitySlo, RolloutPolicy
from controller.policy.source import DocumentError

POLICIES = Path(__file__).resolve().parents[2] / "policies"

SHADOW = """\
apiVersion: sluice.dev/v1alpha1
kind: RolloutPolicy
metadata: {name: comments}
spec:
  route: comments
  baseline: {cluster: comments-python}
  candidate: {cluster: comments-go}
  stages:
    - {weight: 0%, bake: 5m}
    - {weight: 10%, bake: 1m}
    - {weight: 100%, bake: 1m}
  analysis:
    slos:
      - {metric: error_rate, maxDrift: 5%}
      - {metric: parity, minValue: 99.9%}
  parity:
    mirror: 100%
"""


def _load(text: str, gateway: Gateway | None = None) -> RolloutPolicy:
    return load_policy(text, "p.yaml", gateway)


def _issues(text: str, gateway: Gateway | None = None) -> list[tuple[int | None, str, str]]:
    with pytest.raises(DocumentError) as info:
        _load(text, gateway)
    return [(i.line, i.field, i.message) for i in info.value.issues]


def _line(text: str, needle: str) -> int:
    [number] = [n for n, line in enumerate(text.splitlines(), start=1) if needle in line]
    return number


def _edit(old: str, new: str, text: str = SHADOW) -> str:
    assert text.count(old) == 1, old
    return text.replace(old, new)


def _gateway() -> Gateway:
    return load_gateway((POLICIES / "gateway.yaml").read_text(encoding="utf-8"), "gw.yaml")


def test_a_shadow_stage_with_parity_and_a_parity_slo_is_sound() -> None:
    policy = _load(SHADOW)
    first, second, _ = policy.spec.stages
    assert (first.shadow, first.weight, first.envoy_weight) == (True, 0.0, 0)
    assert not second.shadow
    assert policy.envoy_weights(first.weight) == {"comments-python": 10_000, "comments-go": 0}
    assert isinstance(policy.spec.parity, ParityPolicy)
    assert policy.spec.parity.mirror == 100.0
    assert policy.spec.parity.comparator.cluster == "sluice-parity"
    parity = policy.spec.analysis.slos[1]
    assert isinstance(parity, ParitySlo)
    assert (parity.min_value, parity.min_compared) == (99.9, 500)


def test_min_compared_is_read_and_never_negative() -> None:
    text = _edit(
        "{metric: parity, minValue: 99.9%}", "{metric: parity, minValue: 99%, minCompared: 0}"
    )
    slo = _load(text).spec.analysis.slos[1]
    assert isinstance(slo, ParitySlo)
    assert slo.min_compared == 0
    bad = _edit(
        "{metric: parity, minValue: 99.9%}", "{metric: parity, minValue: 99%, minCompared: -1}"
    )
    [(line, field, message)] = _issues(bad)
    assert (line, field) == (_line(bad, "minCompared"), "spec.analysis.slos[1].minCompared")
    assert "greater than or equal to 0" in message


def test_no_parity_section_by_default() -> None:
    text = _edit("    - {weight: 0%, bake: 5m}\n", "")
    text = _edit("      - {metric: parity, minValue: 99.9%}\n", "", text)
    text = _edit("  parity:\n    mirror: 100%\n", "", text)
    assert _load(text).spec.parity is None


def test_a_parity_slo_needs_the_parity_section() -> None:
    text = _edit("    - {weight: 0%, bake: 5m}\n", "")
    text = _edit("  parity:\n    mirror: 100%\n", "", text)
    assert _issues(text) == [
        (
            _line(text, "metric: parity"),
            "spec.analysis.slos[1].metric",
            "a parity SLO needs spec.parity (tap-compare): without it nothing is compared and"
            " the SLO never passes; add e.g. `parity: {mirror: 10%}`",
        )
    ]


def test_a_shadow_stage_needs_parity_and_a_parity_slo() -> None:
    text = _edit("      - {metric: parity, minValue: 99.9%}\n", "")
    text = _edit("  parity:\n    mirror: 100%\n", "", text)
    line = _line(text, "weight: 0%")
    assert _issues(text) == [
        (
            line,
            "spec.stages[0].weight",
            "a 0% stage (shadow stage) only mirrors requests to the comparator: it needs"
            " spec.parity",
        ),
        (
            line,
            "spec.stages[0].weight",
            "a 0% stage (shadow stage) is judged on parity alone: it needs a parity SLO in"
            " spec.analysis.slos, e.g. {metric: parity, minValue: 99.9%}",
        ),
    ]
    # parity alone is not enough either: nothing would judge the stage.
    with_parity = _edit("      - {metric: parity, minValue: 99.9%}\n", "")
    [(_, field, message)] = _issues(with_parity)
    assert field == "spec.stages[0].weight"
    assert "needs a parity SLO" in message


def test_a_shadow_stage_only_comes_first() -> None:
    text = _edit(
        "    - {weight: 10%, bake: 1m}\n",
        "    - {weight: 10%, bake: 1m}\n    - {weight: 0%, bake: 1m}\n",
    )
    assert _issues(text) == [
        (
            _line(text, "{weight: 0%, bake: 1m}"),
            "spec.stages[2].weight",
            "a 0% stage (shadow stage) can only be the first stage (stage 2 is 0%)",
        )
    ]


def test_stages_still_increase_and_end_at_100_percent_after_a_shadow_stage() -> None:
    text = _edit("{weight: 100%, bake: 1m}", "{weight: 5%, bake: 1m}")
    issues = _issues(text)
    assert [(line, field) for line, field, _ in issues] == [
        (_line(text, "weight: 5%"), "spec.stages[2].weight"),
        (_line(text, "weight: 5%"), "spec.stages[2].weight"),
    ]
    assert issues[0][2] == "stage weights must increase: 5% follows 10% (stage 2)"
    assert issues[1][2] == "the last stage must send 100% to the candidate, got 5%"
    only = _edit("    - {weight: 10%, bake: 1m}\n    - {weight: 100%, bake: 1m}\n", "")
    [(_, field, message)] = _issues(only)
    assert (field, message) == (
        "spec.stages[0].weight",
        "the last stage must send 100% to the candidate, got 0%",
    )


def test_unsafe_methods_need_a_sister() -> None:
    text = _edit("    mirror: 100%\n", "    mirror: 100%\n    methods: [GET, POST, DELETE]\n")
    line = _line(text, "methods:")
    issues = _issues(text)
    assert [(i[0], i[1]) for i in issues] == [
        (line, "spec.parity.methods[1]"),
        (line, "spec.parity.methods[2]"),
    ]
    assert issues[0][2].startswith("POST is not a safe method (RFC 9110 9.2.1): mirroring it")
    assert "set parity.sister" in issues[0][2]
    sister = _edit(
        "    mirror: 100%\n",
        "    mirror: 100%\n    methods: [GET, POST]\n"
        "    sister: {candidate: {cluster: comments-go-sister}}\n",
    )
    assert _load(sister).spec.parity is not None


@pytest.mark.parametrize(
    ("parity", "field", "message"),
    [
        (
            "comparator: {cluster: comments-go}",
            "spec.parity.comparator.cluster",
            "must not be the candidate (comments-go): the comparator is a cluster of its own,"
            " which Envoy mirrors to",
        ),
        (
            "secondary: {cluster: comments-python}",
            "spec.parity.secondary.cluster",
            "must not be the baseline (comments-python): the secondary is a second baseline"
            " replica, apart from both sides",
        ),
        (
            "sister: {candidate: {cluster: comments-go}}",
            "spec.parity.sister.candidate.cluster",
            "must not be the candidate (comments-go): a sister target writes to its own"
            " datastores, never to production's",
        ),
        (
            "secondary: {cluster: sluice-parity}",
            "spec.parity.secondary.cluster",
            "must not be the comparator (sluice-parity): it would forward to itself",
        ),
        (
            # The candidate compared with itself: every request would match.
            "primary: {cluster: comments-go}",
            "spec.parity.primary.cluster",
            "must not be the candidate (comments-go): the primary is a baseline replica kept"
            " for the comparator; omit parity.primary to send the primary requests to the"
            " baseline",
        ),
        (
            "primary: {cluster: comments-python}",
            "spec.parity.primary.cluster",
            "must not be the baseline (comments-python): the primary is a baseline replica kept"
            " for the comparator; omit parity.primary to send the primary requests to the"
            " baseline",
        ),
    ],
)
def test_parity_clusters_are_apart_from_the_sides(parity: str, field: str, message: str) -> None:
    text = _edit("    mirror: 100%\n", f"    mirror: 100%\n    {parity}\n")
    assert _issues(text) == [(_line(text, parity), field, message)]


def test_the_secondary_is_apart_from_the_primary() -> None:
    text = _edit(
        "    mirror: 100%\n",
        "    mirror: 100%\n"
        "    primary: {cluster: comments-python-2}\n"
        "    secondary: {cluster: comments-python-3}\n",
    )
    assert _load(text).spec.parity is not None
    same = text.replace("comments-python-3", "comments-python-2")
    assert _issues(same) == [
        (
            _line(same, "secondary: "),
            "spec.parity.secondary.cluster",
            "must not be the primary (comments-python-2): the secondary is a second baseline"
            " replica, whose differences from the primary are noise",
        )
    ]


def test_parity_clusters_must_exist_in_the_gateway() -> None:
    gateway = _gateway()
    assert _load(SHADOW, gateway).spec.route == "comments"
    text = _edit(
        "    mirror: 100%\n",
        "    mirror: 100%\n"
        "    comparator: {cluster: parity-x}\n"
        "    primary: {cluster: comments-python-8}\n"
        "    secondary: {cluster: comments-python-9}\n"
        "    sister:\n"
        "      candidate: {cluster: go-sister}\n"
        "      baseline: {cluster: python-sister}\n",
    )
    issues = _issues(text, gateway)
    assert [(line, field) for line, field, _ in issues] == [
        (_line(text, "parity-x"), "spec.parity.comparator.cluster"),
        (_line(text, "comments-python-8"), "spec.parity.primary.cluster"),
        (_line(text, "comments-python-9"), "spec.parity.secondary.cluster"),
        (_line(text, "go-sister"), "spec.parity.sister.candidate.cluster"),
        (_line(text, "python-sister"), "spec.parity.sister.baseline.cluster"),
    ]
    assert issues[0][2].startswith("gateway 'shop' declares no cluster 'parity-x' (clusters: ")
    assert "sluice-parity" in issues[0][2]


@pytest.mark.parametrize("field", ["primary", "secondary"])
def test_parity_refuses_clusters_the_comparator_cannot_speak_to(field: str) -> None:
    # The comparator forwards over HTTP/1.1 only: a gRPC (http2) replica could never answer.
    text = _edit("    mirror: 100%\n", f"    mirror: 100%\n    {field}: {{cluster: search-grpc}}\n")
    issues = _issues(text, _gateway())
    assert [(line, path) for line, path, _ in issues] == [
        (_line(text, "search-grpc"), f"spec.parity.{field}.cluster")
    ]
    assert "speaks http2" in issues[0][2]
    assert "HTTP/1.1 only" in issues[0][2]


def test_parity_refuses_clusters_whose_endpoints_come_from_kubernetes() -> None:
    # The comparator forwards to static endpoints only (it does not watch EndpointSlices).
    gateway = _gateway()
    followed = [
        c.model_copy(
            update={"endpoints": (), "kubernetes": KubernetesService(service="comments", port=80)}
        )
        if c.name == "comments-go"
        else c
        for c in gateway.spec.clusters
    ]
    gateway = gateway.model_copy(
        update={"spec": gateway.spec.model_copy(update={"clusters": tuple(followed)})}
    )
    issues = _issues(SHADOW, gateway)
    assert [field for _, field, _ in issues] == ["spec.candidate.cluster"]
    assert "Kubernetes Service 'comments'" in issues[0][2]
    assert "static endpoints only" in issues[0][2]


def test_the_cli_reports_file_line_and_field(tmp_path: Path) -> None:
    text = _edit(
        "    - {weight: 10%, bake: 1m}\n",
        "    - {weight: 10%, bake: 1m}\n    - {weight: 0%, bake: 1m}\n",
    )
    text = _edit("    mirror: 100%\n", "    mirror: 100%\n    methods: [GET, PUT]\n", text)
    text = _edit(
        "    mirror: 100%\n", "    mirror: 100%\n    comparator: {cluster: nowhere}\n", text
    )
    path = tmp_path / "comments.yaml"
    path.write_text(text, encoding="utf-8")
    result = CliRunner().invoke(
        app, ["policy", "validate", str(path), "--gateway", str(POLICIES / "gateway.yaml")]
    )
    assert result.exit_code == 2
    lines = result.stderr.splitlines()
    assert [line.split(": ", 2)[:2] for line in lines] == [
        [f"{path}:{_line(text, '{weight: 0%, bake: 1m}')}", "spec.stages[2].weight"],
        [f"{path}:{_line(text, 'comparator:')}", "spec.parity.comparator.cluster"],
        [f"{path}:{_line(text, 'methods:')}", "spec.parity.methods[1]"],
    ]
    assert "PUT is not a safe method" in lines[2]


def test_the_example_parity_policy_validates_against_the_example_gateway() -> None:
    path = POLICIES / "comments-parity.yaml"
    policy = _load(path.read_text(encoding="utf-8"), _gateway())
    assert policy.spec.stages[0].shadow
    parity = policy.spec.parity
    assert parity is not None
    assert parity.secondary is not None
    assert (parity.comparator.cluster, parity.secondary.cluster) == (
        "sluice-parity",
        "comments-python-2",
    )
