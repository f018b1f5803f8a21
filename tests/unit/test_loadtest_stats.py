"""Pure aggregation: distributions, scraped counter series, the /metrics parser, SLOs and point search."""

from __future__ import annotations

import numpy as np
import pytest

from loadtest import scrape
from loadtest.aggregate import distribution
from loadtest.results import (
    Distribution,
    EnergySummary,
    LoadSpec,
    PointResult,
    RequestRecord,
    TokenCounts,
    Validity,
)
from loadtest.scrape import MetricsSeries, Scrape, parse_metrics
from loadtest.slo import best_point, pareto_front, parse_slos, point_meets, request_meets

# --- distribution -------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [1, 2, 3, 10, 101, 1000])
@pytest.mark.parametrize("seed", [0, 1])
def test_distribution_matches_numpy(size: int, seed: int) -> None:
    values = np.random.default_rng(seed).lognormal(mean=-2.0, sigma=1.0, size=size).tolist()
    result = distribution(values)
    expected = np.percentile(values, [50, 90, 95, 99, 99.9])
    assert result.count == size
    assert [result.p50, result.p90, result.p95, result.p99, result.p999] == pytest.approx(expected.tolist())
    assert result.mean == pytest.approx(float(np.mean(values)))
    assert result.max == max(values)


def test_distribution_of_two_values_interpolates_linearly() -> None:
    result = distribution([1.0, 3.0])
    assert (result.p50, result.p90, result.p99, result.p999) == pytest.approx((2.0, 2.8, 2.98, 2.998))
    assert (result.mean, result.max) == (2.0, 3.0)


def test_distribution_of_one_value() -> None:
    assert distribution([0.25]) == Distribution(
        count=1, mean=0.25, p50=0.25, p90=0.25, p95=0.25, p99=0.25, p999=0.25, max=0.25
    )


def test_empty_distribution_is_all_none() -> None:
    result = distribution([])
    assert result.count == 0
    assert [result.mean, result.p50, result.p90, result.p95, result.p99, result.p999, result.max] == [
        None
    ] * 7


# --- MetricsSeries ------------------------------------------------------------------------------

J = scrape.METERED


def series(*points: tuple[float, float], name: str = J) -> MetricsSeries:
    result = MetricsSeries()
    for at, value in points:
        result.add(Scrape(at=at, totals={name: value}))
    return result


def test_value_at_interpolates_linearly_between_scrapes() -> None:
    counters = series((10.0, 100.0), (11.0, 150.0), (13.0, 170.0))
    assert counters.value_at(J, 10.0) == 100.0
    assert counters.value_at(J, 10.5) == pytest.approx(125.0)
    assert counters.value_at(J, 11.0) == 150.0
    assert counters.value_at(J, 12.5) == pytest.approx(165.0)
    assert counters.value_at(J, 13.0) == 170.0


def test_value_at_is_none_outside_the_scraped_span_or_for_unknown_names() -> None:
    counters = series((10.0, 100.0), (11.0, 150.0))
    assert counters.value_at(J, 9.999) is None
    assert counters.value_at(J, 11.001) is None
    assert counters.value_at(scrape.IDLE, 10.5) is None
    assert MetricsSeries().value_at(J, 0.0) is None


def test_value_at_skips_scrapes_without_the_name() -> None:
    counters = series((10.0, 100.0))
    counters.add(Scrape(at=11.0, totals={scrape.IDLE: 5.0}))
    counters.add(Scrape(at=12.0, totals={J: 120.0}))
    assert counters.value_at(J, 11.0) == pytest.approx(110.0)
    assert counters.has(J)
    assert counters.has(scrape.IDLE)
    assert not counters.has(scrape.POWER)


def test_delta_interpolates_both_edges() -> None:
    counters = series((0.0, 0.0), (1.0, 10.0), (2.0, 30.0), (3.0, 30.0))
    assert counters.delta(J, 0.5, 2.5) == pytest.approx(30.0 - 5.0)
    assert counters.delta(J, 1.0, 2.0) == pytest.approx(20.0)
    assert counters.delta(J, -0.5, 2.0) is None
    assert counters.delta(J, 1.0, 3.5) is None


def test_total_delta_is_last_minus_first() -> None:
    assert series((0.0, 5.0), (1.0, 7.0), (9.0, 42.0)).total_delta(J) == 37.0
    assert series((0.0, 5.0)).total_delta(J) is None
    assert series((0.0, 5.0), (1.0, 7.0)).total_delta(scrape.IDLE) is None


def test_largest_gap_inside_a_covered_window() -> None:
    counters = series((0.0, 0.0), (1.0, 1.0), (4.0, 2.0), (5.0, 3.0), (9.0, 4.0))
    assert counters.largest_gap(0.5, 4.5) == pytest.approx(3.0)  # 1 -> 4
    assert counters.largest_gap(2.0, 3.0) == pytest.approx(1.0)  # no scrape inside: the window itself
    assert counters.largest_gap(4.5, 8.0) == pytest.approx(3.0)  # 5 -> 8, cut at the window's end
    assert counters.largest_gap(0.0, 9.0) == pytest.approx(4.0)  # 5 -> 9


def test_largest_gap_is_none_when_the_scrapes_do_not_cover_the_window() -> None:
    counters = series((1.0, 0.0), (2.0, 1.0), (3.0, 2.0))
    assert counters.largest_gap(0.5, 2.5) is None
    assert counters.largest_gap(1.5, 3.5) is None
    assert MetricsSeries().largest_gap(0.0, 1.0) is None


# --- parse_metrics ------------------------------------------------------------------------------

PAGE = """\
# HELP python_gc_objects_collected_total Objects collected during gc
# TYPE python_gc_objects_collected_total counter
python_gc_objects_collected_total{generation="0"} 3912.0
# HELP process_cpu_seconds_total Total user and system CPU time spent in seconds.
# TYPE process_cpu_seconds_total counter
process_cpu_seconds_total 12.5
# HELP wattserve_time_to_first_token_seconds Time to first token.
# TYPE wattserve_time_to_first_token_seconds histogram
wattserve_time_to_first_token_seconds_bucket{adapter="base",le="0.1"} 3.0
wattserve_time_to_first_token_seconds_bucket{adapter="base",le="+Inf"} 4.0
wattserve_time_to_first_token_seconds_count{adapter="base"} 4.0
wattserve_time_to_first_token_seconds_sum{adapter="base"} 0.61
wattserve_time_to_first_token_seconds_created{adapter="base"} 1.7e+09
# HELP wattserve_requests_total Finished requests.
# TYPE wattserve_requests_total counter
wattserve_requests_total{adapter="base",status="ok"} 4.0
# HELP wattserve_prompt_tokens_total Prompt tokens processed.
# TYPE wattserve_prompt_tokens_total counter
wattserve_prompt_tokens_total{adapter="base"} 400.0
wattserve_prompt_tokens_total{adapter="sql-lora"} 120.0
wattserve_prompt_tokens_created{adapter="base"} 1.7e+09
wattserve_prompt_tokens_created{adapter="sql-lora"} 1.7e+09
# HELP wattserve_generation_tokens_total Output tokens generated.
# TYPE wattserve_generation_tokens_total counter
wattserve_generation_tokens_total{adapter="base"} 800.0
wattserve_generation_tokens_total{adapter="sql-lora"} 256.0
wattserve_generation_tokens_created{adapter="base"} 1.7e+09
wattserve_generation_tokens_created{adapter="sql-lora"} 1.7e+09
# HELP wattserve_energy_joules_total Energy attributed to requests, by adapter and phase.
# TYPE wattserve_energy_joules_total counter
wattserve_energy_joules_total{adapter="base",phase="prefill"} 10.5
wattserve_energy_joules_total{adapter="base",phase="decode"} 40.25
wattserve_energy_joules_total{adapter="sql-lora",phase="prefill"} 2.0
wattserve_energy_joules_total{adapter="sql-lora",phase="decode"} 8.0
wattserve_energy_joules_created{adapter="base",phase="prefill"} 1.7e+09
# HELP wattserve_idle_energy_joules_total Metered energy of intervals without any token work.
# TYPE wattserve_idle_energy_joules_total counter
wattserve_idle_energy_joules_total 30.0
wattserve_idle_energy_joules_created 1.7e+09
# HELP wattserve_metered_energy_joules_total All metered energy (attributed + idle).
# TYPE wattserve_metered_energy_joules_total counter
wattserve_metered_energy_joules_total{source="estimated"} 90.75
wattserve_metered_energy_joules_created{source="estimated"} 1.7e+09
# HELP wattserve_energy_meter_info The energy meter in use (value 1).
# TYPE wattserve_energy_meter_info gauge
wattserve_energy_meter_info{source="estimated"} 1.0
# HELP wattserve_power_watts Power over the last sampling interval, per device.
# TYPE wattserve_power_watts gauge
wattserve_power_watts{device="cpu0",source="estimated"} 21.5
wattserve_power_watts{device="cpu1",source="estimated"} 18.5
# HELP wattserve_request_energy_joules Energy attributed to one request.
# TYPE wattserve_request_energy_joules histogram
wattserve_request_energy_joules_bucket{adapter="base",le="+Inf"} 4.0
wattserve_request_energy_joules_count{adapter="base"} 4.0
wattserve_request_energy_joules_sum{adapter="base"} 50.75
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="Qwen/Qwen2.5-0.5B"} 2.0
# HELP vllm:prompt_tokens_total Number of prefill tokens processed.
# TYPE vllm:prompt_tokens_total counter
vllm:prompt_tokens_total{engine="0",model_name="Qwen/Qwen2.5-0.5B"} 520.0
# HELP vllm:generation_tokens_total Number of generation tokens processed.
# TYPE vllm:generation_tokens_total counter
vllm:generation_tokens_total{engine="0",model_name="Qwen/Qwen2.5-0.5B"} 1000.0
vllm:generation_tokens_total{engine="1",model_name="Qwen/Qwen2.5-0.5B"} 56.0
# HELP vllm:request_generation_tokens Number of generation tokens processed.
# TYPE vllm:request_generation_tokens histogram
vllm:request_generation_tokens_bucket{engine="0",le="+Inf",model_name="Qwen/Qwen2.5-0.5B"} 4.0
vllm:request_generation_tokens_count{engine="0",model_name="Qwen/Qwen2.5-0.5B"} 4.0
vllm:request_generation_tokens_sum{engine="0",model_name="Qwen/Qwen2.5-0.5B"} 1056.0
"""


def test_parse_metrics_sums_over_labels() -> None:
    result = parse_metrics(PAGE, at=12.5)
    assert result.at == 12.5
    assert result.totals == pytest.approx(
        {
            scrape.METERED: 90.75,
            scrape.ATTRIBUTED: 10.5 + 40.25 + 2.0 + 8.0,
            scrape.IDLE: 30.0,
            scrape.PROMPT_TOKENS: 520.0,
            scrape.GENERATION_TOKENS: 1056.0,
            scrape.POWER: 40.0,
            scrape.VLLM_PROMPT_TOKENS: 520.0,
            scrape.VLLM_GENERATION_TOKENS: 1056.0,
        }
    )


def test_parse_metrics_by_adapter_and_meter_source() -> None:
    result = parse_metrics(PAGE, at=0.0)
    assert result.by_adapter == {
        scrape.ATTRIBUTED: {"base": pytest.approx(50.75), "sql-lora": pytest.approx(10.0)},
        scrape.PROMPT_TOKENS: {"base": 400.0, "sql-lora": 120.0},
        scrape.GENERATION_TOKENS: {"base": 800.0, "sql-lora": 256.0},
    }
    assert result.meter_source == "estimated"


def test_parse_metrics_of_a_page_without_wattserve_metrics() -> None:
    vllm_only = "\n".join(line for line in PAGE.splitlines() if "wattserve" not in line)
    result = parse_metrics(vllm_only, at=0.0)
    assert result.totals == {scrape.VLLM_PROMPT_TOKENS: 520.0, scrape.VLLM_GENERATION_TOKENS: 1056.0}
    assert result.by_adapter == {}
    assert result.meter_source is None


def test_parsed_scrapes_feed_a_series() -> None:
    later = PAGE.replace('{source="estimated"} 90.75', '{source="estimated"} 100.75')
    counters = MetricsSeries()
    counters.add(parse_metrics(PAGE, at=1.0))
    counters.add(parse_metrics(later, at=3.0))
    assert counters.delta(J, 1.0, 2.0) == pytest.approx(5.0)
    assert counters.total_delta(J) == pytest.approx(10.0)
    assert counters.total_delta(scrape.GENERATION_TOKENS) == 0.0
    assert counters.meter_source == "estimated"


# --- SLOs ---------------------------------------------------------------------------------------


def test_parse_slos_converts_to_seconds() -> None:
    assert parse_slos("ttft_p90=500ms,itl_p99=0.05,e2e_p50=2s") == pytest.approx(
        {"ttft_p90": 0.5, "itl_p99": 0.05, "e2e_p50": 2.0}
    )
    assert parse_slos(" tpot_p999 = .5s , ttft_p95=250ms, ") == pytest.approx(
        {"tpot_p999": 0.5, "ttft_p95": 0.25}
    )
    assert parse_slos("") == {}


@pytest.mark.parametrize(
    "spec",
    [
        "ttft_p90",
        "ttft_p90=",
        "ttft=1s",
        "latency_p90=1s",
        "ttft_p42=1s",
        "ttft_p90=fast",
        "ttft_p90=-1s",
        "ttft_p90=1h",
        "ttft_p90=1e-3",
        "ttft_p90=500ms,e2e_p50",
    ],
)
def test_parse_slos_rejects_bad_specs(spec: str) -> None:
    with pytest.raises(ValueError, match="bad SLO"):
        parse_slos(spec)


def record(**fields: object) -> RequestRecord:
    base = {"index": 0, "point": 0, "model": "base", "phase": "measure"}
    stamps = {"scheduled_at_s": 0.0, "dispatched_at_s": 0.0, "sent_at_s": 0.0}
    return RequestRecord(**(base | stamps | fields))


def test_request_meets_each_limit() -> None:
    slos = {"ttft_p90": 0.5, "itl_p99": 0.05, "e2e_p50": 2.0}
    # ttft 0.3, e2e 1.3, tpot (1.3 - 0.3) / 20 = 0.05
    good = record(first_token_at_s=0.3, end_at_s=1.3, completion_tokens=21)
    assert request_meets(good, slos)
    assert not request_meets(record(first_token_at_s=0.6, end_at_s=1.3, completion_tokens=21), slos)
    assert not request_meets(record(first_token_at_s=0.3, end_at_s=2.1, completion_tokens=101), slos)
    assert not request_meets(record(first_token_at_s=0.3, end_at_s=1.3, completion_tokens=11), slos)
    assert not request_meets(good.model_copy(update={"error": "http_5xx"}), slos)


def test_point_meets_every_percentile() -> None:
    distributions = {
        "ttft": Distribution(count=3, p90=0.4, p99=0.9),
        "itl": Distribution(count=3, p99=0.04),
        "tpot": Distribution(count=0),
        "e2e": Distribution(count=3, p50=1.5),
    }
    assert point_meets(distributions, {"ttft_p90": 0.5, "itl_p99": 0.05, "e2e_p50": 2.0})
    assert not point_meets(distributions, {"ttft_p99": 0.5})
    assert not point_meets(distributions, {"tpot_p50": 1.0})  # no data does not meet an SLO


# --- pareto_front and best_point ----------------------------------------------------------------


def make_point(
    index: int,
    joules_per_token: float | None,
    p99_s: float | None,
    verdict: str = "pass",
    slo_met: bool | None = None,
) -> PointResult:
    """A point with only the fields the searches read set to something meaningful."""
    empty = Distribution(count=0)
    energy = None
    if joules_per_token is not None:
        energy = EnergySummary(
            source="nvml",
            window_s=10.0,
            metered_joules=100.0,
            mean_watts=10.0,
            window_output_tokens=100.0 / joules_per_token,
            window_total_tokens=100.0 / joules_per_token,
            joules_per_output_token=joules_per_token,
            request_joules=empty,
            attributed_joules=0.0,
        )
    return PointResult(
        index=index,
        load=LoadSpec(mode="open", arrival="poisson", rate=float(index + 1)),
        duration_s=12.0,
        window_s=10.0,
        requests=10,
        measured=10,
        ok=10,
        errors={},
        request_throughput=1.0,
        output_throughput=10.0,
        total_token_throughput=20.0,
        ttft_s=empty,
        ttft_from_schedule_s=empty,
        itl_s=empty,
        tpot_s=empty,
        e2e_s=empty,
        e2e_from_schedule_s=Distribution(count=10, p99=p99_s),
        schedule_lag_s=empty,
        queue_wait_s=empty,
        client_cpu_fraction=0.1,
        slo_met=slo_met,
        tokens=TokenCounts(client_prompt=0, client_completion=0, sources={}),
        energy=energy,
        adapters=[],
        validity=Validity(verdict=verdict, checks=[]),
    )


def test_pareto_front_keeps_only_undominated_valid_points_with_energy() -> None:
    points = [
        make_point(0, 0.10, 2.0),
        make_point(1, 0.20, 1.0),
        make_point(2, 0.25, 2.5),  # dominated by 0 and 1
        make_point(3, 0.05, 0.5, verdict="fail"),  # would dominate every point, but failed validity
        make_point(4, None, 0.1),  # no energy figures
        make_point(5, 0.10, 2.0),  # ties 0: neither dominates the other
        make_point(6, 0.10, 3.0),  # equal energy to 0, worse latency: dominated
        make_point(7, 0.30, 0.8, verdict="warn"),  # a warning is still valid
        make_point(8, 0.40, None),  # no latency figures
    ]
    assert pareto_front(points) == [0, 1, 5, 7]


def test_pareto_front_of_nothing_valid_is_empty() -> None:
    assert pareto_front([make_point(0, 0.1, 1.0, verdict="fail"), make_point(1, None, 1.0)]) == []


def test_best_point_is_the_lowest_energy_valid_point_meeting_the_slos() -> None:
    points = [
        make_point(0, 0.05, 1.0, verdict="fail", slo_met=True),
        make_point(1, 0.06, 1.0, slo_met=False),
        make_point(2, 0.09, 1.0, slo_met=True),
        make_point(3, 0.08, 1.0, verdict="warn", slo_met=True),
        make_point(4, None, 1.0, slo_met=True),
        make_point(5, 0.20, 1.0, slo_met=True),
    ]
    assert best_point(points) == 3


def test_best_point_without_slos_considers_every_valid_point() -> None:
    points = [make_point(0, 0.3, 1.0), make_point(1, 0.2, 2.0), make_point(2, 0.1, 3.0, verdict="fail")]
    assert best_point(points) == 1


def test_best_point_is_none_when_no_point_qualifies() -> None:
    points = [
        make_point(0, 0.05, 1.0, verdict="fail", slo_met=True),
        make_point(1, 0.06, 1.0, slo_met=False),
        make_point(2, None, 1.0, slo_met=True),
    ]
    assert best_point(points) is None
    assert best_point([]) is None
