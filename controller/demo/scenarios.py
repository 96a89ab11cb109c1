"""What each demo scenario runs: the sample services' behaviour, the gateway and the policy.

Pure: documents ready for ``yaml.safe_dump``, no I/O. The sample services are
:mod:`controller.demo.service`; every scenario shares one baseline (the legacy service) and
differs in its candidate (the rewrite):

- ``healthy``: the candidate behaves as the baseline: the rollout ends promoted.
- ``latency``: the candidate is twice as slow (median 40 ms vs 20 ms): ``latency_p99`` fails.
  (At 60% slower, the p99s of a machine that loses CPU to its host or its other work are set
  by that machine's stalls on both sides alike: a CI run, its baseline's p99 92 ms instead of
  64, held such a candidate inconclusive to its 120 s deadline.)
- ``errors``: a quarter of the candidate's writes (``POST``) fail with 503s: ``error_rate``
  fails once users reach it. Tap-compare cannot see it (writes are never mirrored), which is
  why the error rate is gated too.
- ``parity``: 5% of the candidate's replies name the author differently: ``parity`` fails in
  the shadow stage, before any user reaches the candidate.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

ScenarioName = Literal["healthy", "latency", "errors", "parity"]

ROLLOUT = "comments"
"""The demo rollout's name (and its route's)."""
ROUTE_PREFIX = "/api/comments"
BASELINE = "comments-python"
CANDIDATE = "comments-go"
COMPARATOR = "sluice-parity"
LISTENER = "http"

VOLATILE_FIELDS = ("/meta/request_id", "/meta/served_at")
"""JSON pointers of reply fields that differ on every reply (RFC 6901): parity ignores them."""


@dataclass(frozen=True)
class Behaviour:
    """How a sample service answers (see :mod:`controller.demo.service`).

    Attributes:
        median_ms: median of the log-normal reply delay, in milliseconds.
        sigma: shape of the log-normal delay (the standard deviation of its log).
        error_rate: share (ratio, 0-1) of reads (``GET``) answered 503.
        write_error_rate: share (ratio, 0-1) of writes (``POST``) answered 503.
        mismatch_share: share (ratio, 0-1) of replies whose ``author.display_name`` is the
            user's handle instead of their name (the rewrite's bug in the parity scenario).
    """

    median_ms: float = 20.0
    sigma: float = 0.5
    error_rate: float = 0.0
    write_error_rate: float = 0.0
    mismatch_share: float = 0.0

    def argv(self) -> list[str]:
        """The service's command-line options for this behaviour."""
        return [
            "--median-ms",
            f"{self.median_ms:g}",
            "--sigma",
            f"{self.sigma:g}",
            "--error-rate",
            f"{self.error_rate:g}",
            "--write-error-rate",
            f"{self.write_error_rate:g}",
            "--mismatch-share",
            f"{self.mismatch_share:g}",
        ]


@dataclass(frozen=True)
class Scenario:
    """One demo scenario.

    Attributes:
        name: the ``--scenario`` value.
        story: what is wrong (or right) with the candidate, one sentence for the screen.
        candidate: the candidate's behaviour (the baseline's is :data:`BASELINE_BEHAVIOUR`).
        expected_phase: the phase the rollout should end in.
        expected_slo: the SLO whose fail verdict should roll it back (None: promoted).
    """

    name: ScenarioName
    story: str
    candidate: Behaviour
    expected_phase: Literal["succeeded", "rolled_back"]
    expected_slo: str | None


BASELINE_BEHAVIOUR = Behaviour()
"""The legacy service: median 20 ms (well above a busy 2-core machine's scheduling noise), no
errors. (Random errors on both sides would also be parity mismatches: a request the baseline
answered 200 and the candidate 503 is one, by design.)"""

SCENARIOS: dict[ScenarioName, Scenario] = {
    "healthy": Scenario(
        "healthy",
        "the rewrite behaves as the legacy service: expect a promotion",
        BASELINE_BEHAVIOUR,
        "succeeded",
        None,
    ),
    "latency": Scenario(
        "latency",
        "the rewrite is twice as slow (median 40 ms vs 20 ms): expect a rollback on latency_p99",
        Behaviour(median_ms=40.0),
        "rolled_back",
        "latency_p99",
    ),
    "errors": Scenario(
        "errors",
        "a quarter of the rewrite's writes (POST) fail with 503: tap-compare cannot see it "
        "(writes are never mirrored); expect a rollback on error_rate",
        Behaviour(write_error_rate=0.25),
        "rolled_back",
        "error_rate",
    ),
    "parity": Scenario(
        "parity",
        "5% of the rewrite's replies name the author differently: expect a rollback on parity "
        "in the shadow stage, before any user reaches it",
        Behaviour(mismatch_share=0.05),
        "rolled_back",
        "parity",
    ),
}


def gateway_document(
    baseline_port: int, candidate_port: int, comparator_port: int
) -> dict[str, Any]:
    """The demo gateway: one listener on 127.0.0.1, port 0 (Envoy picks; read it from its
    admin ``/listeners``), the route ``comments`` (prefix ``/api/comments``) on the baseline,
    and the clusters of the two services and of the comparator. No retries: every failure
    reaches the client and the judge."""
    return {
        "apiVersion": "sluice.dev/v1alpha1",
        "kind": "Gateway",
        "metadata": {"name": "demo"},
        "spec": {
            "listeners": [
                {
                    "name": LISTENER,
                    "address": "127.0.0.1",
                    "port": 0,
                    "virtualHosts": [
                        {
                            "name": "api",
                            "domains": ["*"],
                            "routes": [
                                {
                                    "name": ROLLOUT,
                                    "match": {"prefix": ROUTE_PREFIX},
                                    "weightedClusters": [
                                        {"cluster": BASELINE, "weight": 100},
                                        {"cluster": CANDIDATE, "weight": 0},
                                    ],
                                    "timeout": "5s",
                                }
                            ],
                        }
                    ],
                }
            ],
            "clusters": [
                _cluster(BASELINE, baseline_port),
                _cluster(CANDIDATE, candidate_port),
                _cluster(COMPARATOR, comparator_port),
            ],
        },
    }


def _cluster(name: str, port: int) -> dict[str, Any]:
    return {
        "name": name,
        "connectTimeout": "1s",
        "endpoints": [{"address": "127.0.0.1", "port": port}],
    }


def policy_document() -> dict[str, Any]:
    """The demo policy: a shadow stage (0%: parity only), then 25%, 50% and 100%, each baked
    5 s and judged every second on p99 latency, error rate and parity; a stage without a pass
    verdict after 120 s rolls back (a slow machine needs more requests for a verdict). Each
    stage's first 2 s are left out of its analysis (``initialDelay``): when its share doubles,
    the one-process sample candidate answers its first second ~50% slower at p99 while Envoy
    opens connections to it, which the judge would rightly call a regression.

    Short stages and lenient pass limits fit a demo on a laptop, not production (see
    ``policies/comments.yaml`` for that): ``passDrift`` 40% for latency because two identical
    processes' p99s on a busy 2-core machine differ by up to ~20% from scheduling alone;
    parity's ``minValue`` 98% because proving 99.9% takes ~9,000 matching comparisons, a minute
    and a half of demo traffic, and 98% ~530, five seconds (the parity scenario's 5% of
    mismatches still fails within a second or two).
    """
    return {
        "apiVersion": "sluice.dev/v1alpha1",
        "kind": "RolloutPolicy",
        "metadata": {"name": ROLLOUT},
        "spec": {
            "route": ROLLOUT,
            "baseline": {"cluster": BASELINE},
            "candidate": {"cluster": CANDIDATE},
            "stages": [
                {"weight": "0%", "bake": "5s", "deadline": "120s"},
                {"weight": "25%", "bake": "5s", "deadline": "120s"},
                {"weight": "50%", "bake": "5s", "deadline": "120s"},
                {"weight": "100%", "bake": "5s", "deadline": "120s"},
            ],
            "analysis": {
                "interval": "1s",
                "initialDelay": "2s",
                "minRequests": 200,
                "slos": [
                    {"metric": "latency_p99", "maxDrift": "5%", "passDrift": "40%"},
                    {
                        "metric": "error_rate",
                        "maxDrift": "5%",
                        "passDrift": "200%",
                        "tolerance": "0.4%",
                    },
                    {"metric": "parity", "minValue": "98%", "minCompared": 300},
                ],
            },
            "parity": {
                "mirror": "50%",
                "comparator": {"cluster": COMPARATOR},
                "compare": {"ignore": list(VOLATILE_FIELDS)},
            },
            "ackTimeout": "5s",
        },
    }
