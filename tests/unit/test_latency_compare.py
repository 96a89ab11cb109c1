"""The interval behind the mirroring-latency verdict (``benchmarks/_latency_compare.py``) is
calibrated when rounds differ from each other, as they do on a shared machine.

A synthetic rig: rounds of log-normal latencies, each round scaled by its own random factor
(the machine's state during that round), in the benchmark's ABBA order. Seeds are fixed, so
each assertion is deterministic; each fails if the interval goes back to resampling within
rounds only (checked below on the same worlds).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from _latency_compare import (
    Difference,
    _resample_round,
    bootstrap_differences,
    paired_bootstrap_differences,
    verdict,
)

Rounds = list[npt.NDArray[np.float64]]
ROUNDS = 24  # the benchmark's default
PER_ROUND = 150
EXPERIMENTS = 40
ITERATIONS = 120
BLOCK = 10
P99 = 0.99


def world(rng: np.random.Generator, shift: float) -> tuple[Rounds, Rounds]:
    """(off rounds, on rounds): every round's scale varies (sigma 0.3 in log), the "on"
    rounds are multiplied by ``shift``."""
    off: Rounds = []
    on: Rounds = []
    for k in range(ROUNDS):
        latencies = rng.lognormal(0.0, 0.6, PER_ROUND) * np.exp(rng.normal(0.0, 0.3))
        if k % 4 in (1, 2):  # ABBA: off, on, on, off
            on.append(latencies * shift)
        else:
            off.append(latencies)
    return off, on


def excludes_zero(off: Rounds, on: Rounds, seed: int) -> bool:
    (p99,) = bootstrap_differences(off, on, [P99], iterations=ITERATIONS, block=BLOCK, seed=seed)
    return bool(p99.low > 0 or p99.high < 0)


def within_rounds_only_excludes_zero(off: Rounds, on: Rounds, seed: int) -> bool:
    """The interval resampling blocks within each round but never the rounds themselves."""
    rng = np.random.default_rng(seed)
    a = np.hstack([_resample_round(rng, r, BLOCK, ITERATIONS) for r in off])
    b = np.hstack([_resample_round(rng, r, BLOCK, ITERATIONS) for r in on])
    table = np.quantile(b, P99, axis=1) - np.quantile(a, P99, axis=1)
    low, high = np.quantile(table, [0.025, 0.975])
    return bool(low > 0 or high < 0)


def rate(shift: float, test: object, seed: int) -> float:
    rng = np.random.default_rng(seed)
    hits = 0
    for experiment in range(EXPERIMENTS):
        off, on = world(rng, shift)
        hits += bool(test(off, on, experiment))  # type: ignore[operator]
    return hits / EXPERIMENTS


# Rates measured over 200 experiments of these worlds: A/A called a difference 2.5% of the
# time (35.5% within rounds only); a 50% increase found 59% of the time. The bounds leave
# room for the 40 experiments' own sampling error (with these seeds: 7.5%, 60% and 67.5%).


def test_an_a_a_comparison_is_rarely_called_a_difference() -> None:
    assert rate(1.0, excludes_zero, seed=11) <= 0.125


def test_the_rigs_round_effects_fool_an_interval_within_rounds() -> None:
    """The worlds above do exercise the failure the two stages fix."""
    assert rate(1.0, within_rounds_only_excludes_zero, seed=11) >= 0.2


def test_a_real_increase_is_found() -> None:
    assert rate(1.5, excludes_zero, seed=12) >= 0.35


def test_an_arm_without_samples_is_refused() -> None:
    with pytest.raises(ValueError, match="both arms"):
        bootstrap_differences([np.array([])], [np.ones(3)], [P99], iterations=5, block=1, seed=0)


# --- the paired design: both arms interleaved request by request in every round ----------

Paired = list[tuple[npt.NDArray[np.float64], npt.NDArray[np.bool_]]]


def paired_world(rng: np.random.Generator, shift: float) -> Paired:
    """Rounds whose requests go to either arm at random; a round's scale and its pauses (a
    stretch of 20 requests 3x slower) hit both arms; "on" requests are multiplied by
    ``shift``."""
    rounds: Paired = []
    for _ in range(ROUNDS):
        latency = rng.lognormal(0.0, 0.6, PER_ROUND) * np.exp(rng.normal(0.0, 0.3))
        start = int(rng.integers(0, PER_ROUND - 20))
        latency[start : start + 20] *= 3.0
        on = rng.random(PER_ROUND) < 0.5
        rounds.append((np.where(on, latency * shift, latency), on))
    return rounds


def paired_interval(rounds: Paired, seed: int) -> tuple[float, float]:
    (p99,) = paired_bootstrap_differences(
        rounds, [P99], iterations=ITERATIONS, block=BLOCK, seed=seed
    )
    return p99.low, p99.high


def test_paired_a_a_is_rarely_called_a_difference() -> None:
    rng = np.random.default_rng(21)
    calls = 0
    for experiment in range(EXPERIMENTS):
        low, high = paired_interval(paired_world(rng, 1.0), experiment)
        calls += low > 0 or high < 0
    assert calls / EXPERIMENTS <= 0.125


def test_pairing_narrows_the_interval() -> None:
    """The same requests, judged with and without their pairing: a round's scale cancels in
    the paired difference, so its interval is narrower (the reason for the design). At the
    median, where the rounds' scales dominate; at p99 these worlds' pauses dominate, and the
    pairing narrowed the p99 interval on the real stack, not here."""
    rng = np.random.default_rng(22)
    ratios = []
    for experiment in range(10):
        rounds = paired_world(rng, 1.2)
        (paired,) = paired_bootstrap_differences(
            rounds, [0.5], iterations=ITERATIONS, block=BLOCK, seed=experiment
        )
        off = [lat[~on] for lat, on in rounds]
        on = [lat[on] for lat, on in rounds]
        (unpaired,) = bootstrap_differences(
            off, on, [0.5], iterations=ITERATIONS, block=BLOCK, seed=experiment
        )
        ratios.append((paired.high - paired.low) / (unpaired.high - unpaired.low))
    assert float(np.median(ratios)) < 0.75  # 0.58 in these worlds


def test_paired_rounds_need_one_flag_per_latency_and_both_arms() -> None:
    with pytest.raises(ValueError, match="as many flags"):
        paired_bootstrap_differences(
            [(np.ones(3), np.array([True]))], [P99], iterations=5, block=1, seed=0
        )
    with pytest.raises(ValueError, match="both arms"):
        paired_bootstrap_differences(
            [(np.ones(3), np.ones(3, dtype=bool))], [P99], iterations=5, block=1, seed=0
        )


def test_a_slower_on_arm_is_a_positive_difference_in_both_designs() -> None:
    """The sign: ``on - off``, with the "on" arm the one the flags (paired) or the second
    argument (rounds) name."""
    rng = np.random.default_rng(31)
    off, on = world(rng, 1.5)
    (rounds,) = bootstrap_differences(off, on, [0.5], iterations=ITERATIONS, block=BLOCK, seed=1)
    (paired,) = paired_bootstrap_differences(
        paired_world(rng, 1.5), [0.5], iterations=ITERATIONS, block=BLOCK, seed=1
    )
    assert rounds.diff > 0
    assert rounds.on > rounds.off
    assert paired.diff > 0
    assert paired.low > 0


@pytest.mark.parametrize(
    ("low", "high", "reading"),
    [
        (-0.5, 0.5, "no measurable increase"),  # the whole interval under the bound (1.0)
        (-3.0, -1.5, "no measurable increase"),
        (0.2, 0.8, "a measurable increase within the bound"),
        (-0.5, 4.0, "inconclusive"),  # includes 0 but reaches past the bound
        (1.5, 4.0, "a measurable increase beyond the bound"),
        (0.5, 4.0, "a measurable increase beyond the bound"),
    ],
)
def test_the_verdict_claims_no_increase_only_under_the_bound(
    low: float, high: float, reading: str
) -> None:
    p99 = Difference(0.99, 10.0, 10.0 + (low + high) / 2, (low + high) / 2, low, high)
    assert verdict(p99, bound=1.0).startswith(reading)
