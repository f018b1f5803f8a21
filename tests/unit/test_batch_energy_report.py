"""The batch-energy benchmark's pure parts: the same work both ways, the figures, the ratio and the page."""

from __future__ import annotations

import json
from collections import namedtuple
from pathlib import Path

import numpy as np
import pytest

from benchmarks import batch_energy as bench
from benchmarks.batch_energy_report import (
    BATCH_ENDPOINT,
    batch_input,
    batch_progress,
    batch_run,
    beside_batch,
    beside_rounds,
    live_run,
    markdown,
    metered,
    on_schedule,
    output_answers,
    per_token,
    same_work,
    schedule_duration,
    steal_share,
    ttft_ratio,
    usage_totals,
    workload,
)
from loadtest.arrivals import schedule
from loadtest.cli import build_parser as harness_parser
from loadtest.commands import config_from_args
from loadtest.results import PointResult, RequestRecord, RunResult
from loadtest.validity import LAG_P99_WARN_S
from loadtest.workload import build_requests
from server.batch_wire import check_lines

MODEL = "wattserve-tiny"

# --- the same requests live and as a batch ------------------------------------------------------


@pytest.mark.parametrize(("rate", "requests", "seed"), [(3.0, 200, 0), (0.5, 7, 3), (20.0, 1, 1)])
def test_the_duration_holds_exactly_the_requests(rate: float, requests: int, seed: int) -> None:
    duration = schedule_duration(rate, requests, seed)
    assert len(schedule("poisson", rate, duration, seed)) == requests
    assert float(f"{duration:g}") == duration  # survives the harness's --duration as written


def test_the_batch_holds_the_requests_the_harness_sends() -> None:
    args = bench.parse_args(["--requests", "12", "--rate", "2"])
    duration = schedule_duration(args.rate, args.requests, args.seed)
    command = bench.harness_command("http://h:1", MODEL, args, Path("o"), duration=duration, edges=(0.0, 0.0))
    config = config_from_args(harness_parser().parse_args(command[3:]))
    offsets = schedule(config.arrival, config.rates[0], config.duration_s, config.seed)
    sent = build_requests(config.workload, len(offsets), config.seed)  # as the harness's first point
    assert len(sent) == args.requests
    assert config.workload == workload(MODEL, args.input_len, args.output_len)
    lines = [json.loads(line) for line in batch_input(sent).decode().splitlines()]
    assert [line["custom_id"] for line in lines] == [f"request-{i}" for i in range(12)]
    for spec, line in zip(sent, lines, strict=True):
        assert line["method"] == "POST"
        assert line["url"] == BATCH_ENDPOINT
        live = spec.body()
        assert live["service_tier"] == "default"
        assert line["body"] == {
            key: value
            for key, value in live.items()
            if key not in ("stream", "stream_options", "service_tier")
        }
        assert line["body"]["ignore_eos"] is True
        assert line["body"]["max_tokens"] == args.output_len


def test_the_server_takes_the_batch_input() -> None:
    specs = build_requests(workload(MODEL, 64, 64), 5, 0)
    lines, errors = check_lines(batch_input(specs), BATCH_ENDPOINT)
    assert errors == []
    assert len(lines) == 5


# --- figures ------------------------------------------------------------------------------------


def energy(joules: float, tokens: int, seconds: float, busy_s: float, idle_j: float) -> dict:
    """A `/v1/energy` body with the fields the benchmark reads."""
    return {
        "source": "estimated",
        "joules_since_start": joules,
        "attributed_joules": joules - idle_j,
        "idle_joules": idle_j,
        "metered_seconds": seconds,
        "busy_seconds": busy_s,
        "output_tokens": tokens,
        "tiers": {},
    }


def test_joules_per_token_and_usage_totals() -> None:
    assert per_token(12.8, 128) == pytest.approx(0.1)
    assert per_token(None, 128) is None
    assert per_token(5.0, 0) is None
    totals = usage_totals([(1.0, 64), (None, 64), (3.0, None)])
    assert totals == {
        "answered": 3,
        "usage_output_tokens": 128,
        "usage_joules": 4.0,
        "usage_joules_per_output_token": pytest.approx(4.0 / 128),
    }


def test_output_answers_skip_failed_lines() -> None:
    ok = {
        "response": {
            "status_code": 200,
            "body": {"usage": {"completion_tokens": 64, "energy": {"joules": 2.0}}},
        }
    }
    failed = {"response": {"status_code": 400, "body": {"error": {}}}, "error": {"code": "x"}}
    assert output_answers([ok, failed, ok | {"error": None}]) == [(2.0, 64), (2.0, 64)]


def test_live_and_batch_runs_give_metered_and_usage_joules_per_token() -> None:
    before, after = energy(100.0, 0, 10.0, 5.0, 10.0), energy(1380.0, 12800, 80.0, 45.0, 310.0)
    meter = metered(before, after, 71.5, {"api": 0.2, "worker": 0.9})
    assert meter["metered_joules_per_output_token"] == pytest.approx(0.1)
    assert meter["idle_joules"] == pytest.approx(300.0)
    assert meter["busy_share"] == pytest.approx(40 / 70)
    records = [
        RequestRecord(
            index=i,
            point=0,
            model=MODEL,
            phase="measure",
            scheduled_at_s=i,
            dispatched_at_s=i,
            sent_at_s=i,
            first_token_at_s=i + 0.1,
            end_at_s=i + 1.0,
            completion_tokens=64,
            energy_joules=6.4,
            status_code=200,
        )  # fmt: skip
        for i in range(200)
    ]
    result = RunResult.model_construct(
        requests=records, points=[PointResult.model_construct(duration_s=70.2)]
    )
    live = live_run(result, meter)
    assert (live["requests"], live["answered"], live["usage_output_tokens"]) == (200, 200, 12800)
    assert live["usage_joules_per_output_token"] == pytest.approx(0.1)
    assert (live["work_s"], live["wall_s"]) == (70.2, 71.5)
    line = {
        "response": {
            "status_code": 200,
            "body": {"usage": {"completion_tokens": 64, "energy": {"joules": 3.2}}},
        }
    }
    batch_object = {
        "status": "completed",
        "request_counts": {"total": 200, "completed": 200, "failed": 0},
        "in_progress_at": 1000,
        "completed_at": 1030,
        "energy": {"joules": 640.0, "output_tokens": 12800, "joules_per_output_token": 0.05},
    }
    batch_meter = metered(before, energy(740.0, 12800, 42.0, 30.0, 20.0), 32.0, {"worker": 1.0})
    batch = batch_run(batch_object, [line] * 200, batch_meter)
    assert batch["metered_joules_per_output_token"] == pytest.approx(0.05)
    assert batch["usage_joules_per_output_token"] == pytest.approx(0.05)
    assert batch["work_s"] == 30
    work = same_work(live, batch, 66.954)
    assert work["metered_ratio"] == pytest.approx(0.5)
    assert work["usage_ratio"] == pytest.approx(0.5)
    assert work["batch_below_live"] is True
    assert same_work(batch, live, 66.954)["batch_below_live"] is False


def figures(ttft_p90_s: float | None) -> dict:
    """One live stream's figures as `run_figures` gives them (the fields the report reads)."""
    tiers = (
        {}
        if ttft_p90_s is None
        else {"default": {"requests": 240, "ttft_p50_s": 0.02, "ttft_p90_s": ttft_p90_s}}
    )
    return {
        "validity": "pass",
        "tiers": tiers,
        "server": {"metered_joules": 900.0, "output_tokens": 15360, "busy_share": 0.5},
    }


def test_ttft_ratio_and_its_target() -> None:
    assert ttft_ratio(0.055, 0.05) == pytest.approx(1.1)
    assert ttft_ratio(None, 0.05) is None
    assert ttft_ratio(0.05, 0.0) is None
    progress = batch_progress({}, {}, 1.0, [])
    assert beside_batch(figures(0.05), figures(0.0549), progress)["ttft_target_met"] is True
    assert beside_batch(figures(0.05), figures(0.056), progress)["ttft_target_met"] is False
    assert beside_batch(figures(0.05), figures(None), progress)["ttft_ratio"] is None


def test_the_verdict_is_on_the_median_of_the_rounds() -> None:
    progress = batch_progress({}, {}, 1.0, [])
    stalled_alone = beside_batch(figures(0.5), figures(0.06), progress)  # ratio 0.12: a stall alone
    rounds = [stalled_alone, *(beside_batch(figures(0.05), figures(p90), progress) for p90 in (0.06, 0.07))]
    verdict = beside_rounds(rounds)
    assert verdict["ttft_ratios"] == pytest.approx([0.12, 1.2, 1.4])
    assert verdict["ttft_ratio"] == pytest.approx(1.2)
    assert verdict["ttft_target_met"] is False  # the stalled round alone would have said met
    assert beside_rounds(rounds[:1])["ttft_target_met"] is True
    assert (
        beside_rounds([*rounds, beside_batch(figures(None), figures(0.05), progress)])["ttft_ratio"] is None
    )
    timely = [
        beside_batch(figures(0.05) | on_time(0.05), figures(p90) | on_time(p90 * 0.9), progress)
        for p90 in (0.5, 0.06, 0.07)
    ]
    verdict = beside_rounds(timely)
    assert verdict["ttft_ratios_on_schedule"] == pytest.approx([9.0, 1.08, 1.26])
    assert verdict["ttft_ratio_on_schedule"] == pytest.approx(1.26)
    assert verdict["ttft_target_met_on_schedule"] is False


def on_time(ttft_p90_s: float) -> dict:
    """The `on_schedule` figures of a run."""
    return {"on_schedule": {"lag_limit_s": LAG_P99_WARN_S, "requests": 180, "ttft_p90_s": ttft_p90_s}}


def record(index: int, lag_s: float, ttft_s: float, **fields: object) -> RequestRecord:
    """A default-tier request the harness sent `lag_s` late, answered after `ttft_s`."""
    at = float(index)
    values = {
        "index": index, "point": 0, "model": MODEL, "service_tier": "default", "phase": "measure",
        "scheduled_at_s": at, "dispatched_at_s": at + lag_s, "sent_at_s": at + lag_s,
        "first_token_at_s": at + lag_s + ttft_s, "end_at_s": at + lag_s + 1.0, "completion_tokens": 64,
        "status_code": 200,
    } | fields  # fmt: skip
    return RequestRecord(**values)


def test_on_schedule_leaves_out_what_the_client_sent_late() -> None:
    timely = [record(i, 0.002, 0.05 + i / 1000) for i in range(10)]
    burst = [record(10 + i, 1.3, 0.18) for i in range(5)]  # after a client freeze
    others = [
        record(20, 0.0, 3.0, phase="warmup"),
        record(21, 0.0, 3.0, service_tier="flex"),
        record(22, 0.0, 3.0, status_code=503, error="http_5xx"),
        record(23, 2 * LAG_P99_WARN_S, 3.0),
        record(24, LAG_P99_WARN_S / 2, 0.07),
    ]
    figures = on_schedule(RunResult.model_construct(requests=[*timely, *burst, *others]))
    assert figures["requests"] == 11
    assert figures["lag_limit_s"] == LAG_P99_WARN_S
    expected = [0.05 + i / 1000 for i in range(10)] + [0.07]
    assert figures["ttft_p90_s"] == pytest.approx(float(np.percentile(expected, 90)))
    assert on_schedule(RunResult.model_construct(requests=None))["ttft_p90_s"] is None


def test_host_steal_share() -> None:
    times = namedtuple("times", "user system idle steal")
    assert steal_share(times(10, 2, 100, 1), times(40, 8, 130, 21)) == pytest.approx(20 / 86)
    assert steal_share(times(1, 1, 1, 0), times(1, 1, 1, 0)) is None  # no time passed
    no_steal = namedtuple("times", "user system idle")
    assert steal_share(no_steal(1, 1, 1), no_steal(2, 2, 2)) is None  # not reported here


def test_batch_progress_over_the_live_run() -> None:
    start = {
        "status": "in_progress",
        "request_counts": {"total": 5000, "completed": 40},
        "energy": {"output_tokens": 2560},
    }
    end = {
        "status": "in_progress",
        "request_counts": {"total": 5000, "completed": 940},
        "energy": {"output_tokens": 60160},
    }
    progress = batch_progress(start, end, 90.0, [(0.0, 40), (5.0, 90), (10.0, 100)])
    assert progress["lines_per_s"] == pytest.approx(10.0)
    assert progress["output_tokens_per_s"] == pytest.approx(640.0)
    assert progress["min_lines_per_s_sampled"] == pytest.approx(2.0)
    assert progress["lasted_the_run"] is True
    assert batch_progress(start, end | {"status": "finalizing"}, 90.0, [])["lasted_the_run"] is False


def test_the_large_batch_outlasts_the_stream() -> None:
    args = bench.parse_args(["--duration", "90"])
    work = {"batch": {"answered": 200, "work_s": 20, "wall_s": 25.0}}
    assert bench.outlasting_lines(args, work) == 2 * 10 * (90 + 30)
    assert bench.outlasting_lines(bench.parse_args(["--batch-lines", "777"]), work) == 777
    assert bench.outlasting_lines(args, {"batch": {"answered": 10**6, "work_s": 1, "wall_s": 1.0}}) == 50_000


# --- arguments and report -----------------------------------------------------------------------


def test_defaults_and_bad_arguments() -> None:
    args = bench.parse_args([])
    assert (args.requests, args.rate, args.duration, args.seed, args.output_len) == (200, 3.0, 90.0, 0, 64)
    assert args.out == Path("bench-results/batch-energy")
    for argv in (
        ["--rate", "0"],
        ["--requests", "0"],
        ["--duration", "10", "--warmup", "8", "--cooldown", "2"],
        ["--rounds", "0"],
        ["--beside-only"],  # nothing would size the batch
    ):
        with pytest.raises(SystemExit):
            bench.parse_args(argv)
    command = bench.server_command(args, "sqlite:////tmp/b.sqlite3")
    assert "--model" not in command  # the embedded model
    assert command[command.index("--batch-store") + 1] == "sqlite:////tmp/b.sqlite3"


def test_markdown_shows_both_measurements() -> None:
    run = {
        "requests": 200, "answered": 200, "output_tokens": 12800, "metered_joules": 1280.0,
        "metered_joules_per_output_token": 0.1, "usage_joules_per_output_token": 0.09, "idle_joules": 300.0,
        "busy_share": 0.55, "mean_watts": 18.0, "wall_s": 71.5, "work_s": 70.2,
    }  # fmt: skip
    batch = run | {"metered_joules_per_output_token": 0.05, "usage_joules_per_output_token": 0.045}
    batch |= {"batch_energy": {"joules": 576.0, "output_tokens": 12800, "joules_per_output_token": 0.045}}
    start = {"status": "in_progress", "request_counts": {"total": 5000, "completed": 40}}
    end = {"status": "in_progress", "request_counts": {"total": 5000, "completed": 940}}
    report = {
        "command": "python -m benchmarks.batch_energy",
        "created": "2026-12-03T10:00:00+00:00",
        "machine": {"cpus": 2},
        "load_average_at_start": 0.8,
        "settings": bench.settings(bench.parse_args([])),
        "same_work": same_work(run, batch, 66.954),
        "beside_batch": beside_rounds(
            [
                beside_batch(
                    figures(0.05) | on_time(0.04) | {"host_steal_share": 0.031},
                    figures(0.06) | on_time(0.042),
                    batch_progress(start, end, 90.0, []),
                )
            ]
        ),
    }
    page = markdown(report)
    assert "`estimated` (an estimate from CPU time, not a measurement)" in page
    assert "load average 0.80" in page
    assert "| live | 200/200 | 12800 | 1280.0 | 0.1000 | 0.0900 |" in page
    assert "metered **0.500×** live" in page
    assert "per round: 1.200; median **1.200** (target ≤ 1.1: NOT met)" in page
    assert "| 1 | alone | 240 | 20.0 ms | 50.0 ms | 180 | 40.0 ms |" in page
    assert "| 3 % | none |" in page  # the host's steal during the alone run
    assert "per round: 1.050; median **1.050** (target ≤ 1.1: met)" in page
    assert "40 → 940 of 5000 lines answered (10.00 lines/s" in page
    assert "still running when the stream ended: yes" in page
    beside_only = markdown(report | {"same_work": None})
    assert "## The same work" not in beside_only
    assert "## Live traffic beside a large batch" in beside_only
