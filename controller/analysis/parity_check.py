"""The parity SLO's verdict: the candidate's mismatch rate against the policy's limit. Pure.

The comparator (tap-compare) counts, over the stage, ``n`` compared requests (both the
baseline and the candidate answered) of which ``x`` mismatched (a difference that is not
noise). Each compared request is taken as a Bernoulli trial with mismatch probability ``p``;
``minValue`` (the matched share, e.g. 99.9%) sets the limit ``L = 1 - minValue/100`` (0.1%).
Noisy requests (differences where the baseline's replicas differ too) are compared and matched
for this purpose; requests that could not be compared (a target unreachable, a timeout) are not
trials at all and are only reported.

- **fail** when the anytime-valid test of ``H0: p <= L`` rejects at the SLO's fail level
  (:func:`controller.analysis.sequential.log_e_value`, the mixture of Wald likelihood ratios
  over alternatives ``k L``): a candidate at or within the limit fails with probability at
  most that level however often the stage is looked at;
- **pass** when the test of ``H0': p >= L`` rejects at :data:`PROMOTION_RISK`'s level
  (:func:`controller.analysis.sequential.log_e_value_below` over
  :data:`~controller.analysis.sequential.COARSE_GRID`, as for error rates), i.e. when the
  time-uniform upper confidence bound of ``p`` at that level
  (:func:`controller.analysis.sequential.upper_bound`, same grid) is below ``L``, and at least
  ``minCompared`` requests were compared in the stage;
- **inconclusive** otherwise.

Sources: Wald (1945) for the likelihood ratio; Ramdas, Grünwald, Vovk & Shafer, "Game-theoretic
statistics and safe anytime-valid inference" (Statistical Science 2023) for e-values and
Ville's inequality; Howard, Ramdas, McAuliffe & Sekhon (Annals of Statistics 2021) for the
confidence sequence.

Zero mismatches in ``n`` requests is not proof of a zero rate: with a fixed sample, the 95%
upper bound is about ``3/n`` (the "rule of three", ``-ln(0.05)/n``); the time-uniform bound
here, valid at every look and at the pass level, is wider (about ``8.6/n`` at 99%, the pass
test's grid trading that for speed on healthy candidates). A limit of 0 (``minValue: 100%``)
can therefore never pass. A 0.1% limit (99.9%) needs about 8,600 compared requests without a
mismatch: a shadow stage must mirror enough of the route.
"""

from __future__ import annotations

import math

from controller.analysis.sequential import (
    COARSE_GRID,
    log_e_value,
    log_e_value_below,
    upper_bound,
)
from controller.analysis.sli import ParitySli
from controller.analysis.slo_checks import Levels
from controller.analysis.verdicts import Outcome, SloVerdict
from controller.policy.rollout_policy import ParitySlo

NAME = "parity"
"""The parity SLO's name in verdicts and status (its ``metric``)."""


def parity_limit(slo: ParitySlo) -> float:
    """The mismatch rate's limit ``1 - minValue/100`` (a ratio, 0-1)."""
    # Rounded: 1 - 99.9/100 is 0.0009999999999998899 in binary floating point.
    return max(0.0, round(1.0 - slo.min_value / 100, 12))


def parity_verdict(slo: ParitySlo, parity: ParitySli, levels: Levels) -> SloVerdict:
    """The parity SLO's verdict on a stage's comparator counts (see the module doc).

    Args:
        slo: the policy's parity SLO (``minValue`` in percent, ``minCompared`` requests).
        parity: the comparator's counts over the stage so far.
        levels: ``fail``, the SLO's share of the rollout's false-alarm budget; ``passing``,
            the risk of passing a candidate at or beyond the limit.

    Returns:
        A :class:`SloVerdict` with ``candidate`` the mismatch rate (ratio), ``threshold`` and
        ``pass_threshold`` the limit ``L`` (ratio), ``candidate_requests`` the compared count
        and ``extra`` the counts and the upper confidence bound (ratio).
    """
    n, x = parity.compared, parity.mismatched
    limit = parity_limit(slo)
    extra = {
        "compared": n,
        "mismatched": x,
        "noisy": parity.noisy,
        "errors": parity.errors,
    }
    aside = _aside(parity)
    if n <= 0:
        return SloVerdict(
            NAME,
            "inconclusive",
            f"{NAME}: no compared requests yet{aside}",
            threshold=limit,
            pass_threshold=limit,
            alpha=levels.fail,
            extra=extra,
        )
    rate = x / n
    fail_log_e = log_e_value(x, n, limit)
    pass_log_e = log_e_value_below(x, n, limit, COARSE_GRID)
    bound = upper_bound(x, n, levels.passing, COARSE_GRID)
    extra["upper_bound"] = bound
    confidence = max(0.0, 1 - math.exp(-fail_log_e)) if fail_log_e > 0 else 0.0
    outcome: Outcome
    word = "mismatch" if round(x) == 1 else "mismatches"
    counted = f"{_count(x)} {word} in {_count(n)} compared"
    bounded = f"the rate is below {_percent(bound)} at {1 - levels.passing:.0%}"
    limits = f"limit {_percent(limit)} (minValue {slo.min_value:g}%)"
    if fail_log_e >= math.log(1 / levels.fail):
        outcome, reason = (
            "fail",
            f"{NAME} failed: mismatch rate {_percent(rate)} ({counted}) above the {limits},"
            f" confidence {confidence:.4f} (alpha {levels.fail:.2g}){aside}",
        )
    elif pass_log_e >= math.log(1 / levels.passing):
        outcome, reason = "pass", f"{NAME}: {counted}: {bounded}, within the {limits}{aside}"
        if n < slo.min_compared:
            outcome = "inconclusive"
            reason = (
                f"{NAME}: {_count(n)}/{slo.min_compared} compared requests in this stage"
                f" (minCompared); {reason}"
            )
    else:
        never = ": a limit of 0 can never be shown" if limit <= 0 else ""
        outcome, reason = (
            "inconclusive",
            f"{NAME}: {counted}: {bounded}: not enough evidence either way yet against the"
            f" {limits}{never}{aside}",
        )
    return SloVerdict(
        NAME,
        outcome,
        reason,
        None,
        rate,
        None,
        limit,
        confidence,
        levels.fail,
        candidate_requests=n,
        pass_threshold=limit,
        extra=extra,
    )


def _aside(parity: ParitySli) -> str:
    """Noisy and uncompared requests, for people: neither counts as a mismatch."""
    parts = []
    if parity.noisy > 0:
        parts.append(f"{_count(parity.noisy)} noisy (differences where the baselines differ)")
    if parity.errors > 0:
        parts.append(f"{_count(parity.errors)} not compared (a target failed or timed out)")
    return "; " + ", ".join(parts) if parts else ""


def _count(value: float) -> str:
    """A count from Prometheus' extrapolated increase, as a whole number: ``1,000``."""
    return f"{value:,.0f}"


def _percent(ratio: float) -> str:
    """A ratio as a percentage with three significant digits: ``0.00676`` → ``0.676%``."""
    return f"{ratio * 100:.3g}%"
