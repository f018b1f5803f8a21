"""Saturation: offered against answered over the same window, the validity stamp, and what it keeps out."""

from __future__ import annotations

import numpy as np
import pytest

from loadtest import scrape
from loadtest.aggregate import PointTiming, summarize_point
from loadtest.arrivals import schedule
from loadtest.results import LoadSpec, PointResult, RequestRecord
from loadtest.saturation import MAX_TREND_SAMPLES, SATURATION_SHARE, answer_stretch, stop_reason
from loadtest.scheduler import Window
from loadtest.scrape import MetricsSeries, Scrape
from loadtest.slo import best_point, pareto_front

# The sweep that used to stop after its first point: 15 s points, the default 5 s warm-up and 2 s cool-down.
DURATION_S, WARMUP_S, COOLDOWN_S = 15.0, 5.0, 2.0
WINDOW = Window(WARMUP_S, DURATION_S - COOLDOWN_S)
STARTED_AT = 1000.0
TOKENS = 64


def record(index: int, scheduled_s: float, end_s: float, *, error: str | None = None) -> RequestRecord:
    """A request as the runner records it, answered at `end_s` (seconds from the point's start)."""
    ok = error is None
    return RequestRecord(
        index=index,
        point=0,
        model="base" if index % 2 else "sql-lora",
        service_tier="flex" if index % 3 else "default",
        response_service_tier=("flex" if index % 3 else "default") if ok else None,
        phase=WINDOW.phase(scheduled_s),
        scheduled_at_s=scheduled_s,
        dispatched_at_s=scheduled_s,
        sent_at_s=scheduled_s,
        first_token_at_s=min(end_s, scheduled_s + 0.1) if ok else None,
        end_at_s=end_s if ok else None,
        itl_s=[0.02] * (TOKENS - 1) if ok else [],
        prompt_tokens=16 if ok else None,
        completion_tokens=TOKENS if ok else None,
        token_source="usage" if ok else None,
        energy_joules=0.5 if ok else None,
        energy_source="nvml" if ok else None,
        status_code=200 if ok else 429,
        error=error,
    )


def steady(offsets: np.ndarray, latencies_s: np.ndarray) -> list[RequestRecord]:
    """A server that keeps up: each request answered its own latency after it was scheduled."""
    return [record(i, s, s + lat) for i, (s, lat) in enumerate(zip(offsets, latencies_s, strict=True))]


def queueing(offsets: np.ndarray, service_s: float) -> list[RequestRecord]:
    """A one-at-a-time server that needs `service_s` per request: a FIFO queue when offered more."""
    records, free_at = [], 0.0
    for i, s in enumerate(offsets):
        free_at = max(free_at, s) + service_s
        records.append(record(i, s, free_at))
    return records


def energy_series(watts: float = 200.0, tokens_per_s: float = 128.0) -> MetricsSeries:
    series = MetricsSeries()
    for t in range(int(DURATION_S) + 4):
        totals = {scrape.METERED: watts * t, scrape.GENERATION_TOKENS: tokens_per_s * t}
        series.add(Scrape(at=STARTED_AT + t, totals=totals, meter_source="nvml"))
    return series


def summarize(records: list[RequestRecord], rate: float, series: MetricsSeries | None = None) -> PointResult:
    last_end = max((r.end_at_s for r in records if r.end_at_s is not None), default=DURATION_S)
    timing = PointTiming(
        STARTED_AT, STARTED_AT + max(DURATION_S, last_end), WINDOW.start_s, WINDOW.end_s, 0.1
    )
    load = LoadSpec(mode="open", arrival="poisson", rate=rate)
    return summarize_point(0, load, records, series or MetricsSeries(), timing, slos={})


# --- the answer stretch -------------------------------------------------------------------------------


def test_long_constant_latency_is_no_stretch() -> None:
    offsets = np.arange(16) * 0.5 + WARMUP_S
    assert answer_stretch(steady(offsets, np.full(16, 3.0))) == pytest.approx(1.0)


def test_a_fifo_queue_stretches_by_offered_over_capacity() -> None:
    offsets = np.arange(40) * 0.25  # 4 req/s offered to a server that answers 2 per second
    assert answer_stretch(queueing(offsets, service_s=0.5)) == pytest.approx(2.0, rel=0.05)


def test_one_slow_answer_does_not_stretch_the_window() -> None:
    offsets = np.arange(16) * 0.5
    latencies = np.full(16, 0.5)
    latencies[-1] = 6.0  # the last request of the window is the slow one
    assert answer_stretch(steady(offsets, latencies)) == pytest.approx(1.0)


def test_stretch_never_drops_below_one_nor_fails_on_tiny_samples() -> None:
    offsets = np.arange(12) * 0.5
    shrinking = np.linspace(4.0, 0.5, 12)  # a server warming up: later answers come faster
    assert answer_stretch(steady(offsets, shrinking)) == 1.0
    assert answer_stretch([]) == 1.0
    assert answer_stretch(steady(np.array([1.0]), np.array([9.0]))) == 1.0
    assert answer_stretch(steady(np.array([1.0, 1.0]), np.array([1.0, 5.0]))) == 1.0


def test_long_windows_are_read_from_an_even_sample_of_their_requests() -> None:
    offsets = np.arange(3000) * 0.01  # 100 req/s for 30 s: more requests than the trend reads
    assert len(offsets) > MAX_TREND_SAMPLES
    jitter = np.random.default_rng(0).lognormal(np.log(0.5), 0.5, size=len(offsets))
    assert answer_stretch(steady(offsets, jitter)) == 1.0
    assert answer_stretch(queueing(offsets, service_s=0.0125)) == pytest.approx(1.25, rel=0.02)


# --- points -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("rate", [2.0, 4.0])
@pytest.mark.parametrize("seed", range(10))
def test_a_short_point_of_a_healthy_server_is_not_saturated(rate: float, seed: int) -> None:
    # Poisson arrivals and 2 s answers with 30 % jitter: the answered rate over the window used to read
    # about 20 % low here, because the last answers of the window came after it.
    offsets = schedule("poisson", rate, DURATION_S, seed)
    latencies = np.random.default_rng(seed).lognormal(np.log(2.0), 0.3, size=len(offsets))
    point = summarize(steady(offsets, latencies), rate)
    assert point.offered_rps == pytest.approx(point.measured / (WINDOW.end_s - WINDOW.start_s))
    assert point.request_throughput / point.offered_rps > SATURATION_SHARE
    assert point.validity.saturated is False
    checks = {c.name: c for c in point.validity.checks}
    assert checks["saturation"].status == "pass"
    assert stop_reason(point, None) is None


def test_a_constant_rate_healthy_point_answers_exactly_what_was_offered() -> None:
    offsets = schedule("constant", 2.0, DURATION_S, 0)
    point = summarize(steady(offsets, np.full(len(offsets), 2.0)), 2.0)
    assert point.measured == 16
    assert point.offered_rps == pytest.approx(2.0)
    assert point.request_throughput == pytest.approx(2.0)
    assert point.answer_span_s == pytest.approx(point.window_s)
    assert point.output_throughput == pytest.approx(2.0 * TOKENS)


def test_a_server_that_falls_behind_is_saturated_and_says_so_everywhere() -> None:
    offsets = schedule("constant", 2.0, DURATION_S, 0)
    point = summarize(queueing(offsets, service_s=1.0), 2.0, energy_series())
    assert point.request_throughput == pytest.approx(1.0, rel=0.1)
    assert point.answer_span_s == pytest.approx(2 * point.window_s, rel=0.1)
    assert point.validity.saturated is True
    check = {c.name: c for c in point.validity.checks}["saturation"]
    assert check.status == "warn"
    assert check.value == pytest.approx(0.5, rel=0.1)
    assert check.limit == SATURATION_SHARE
    assert point.validity.verdict != "pass"
    assert point.energy is not None
    assert point.energy.at_saturation is True
    assert all(group.at_saturation for group in (*point.adapters, *point.tiers))
    reason = stop_reason(point, None)
    assert reason is not None
    assert "saturated" in reason
    assert "answered of 2.00 offered" in reason


def test_refused_requests_count_as_not_answered() -> None:
    offsets = schedule("constant", 2.0, DURATION_S, 0)
    records = steady(offsets, np.full(len(offsets), 0.2))
    for r in records[10:16]:  # 6 of the window's 16 refused
        r.error, r.end_at_s, r.first_token_at_s = "http_4xx", None, None
    point = summarize(records, 2.0)
    assert point.request_throughput == pytest.approx(10 / 8)
    assert point.validity.saturated is True
    assert point.validity.verdict == "fail"  # the errors check fails too
    assert "failed" in stop_reason(point, None)


def test_a_healthy_point_keeps_its_energy_figures_unflagged() -> None:
    offsets = schedule("constant", 2.0, DURATION_S, 0)
    point = summarize(steady(offsets, np.full(len(offsets), 1.0)), 2.0, energy_series())
    assert point.energy is not None
    assert point.energy.at_saturation is False
    assert not any(group.at_saturation for group in (*point.adapters, *point.tiers))


def test_saturated_points_stay_out_of_the_front_and_the_search() -> None:
    offsets = schedule("constant", 2.0, DURATION_S, 0)
    healthy = summarize(steady(offsets, np.full(len(offsets), 1.0)), 2.0, energy_series(watts=200.0))
    # Cheaper per token and no slower at p99 from the schedule: it would win both, were it not saturated.
    saturated = summarize(queueing(offsets, service_s=1.0), 2.0, energy_series(watts=50.0))
    saturated.index = 1
    saturated.e2e_from_schedule_s.p99 = healthy.e2e_from_schedule_s.p99
    assert saturated.energy.joules_per_output_token < healthy.energy.joules_per_output_token
    assert pareto_front([healthy, saturated]) == [0]
    assert best_point([healthy, saturated]) == 0
    saturated.validity.saturated = False
    assert pareto_front([healthy, saturated]) == [1]


def test_closed_loops_have_no_offered_rate_and_stop_when_throughput_stops_growing() -> None:
    offsets = schedule("constant", 2.0, DURATION_S, 0)
    records = steady(offsets, np.full(len(offsets), 1.0))
    timing = PointTiming(STARTED_AT, STARTED_AT + DURATION_S, WINDOW.start_s, WINDOW.end_s, 0.1)
    points = [
        summarize_point(i, LoadSpec(mode="closed", concurrency=c), records, MetricsSeries(), timing, slos={})
        for i, c in enumerate((4, 8))
    ]
    assert points[0].offered_rps is None
    assert "saturation" not in {c.name for c in points[0].validity.checks}
    assert points[0].validity.saturated is False
    assert stop_reason(points[0], None) is None
    assert "at capacity" in stop_reason(points[1], points[0])
