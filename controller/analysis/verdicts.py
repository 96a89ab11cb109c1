"""What the judge returns: one verdict per SLO and the stage's judgement. Pure data."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

Outcome = Literal["pass", "fail", "inconclusive"]


@dataclass(frozen=True)
class SloVerdict:
    """One SLO's verdict with its figures (for the rollout's status and history).

    Attributes:
        name: the SLO's name (its metric, or a custom SLO's name).
        outcome: pass, fail or inconclusive.
        reason: one line for people.
        baseline: the baseline's value (ms for latency, a ratio 0-1 for rates), if known.
        candidate: the candidate's value, same unit.
        drift: ``candidate / baseline - 1`` (a ratio; 0.05 is 5% worse), if both are known.
        threshold: the fail limit the candidate was tested against (same unit as the values;
            for latency the bucket bound whose exceedance share was tested).
        pass_threshold: the limit a pass must show the candidate below (same unit).
        confidence: ``1 - 1/E`` for the fail test's e-value E (0 without evidence); a fail
            needs at least ``1 - alpha``.
        alpha: the level of the candidate's fail test: its share of the SLO's level (the
            rest is spent on the baseline's bound; with a drift limit and a ceiling on an
            error rate, each gets half).
        baseline_requests, candidate_requests: requests counted on each side.
        reference: the baseline came from the rollout so far (the stage had too little).
        extra: figures particular to the SLO's kind, added to :meth:`to_json` as they are
            (parity: ``compared``, ``mismatched``, ``noisy``, ``errors`` as request counts and
            ``upper_bound``, the mismatch rate's confidence bound as a ratio).
    """

    name: str
    outcome: Outcome
    reason: str
    baseline: float | None = None
    candidate: float | None = None
    drift: float | None = None
    threshold: float | None = None
    confidence: float = 0.0
    alpha: float = 0.0
    baseline_requests: float = 0.0
    candidate_requests: float = 0.0
    reference: bool = False
    pass_threshold: float | None = None
    extra: Mapping[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, object]:
        """The verdict as JSON values (``details`` of a rollout's verdict)."""
        out: dict[str, object] = {
            "outcome": self.outcome,
            "reason": self.reason,
            "baseline": finite(self.baseline),
            "candidate": finite(self.candidate),
            "drift": finite(self.drift),
            "threshold": finite(self.threshold),
            "pass_threshold": finite(self.pass_threshold),
            "confidence": round(self.confidence, 6),
            "alpha": self.alpha,
            "baseline_requests": self.baseline_requests,
            "candidate_requests": self.candidate_requests,
            "reference": self.reference,
        }
        for key, value in self.extra.items():
            out.setdefault(key, finite(value))
        return out


@dataclass(frozen=True)
class Judgement:
    """The verdict on a stage: fail if any SLO failed, pass if all passed, else inconclusive.

    ``reason`` names the failing SLOs with both values, the drift, the confidence and the
    request counts (what a rollback records).
    """

    outcome: Outcome
    reason: str
    slos: tuple[SloVerdict, ...] = ()
    details: dict[str, object] = field(default_factory=dict)


def rank(outcome: Outcome) -> int:
    """Worse is higher: pass 0, inconclusive 1, fail 2."""
    return {"pass": 0, "inconclusive": 1, "fail": 2}[outcome]


def show(value: float | None, percent: bool) -> str:
    """A value for people: a ratio as a percentage, or milliseconds."""
    if value is None:
        return "n/a"
    if not math.isfinite(value):
        return "none (beyond the histogram's buckets)" if not percent else "n/a"
    if percent:
        return f"{value:.2%}"
    return f"{value:g} ms"


def finite(value: float | None) -> float | None:
    """``value`` if it is a finite float, else None (JSON has no inf or NaN)."""
    return value if value is not None and math.isfinite(value) else None
