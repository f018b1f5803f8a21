"""Open-loop send schedules: achieved rate, gap shape and the schedule's invariants, on fixed seeds.

Tolerances come from the sampling spread of the statistic under test, not from trial and error. For a
renewal process whose gaps have coefficient of variation `cv`, the number of arrivals in `T` seconds at
rate `r` has a standard deviation of about `sqrt(r * T) * cv` (exactly `sqrt(r * T)` for Poisson), so
at 50/s over 400 s (20 000 expected arrivals) a Poisson count is off by 0.7 % per sigma and the
burstiest gamma here (cv = 2) by 1.4 %. The tolerances below are five sigma.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest

from loadtest.arrivals import schedule

RATE = 50.0
DURATION_S = 400.0
EXPECTED = RATE * DURATION_S
SIGMAS = 5.0
KS_CRITICAL_1PCT = 1.63  # asymptotic Kolmogorov-Smirnov critical value at the 1 % level, times sqrt(n)

# (arrival, burstiness, coefficient of variation of the gaps: 0, 1, 1/sqrt(shape))
SHAPES = [
    ("constant", 1.0, 0.0),
    ("poisson", 1.0, 1.0),
    ("gamma", 0.25, 2.0),
    ("gamma", 4.0, 0.5),
]


def gaps(offsets: np.ndarray) -> np.ndarray:
    return np.diff(offsets)


def coefficient_of_variation(values: np.ndarray) -> float:
    return float(values.std(ddof=1) / values.mean())


def ks_statistic_exponential(samples: np.ndarray, rate: float) -> float:
    """Largest distance between the empirical CDF of `samples` and the exponential CDF at `rate`."""
    ordered = np.sort(samples)
    n = len(ordered)
    cdf = 1.0 - np.exp(-rate * ordered)
    above = np.arange(1, n + 1) / n - cdf
    below = cdf - np.arange(0, n) / n
    return float(max(above.max(), below.max()))


@pytest.mark.parametrize(("arrival", "burstiness", "cv"), SHAPES)
def test_achieved_rate_is_the_requested_rate(arrival: str, burstiness: float, cv: float) -> None:
    offsets = schedule(arrival, RATE, DURATION_S, seed=11, burstiness=burstiness)
    # The count's spread: sqrt(r T) * cv; a constant schedule is exact up to the request at 0.
    tolerance = max(SIGMAS * math.sqrt(EXPECTED) * cv, 1.0)
    assert abs(len(offsets) - EXPECTED) <= tolerance
    assert len(offsets) / DURATION_S == pytest.approx(RATE, rel=0.05)


@pytest.mark.parametrize(("arrival", "burstiness", "cv"), SHAPES)
def test_gap_coefficient_of_variation(arrival: str, burstiness: float, cv: float) -> None:
    offsets = schedule(arrival, RATE, DURATION_S, seed=12, burstiness=burstiness)
    measured = coefficient_of_variation(gaps(offsets))
    if cv == 0.0:
        assert measured == pytest.approx(0.0, abs=1e-9)
    else:
        # With 20 000 gaps the sample CV is within ~2 % (one sigma) even for gamma(0.25), whose fourth
        # moment is large; 5 % leaves room without letting a wrong shape (CV off by 2x) through.
        assert measured == pytest.approx(cv, rel=0.05)


@pytest.mark.parametrize(("arrival", "burstiness"), [("poisson", 1.0), ("gamma", 0.25), ("gamma", 4.0)])
def test_mean_gap_is_one_over_rate(arrival: str, burstiness: float) -> None:
    offsets = schedule(arrival, RATE, DURATION_S, seed=13, burstiness=burstiness)
    assert gaps(offsets).mean() == pytest.approx(1.0 / RATE, rel=0.03)


def test_constant_gaps_are_exactly_one_over_rate() -> None:
    offsets = schedule("constant", 8.0, 2.0, seed=0)
    np.testing.assert_allclose(offsets, [k / 8.0 for k in range(16)])


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_poisson_gaps_pass_kolmogorov_smirnov_against_the_exponential(seed: int) -> None:
    intervals = gaps(schedule("poisson", RATE, DURATION_S, seed=seed))
    assert ks_statistic_exponential(intervals, RATE) < KS_CRITICAL_1PCT / math.sqrt(len(intervals))


@pytest.mark.parametrize("burstiness", [0.25, 4.0])
def test_gamma_gaps_fail_kolmogorov_smirnov_against_the_exponential(burstiness: float) -> None:
    # The statistic has the power to tell the shapes apart, so the Poisson test above can fail.
    intervals = gaps(schedule("gamma", RATE, DURATION_S, seed=1, burstiness=burstiness))
    assert ks_statistic_exponential(intervals, RATE) > 5 * KS_CRITICAL_1PCT / math.sqrt(len(intervals))


@pytest.mark.parametrize(
    ("arrival", "burstiness"),
    [("constant", 1.0), ("poisson", 1.0), ("gamma", 0.25), ("gamma", 4.0), ("gamma", 0.05)],
)
@pytest.mark.parametrize(("rate", "duration_s"), [(RATE, DURATION_S), (3.0, 1.0), (0.5, 3.0), (200.0, 0.7)])
def test_offsets_are_sorted_within_the_duration_and_start_at_zero(
    arrival: str, burstiness: float, rate: float, duration_s: float
) -> None:
    for seed in range(5):
        offsets = schedule(arrival, rate, duration_s, seed=seed, burstiness=burstiness)
        assert offsets[0] == 0.0
        assert np.all(offsets >= 0.0)
        assert np.all(offsets < duration_s)
        assert np.all(np.diff(offsets) >= 0.0)


def test_schedule_reaches_the_end_of_the_duration() -> None:
    # Very bursty gaps can exhaust the first batch of draws before duration_s; the schedule draws more.
    offsets = schedule("gamma", 20.0, 50.0, seed=4, burstiness=0.05)
    assert len(offsets) / 50.0 == pytest.approx(20.0, rel=0.5)
    assert offsets[-1] > 40.0


@pytest.mark.parametrize(("arrival", "burstiness"), [("poisson", 1.0), ("gamma", 0.25), ("gamma", 4.0)])
def test_same_seed_same_schedule_different_seed_different(arrival: str, burstiness: float) -> None:
    first = schedule(arrival, RATE, 20.0, seed=5, burstiness=burstiness)
    again = schedule(arrival, RATE, 20.0, seed=5, burstiness=burstiness)
    other = schedule(arrival, RATE, 20.0, seed=6, burstiness=burstiness)
    np.testing.assert_array_equal(first, again)
    assert len(first) != len(other) or not np.array_equal(first, other)


def test_constant_schedule_does_not_depend_on_the_seed() -> None:
    np.testing.assert_array_equal(
        schedule("constant", RATE, 2.0, seed=1), schedule("constant", RATE, 2.0, seed=2)
    )


@pytest.mark.parametrize("arrival", ["constant", "poisson", "gamma"])
@pytest.mark.parametrize(("rate", "duration_s"), [(0.0, 10.0), (-1.0, 10.0), (5.0, 0.0), (5.0, -2.0)])
def test_non_positive_rate_or_duration_is_rejected(arrival: str, rate: float, duration_s: float) -> None:
    with pytest.raises(ValueError, match="must be positive"):
        schedule(arrival, rate, duration_s, seed=0)


@pytest.mark.parametrize("burstiness", [0.0, -0.5])
def test_non_positive_burstiness_is_rejected_for_gamma(burstiness: float) -> None:
    with pytest.raises(ValueError, match="burstiness"):
        schedule("gamma", RATE, 10.0, seed=0, burstiness=burstiness)


def exact_constant_count(rate: Fraction, duration_s: Fraction) -> int:
    """How many k >= 0 have k / rate < duration_s, in exact arithmetic."""
    return math.ceil(duration_s * rate)


@pytest.mark.parametrize(("rate", "duration_s"), [(50, 400), (8, 2), (10, 3), (4, 1)])
def test_constant_count_is_exact(rate: int, duration_s: int) -> None:
    offsets = schedule("constant", float(rate), float(duration_s), seed=0)
    assert len(offsets) == exact_constant_count(Fraction(rate), Fraction(duration_s))


@pytest.mark.parametrize(("rate", "duration_s"), [(49, 10), (98, 10), (161, 400)])
def test_constant_schedule_when_the_step_does_not_round_trip(rate: int, duration_s: int) -> None:
    offsets = schedule("constant", float(rate), float(duration_s), seed=0)
    assert np.all(offsets < duration_s)
    assert len(offsets) == exact_constant_count(Fraction(rate), Fraction(duration_s))
