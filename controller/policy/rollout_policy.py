"""The rollout policy file: how one route moves from its baseline to its candidate.

One file per migrating route, kept in git. Units are explicit: durations carry ``ms``/``s``/
``m``/``h`` and percentages carry ``%``. Field names are camelCase in YAML, snake_case here.

Shape (YAML)::

    apiVersion: sluice.dev/v1alpha1
    kind: RolloutPolicy
    metadata: {name: comments}
    spec:
      route: comments                    # a route name of the gateway file
      baseline: {cluster: comments-python}
      candidate: {cluster: comments-go}
      stages:                            # default: 1% 2m, 5% 5m, 25% 5m, 100% 5m
        - {weight: 1%, bake: 2m}
        - {weight: 100%, bake: 5m, deadline: 30m}
      analysis:
        interval: 30s
        minRequests: 500
        noData: hold                     # hold | fail
        failureLimit: 1
        failureCounting: consecutive     # consecutive | cumulative
        slos:                            # default: latency_p99 and error_rate, maxDrift 5%
          - {metric: latency_p99, maxDrift: 5%, maxValue: 250ms}
          - {metric: error_rate, maxDrift: 5%, maxValue: 1%}
      onFailure: rollback                # rollback | pause
      override: {header: x-sluice-target}   # "candidate" / "baseline" force a side
      sticky: {header: x-user-id}        # or {cookie: session}
      ackTimeout: 10s
      parity: {mirror: 10%}              # tap-compare: see controller.policy.parity

A first stage at ``weight: 0%`` is a *shadow stage*: users stay on the baseline while Envoy
mirrors requests to the comparator, so parity is known before anyone reaches the candidate.

Cross-field checks (stages increasing, ending at 100%, distinct clusters, the shadow stage and
parity rules) are in
:mod:`controller.policy.rollout_checks`; checks against a gateway (the route and clusters
exist) in :func:`controller.policy.rollout_checks.check_against_gateway`.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Literal

from pydantic import ConfigDict, Field, ValidationInfo, field_validator, model_validator

from controller.policy.gateway import NAME_PATTERN, Metadata
from controller.policy.model_base import PolicyModel, Side
from controller.policy.parity import ParityPolicy
from controller.policy.units import Duration, Percent, PercentRange, format_duration

WEIGHT_SCALE = 100
"""Envoy weights per percent: a stage at 0.25% sends ``weighted_clusters`` weights 25 and 9975
(they sum to 10,000), so stage weights may have two decimals."""

DEADLINE_INTERVALS = 20
"""A stage's default deadline is its bake time and the analysis' initial delay plus this many
analysis intervals. Honest
verdicts need requests: at 1% of a 2,000 requests/s route, telling a p99 +20% from +0% apart
with 99% confidence both ways takes about ten minutes (``benchmarks/judge_power.py``)."""

_HEADER_NAME = r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$"

StageWeight = Annotated[Percent, PercentRange(ge=0, le=100, decimals=2)]
"""A stage's candidate share: 0% to 100%, in steps of 0.01%. 0% is a shadow stage (mirroring
only), allowed as the first stage of a policy with ``parity`` and a parity SLO
(:func:`controller.policy.rollout_checks.check_policy`)."""

Share = Annotated[Percent, PercentRange(le=100)]
"""A share of requests: 0% to 100%."""


class Stage(PolicyModel):
    """One step of the rollout: the candidate's share of the route's requests, and how long it
    stays there at least.

    Envoy gets weights in units of 0.01% (:data:`WEIGHT_SCALE`); the default deadline is
    :meth:`RolloutPolicy.stage_deadline`.
    """

    weight: StageWeight = Field(
        description="The candidate's share of the route's requests during the stage, in"
        " percent: 0% to 100%, at most two decimals (Envoy gets weights in units of 0.01%)."
        " Weights increase from stage to stage and the last stage is 100%. 0% is a shadow"
        " stage: no user reaches the candidate, the comparator sees mirrored requests; only"
        " as the first stage, with `parity` and a parity SLO."
    )
    bake: Duration = Field(
        description="The least time spent at this stage, counted from the moment every Envoy"
        " ACKed the stage's weights: the stage is left only after its bake time and a pass"
        " verdict."
    )
    deadline: Duration | None = Field(
        default=None,
        description="How long after its start the stage may go without a pass verdict (too"
        " little traffic, no data) before `onFailure` applies; at least `bake`, and longer than"
        " `spec.analysis.initialDelay`. Omitted: the bake time plus the initial delay plus"
        f" {DEADLINE_INTERVALS} analysis intervals (`spec.analysis.interval`).",
    )

    @field_validator("deadline")
    @classmethod
    def _deadline_after_bake(
        cls, value: timedelta | None, info: ValidationInfo
    ) -> timedelta | None:
        bake = info.data.get("bake")
        if value is not None and bake is not None and value < bake:
            raise ValueError(
                f"must be at least the bake time ({format_duration(bake)}),"
                f" got {format_duration(value)}"
            )
        return value

    @property
    def shadow(self) -> bool:
        """A shadow stage (0%): users stay on the baseline, only mirrored requests reach the
        candidate (through the comparator), and only the parity SLO can judge it."""
        return self.weight == 0

    @property
    def envoy_weight(self) -> int:
        """The candidate's ``ClusterWeight.weight`` out of ``100 * WEIGHT_SCALE``."""
        return round(self.weight * WEIGHT_SCALE)


def default_stages() -> tuple[Stage, ...]:
    """1% for 2m, then 5%, 25% and 100% for 5m each (the design's default)."""
    return tuple(
        Stage.model_validate({"weight": weight, "bake": bake})
        for weight, bake in (("1%", "2m"), ("5%", "5m"), ("25%", "5m"), ("100%", "5m"))
    )


def _check_pass_drift(value: float, info: ValidationInfo) -> float:
    max_drift = info.data.get("max_drift")
    if max_drift is not None and value <= max_drift:
        raise ValueError(
            f"must be above maxDrift ({max_drift:g}%): between the two is the indifference "
            "zone, where a candidate may be promoted or rolled back"
        )
    return value


def _check_default_pass_drift(slo: _DriftSlo) -> _DriftSlo:
    # Field validators do not run on defaults: a large maxDrift with the default passDrift
    # would leave the pass limit below the fail limit (a candidate within the SLO that can
    # never pass).
    if (
        "pass_drift" not in slo.model_fields_set
        and slo.max_drift is not None
        and slo.max_drift >= slo.pass_drift
    ):
        raise ValueError(
            f"maxDrift ({slo.max_drift:g}%) must be below passDrift (default "
            f"{slo.pass_drift:g}%): set passDrift above it"
        )
    return slo


class LatencySlo(PolicyModel):
    """A latency quantile of the candidate, judged against the baseline's.

    ``metric`` names the quantile (``latency_p50``, ``latency_p95``, ``latency_p99``), from
    Envoy's ``upstream_rq_time`` histogram of each cluster.

    - Fails when the candidate is shown more than ``maxDrift`` slower than the baseline
      (relative, default 5%) or slower than ``maxValue``.
    - Passes only when the candidate is shown less than ``passDrift`` slower (default 20%)
      and faster than ``maxValue``: a candidate ``passDrift`` slower or worse is promoted out
      of a stage with probability at most 1%. Between ``maxDrift`` and ``passDrift`` lies the
      indifference zone of the sequential test; narrowing it costs requests (time) per stage.
    """

    metric: Literal["latency_p50", "latency_p95", "latency_p99"] = Field(
        description="The quantile judged: the 50th, 95th or 99th percentile of the request"
        " time Envoy measures to each cluster (`upstream_rq_time`, in ms)."
    )
    max_drift: Percent | None = Field(
        default=5.0,
        description="Fail when the candidate's quantile is shown more than this much slower"
        " than the baseline's, relative to the baseline's (5% of a 200ms p99 is 10ms)."
        " `null`: no relative limit. Below `passDrift`.",
    )
    pass_drift: Percent = Field(
        default=20.0,
        description="Pass only when the candidate is shown less than this much slower than"
        " the baseline, relative to the baseline's quantile; above `maxDrift`. A candidate"
        " this much slower or worse passes a stage with probability at most 1%.",
    )
    max_value: Duration | None = Field(
        default=None,
        description="An absolute ceiling on the candidate's quantile (e.g. `250ms`): fail"
        " when shown above it, pass only when shown below it. Omitted: none.",
    )

    _pass_drift = field_validator("pass_drift")(_check_pass_drift)
    _default_pass_drift = model_validator(mode="after")(_check_default_pass_drift)


class ErrorRateSlo(PolicyModel):
    """The candidate's error rate (5xx / all requests, from ``upstream_rq_xx``), judged against
    the baseline's.

    - Fails when shown above the baseline's by more than ``maxDrift`` (relative, default 5%)
      *and* by more than ``tolerance`` (absolute, in percentage points of requests, default
      0.1%: near-zero error rates cannot be told apart by a relative drift), or above the
      absolute ``maxValue``.
    - Passes only when shown below the baseline's times (1 + ``passDrift``) (default 100%: a
      candidate with twice the baseline's errors is promoted out of a stage with probability
      at most 1%) or the baseline's plus twice ``tolerance``, whichever is larger, and below
      ``maxValue``.
    """

    metric: Literal["error_rate"] = Field(
        description="The share of the cluster's requests answered 5xx (Envoy's"
        " `upstream_rq_xx` counters)."
    )
    max_drift: Percent | None = Field(
        default=5.0,
        description="Fail when the candidate's error rate is shown above the baseline's by"
        " more than this, relative to the baseline's (5% of a 2% error rate is 0.1 points),"
        " and by more than `tolerance`. `null`: no relative limit. Below `passDrift`.",
    )
    pass_drift: Percent = Field(
        default=100.0,
        description="Pass only when the candidate's error rate is shown below the baseline's"
        " times (1 + passDrift), relative (100%: twice the baseline's), or the baseline's"
        " plus twice `tolerance`, whichever is larger; above `maxDrift`.",
    )
    tolerance: Share = Field(
        default=0.1,
        description="Absolute slack in percentage points of requests (0.1% is one request in"
        " a thousand): a candidate is failed on drift only when also this much above the"
        " baseline, since near-zero error rates cannot be told apart by a relative drift.",
    )
    max_value: Share | None = Field(
        default=None,
        description="An absolute ceiling on the candidate's error rate, in percent of its"
        " requests: fail when shown above it, pass only when shown below it. Omitted: none.",
    )

    _pass_drift = field_validator("pass_drift")(_check_pass_drift)
    _default_pass_drift = model_validator(mode="after")(_check_default_pass_drift)


_DriftSlo = LatencySlo | ErrorRateSlo


class ParitySlo(PolicyModel):
    """Response parity from tap-compare (needs the policy's ``parity`` section): the share of
    compared requests whose candidate response matched the baseline's must stay at or above
    ``minValue`` (e.g. ``99.9%``).

    The mismatch limit is ``1 - minValue/100`` of the compared requests.
    """

    metric: Literal["parity"] = Field(
        description="The share of compared requests whose candidate reply matched the"
        " baseline's (tap-compare)."
    )
    min_value: Share = Field(
        description="The least matched share, in percent of the compared requests (`99.9%`:"
        " at most one mismatch in a thousand)."
    )
    min_compared: int = Field(
        default=500,
        ge=0,
        description="Compared requests (both sides answered) the stage needs before a pass"
        " verdict, a count; fewer give an inconclusive verdict, never a pass.",
    )


class CustomSlo(PolicyModel):
    """A PromQL query of one side, templated with ``{cluster}`` and ``{window}`` (e.g. ``2m``),
    run for the baseline and for the candidate over the same window.

    ``better: lower`` (default) fails when the candidate is more than ``maxDrift`` above the
    baseline or above ``maxValue``; ``better: higher`` mirrors that (below, ``minValue``).
    """

    model_config = ConfigDict(
        json_schema_extra={
            "anyOf": [
                {"required": ["maxDrift"]},
                {"required": ["maxValue"]},
                {"required": ["minValue"]},
            ]
        }
    )

    metric: Literal["custom"] = Field(description="A PromQL query of your own.")
    name: str = Field(
        pattern=NAME_PATTERN,
        description="The SLO's name in verdicts, status and the report; unique in the policy.",
    )
    query: str = Field(
        min_length=1,
        json_schema_extra={"pattern": r"\{cluster\}"},
        description="A PromQL query returning one number for one side: `{cluster}` becomes"
        " the side's cluster name, `{window}` the analysis window as a duration (e.g. `37s`);"
        " no other `{name}` placeholder.",
    )
    better: Literal["lower", "higher"] = Field(
        default="lower",
        description="Which way is better for the candidate: `lower` (a latency, an error"
        " count) or `higher` (a throughput, a success ratio); it decides which way `maxDrift`"
        " is a drift.",
    )
    max_drift: Percent | None = Field(
        default=None,
        description="Fail when the candidate's value is more than this beyond the baseline's,"
        " relative to the baseline's (above it for `better: lower`, below for `higher`)."
        " Point values, no statistical test. Omitted: no relative limit.",
    )
    max_value: float | None = Field(
        default=None,
        description="Fail when the candidate's value is above this, in the query's own unit."
        " Omitted: no ceiling.",
    )
    min_value: float | None = Field(
        default=None,
        description="Fail when the candidate's value is below this, in the query's own unit."
        " Omitted: no floor.",
    )

    @field_validator("query")
    @classmethod
    def _names_cluster(cls, value: str) -> str:
        if "{cluster}" not in value:
            raise ValueError(
                "must contain {cluster} (replaced by the baseline's and the candidate's cluster"
                ' name, e.g. envoy_cluster_name="{cluster}")'
            )
        return value

    @model_validator(mode="after")
    def _check(self) -> CustomSlo:
        if self.max_drift is None and self.max_value is None and self.min_value is None:
            raise ValueError("a custom SLO needs maxDrift, maxValue or minValue")
        return self


Slo = Annotated[LatencySlo | ErrorRateSlo | ParitySlo | CustomSlo, Field(discriminator="metric")]
"""One service-level objective gating every stage."""


def slo_name(slo: LatencySlo | ErrorRateSlo | ParitySlo | CustomSlo) -> str:
    """The SLO's name in verdicts and status: the metric, or a custom SLO's own name."""
    return slo.name if isinstance(slo, CustomSlo) else slo.metric


def default_slos() -> tuple[LatencySlo | ErrorRateSlo | ParitySlo | CustomSlo, ...]:
    """p99 latency and error rate, each failing beyond 5% drift from the baseline."""
    return (LatencySlo(metric="latency_p99"), ErrorRateSlo(metric="error_rate"))


class Analysis(PolicyModel):
    """How stages are judged (the judging itself lives in ``controller.analysis``)."""

    interval: Duration = Field(
        default=timedelta(seconds=30),
        description="Time between two analyses of the current stage; above 0s.",
    )
    initial_delay: Duration = Field(
        default=timedelta(0),
        description="How long after a stage's weights are ACKed its analysis starts: requests"
        " served earlier are left out of the stage's window, as the side whose share just"
        " grew warms its connection pools and caches (Argo Rollouts' `initialDelay`). The"
        " bake time still counts from the ACK; verdicts are inconclusive until then. 0s:"
        " judge from the ACK.",
    )
    min_requests: int = Field(
        default=500,
        ge=0,
        description="Requests the candidate must have served in the stage before any pass"
        " verdict, a count; fewer give an inconclusive verdict.",
    )
    no_data: Literal["hold", "fail"] = Field(
        default="hold",
        description="What an empty metrics result counts as: `hold` (inconclusive, the"
        " stage waits) or `fail` (a failing verdict).",
    )
    failure_limit: int = Field(
        default=1,
        ge=1,
        description="Failing verdicts, a count, that trigger `onFailure`.",
    )
    failure_counting: Literal["consecutive", "cumulative"] = Field(
        default="consecutive",
        description="How failing verdicts add up to `failureLimit`: `consecutive` (a pass"
        " resets the count) or `cumulative` (every failure in the stage counts).",
    )
    slos: tuple[Slo, ...] = Field(
        default_factory=default_slos,
        description="The objectives every stage is judged on, one kind per `metric`. Omitted:"
        " p99 latency and error rate, each with its defaults. An empty list gates stages on"
        " bake time alone (every analysis passes).",
    )

    @field_validator("interval")
    @classmethod
    def _positive(cls, value: timedelta) -> timedelta:
        if value <= timedelta(0):
            raise ValueError(f"must be longer than 0s (got {format_duration(value)})")
        return value


class HeaderOverride(PolicyModel):
    """Testers force a side with a request header: ``<header>: <candidate>`` always reaches the
    candidate, ``<header>: <baseline>`` the baseline, whatever the stage. Served as two extra
    Envoy routes in front of the route under rollout, with the same match plus this header."""

    header: str = Field(
        pattern=_HEADER_NAME, description="The request header testers set (e.g. `x-sluice-target`)."
    )
    candidate: str = Field(
        default="candidate",
        min_length=1,
        description="The header value that sends the request to the candidate.",
    )
    baseline: str = Field(
        default="baseline",
        min_length=1,
        description="The header value that sends the request to the baseline; differs from"
        " `candidate`.",
    )

    @field_validator("baseline")
    @classmethod
    def _differs(cls, value: str, info: ValidationInfo) -> str:
        if value == info.data.get("candidate"):
            raise ValueError(f"must differ from the candidate value (both are {value!r})")
        return value


class Sticky(PolicyModel):
    """Users stay on one side between requests: Envoy hashes this header or cookie
    (``RouteAction.hash_policy``) and picks the weighted cluster from the hash
    (``WeightedCluster.use_hash_policy``, Envoy 1.36+) instead of at random. Requests without the
    header or cookie are split at random. Exactly one of ``header`` or ``cookie``."""

    model_config = ConfigDict(
        json_schema_extra={"oneOf": [{"required": ["header"]}, {"required": ["cookie"]}]}
    )

    header: str | None = Field(
        default=None,
        pattern=_HEADER_NAME,
        description="The request header whose value keeps a user on one side (e.g. `x-user-id`).",
    )
    cookie: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$",
        description="The cookie whose value keeps a user on one side (e.g. `session`).",
    )

    @model_validator(mode="after")
    def _check(self) -> Sticky:
        if (self.header is None) == (self.cookie is None):
            raise ValueError("sticky needs exactly one of header or cookie")
        return self


class PolicySpec(PolicyModel):
    """What the rollout moves, through which stages, judged how; ``parity``: tap-compare of
    the route's requests (:class:`~controller.policy.parity.ParityPolicy`), None: none."""

    route: str = Field(
        pattern=NAME_PATTERN,
        description="The name of the gateway route under rollout; it must send traffic to"
        " the baseline today.",
    )
    baseline: Side = Field(description="What the route serves today (the old service).")
    candidate: Side = Field(
        description="What the route moves to (the new service); not the baseline's cluster."
    )
    stages: tuple[Stage, ...] = Field(
        default_factory=default_stages,
        min_length=1,
        description="The steps of the rollout, in order. Omitted: 1% for 2m, then 5%, 25%"
        " and 100% for 5m each.",
    )
    analysis: Analysis = Field(default_factory=Analysis, description="How every stage is judged.")
    on_failure: Literal["rollback", "pause"] = Field(
        default="rollback",
        description="What a failed stage (or a stage past its deadline) does: `rollback`"
        " (all traffic back to the baseline) or `pause` (the weights stay, an operator"
        " decides).",
    )
    override: HeaderOverride | None = Field(
        default=None,
        description="A request header that forces a side, for testers. Omitted: none.",
    )
    sticky: Sticky | None = Field(
        default=None,
        description="Keep each user on one side by a header or cookie. Omitted: every request"
        " is split at random.",
    )
    ack_timeout: Duration = Field(
        default=timedelta(seconds=10),
        description="How long to wait for every Envoy to ACK a weight change; past it the"
        " rollout holds where it is (said in its status) and the weights are pushed again,"
        " with backoff: an unconfirmed change never promotes.",
    )
    parity: ParityPolicy | None = Field(
        default=None,
        description="Tap-compare: mirror some of the route's requests and compare the"
        " candidate's replies with the baseline's. Omitted: no comparison.",
    )


class RolloutPolicy(PolicyModel):
    """A policy file: ``apiVersion: sluice.dev/v1alpha1``, ``kind: RolloutPolicy``."""

    api_version: Literal["sluice.dev/v1alpha1"] = Field(description="The file format's version.")
    kind: Literal["RolloutPolicy"] = Field(description="What the file holds.")
    metadata: Metadata = Field(description="The policy's name.")
    spec: PolicySpec = Field(description="What the rollout moves, through which stages.")

    def stage_deadline(self, index: int) -> timedelta:
        """How long stage ``index`` may go without a pass verdict (see :class:`Stage`)."""
        stage = self.spec.stages[index]
        if stage.deadline is not None:
            return stage.deadline
        analysis = self.spec.analysis
        return stage.bake + analysis.initial_delay + DEADLINE_INTERVALS * analysis.interval

    def envoy_weights(self, candidate_percent: float) -> dict[str, int]:
        """The route's ``weighted_clusters`` for a candidate share in percent:
        ``{baseline: 10000 - w, candidate: w}`` with ``w = percent * WEIGHT_SCALE``."""
        candidate = round(candidate_percent * WEIGHT_SCALE)
        return {
            self.spec.baseline.cluster: 100 * WEIGHT_SCALE - candidate,
            self.spec.candidate.cluster: candidate,
        }
