"""The energy-policy benchmark's pure parts: arguments, command lines, figures, targets and the report."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from benchmarks import energy_policy as bench
from benchmarks.energy_policy_report import (
    SLO_WINDOW_S,
    configurations,
    judge,
    markdown,
    run_figures,
    server_energy,
    slo_violations,
)
from loadtest.aggregate import distribution
from loadtest.results import (
    Distribution,
    EnergySummary,
    LoadSpec,
    PointResult,
    RequestRecord,
    RunResult,
    TierSummary,
    TokenCounts,
    Validity,
)

SLOS = {"ttft_p90": 0.5, "itl_p90": 0.05}

# --- arguments and command lines ----------------------------------------------------------------


def test_defaults_are_the_documented_load() -> None:
    args = bench.parse_args([])
    assert (args.rate, args.duration, args.warmup, args.cooldown, args.seed) == (3.0, 150.0, 10.0, 5.0, 0)
    assert (args.max_num_seqs, args.energy_meter) == (32, "estimated")
    assert (args.slo_ttft_p90, args.slo_itl_p90, args.calibrate) == (0.5, 0.05, None)
    assert args.out == Path("bench-results/energy-policy")


def test_help_shows_every_default(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        bench.parse_args(["--help"])
    text = capsys.readouterr().out
    assert "(default: 3.0)" in text
    assert "(default: 150.0)" in text
    assert "(default: estimated)" in text
    assert "(default: off)" in text  # --calibrate states its own default, once
    assert "(default: None)" not in text


@pytest.mark.parametrize(
    "argv",
    [["--duration", "10", "--warmup", "8", "--cooldown", "2"], ["--rate", "0"], ["--calibrate", "1,-2"]],
)
def test_bad_arguments_are_refused(argv: list[str]) -> None:
    with pytest.raises(SystemExit):
        bench.parse_args(argv)


def test_calibration_rates_parse() -> None:
    assert bench.parse_args(["--calibrate", "1,2, 4"]).calibrate == [1.0, 2.0, 4.0]


def test_runs_share_the_load_and_differ_only_in_tier_and_policy() -> None:
    args = bench.parse_args(["--server-flags", "--flex-batch-size 8"])
    configs = configurations(args.slo_ttft_p90, args.slo_itl_p90)
    assert [c.name for c in configs] == ["flex-off", "mixed", "governor-on", "governor-off", "spin-only"]
    servers = {c.name: bench.server_command(c, args) for c in configs}
    harnesses = {
        c.name: bench.harness_command("http://h:1", c.service_tier, args, Path("o")) for c in configs
    }
    for command in servers.values():
        assert "--model" not in command  # the embedded model
        assert command[command.index("--energy-meter") + 1] == "estimated"
        assert command[command.index("--max-num-seqs") + 1] == "32"
        assert command[-2:] == ["--flex-batch-size", "8"]
    on = servers["governor-on"]
    assert on[on.index("--energy-policy") + 1 :][:5] == [
        "slo",
        "--slo-ttft-p90",
        "0.5",
        "--slo-itl-p90",
        "0.05",
    ]
    assert servers["flex-off"] == servers["mixed"] == servers["governor-off"]
    spin = servers["spin-only"]
    assert "--energy-policy" not in spin
    assert spin[spin.index("--engine-spin-seconds") + 1] == "0.02"
    tiers = {name: command[command.index("--service-tier") + 1] for name, command in harnesses.items()}
    assert tiers == {
        "flex-off": "default",
        "mixed": "flex=1,default=1",
        "governor-on": "default",
        "governor-off": "default",
        "spin-only": "default",
    }

    def without_tier(command: list[str]) -> list[str]:
        at = command.index("--service-tier")
        return command[:at] + command[at + 2 :]

    assert len({tuple(without_tier(command)) for command in harnesses.values()}) == 1
    mixed = harnesses["mixed"]
    assert mixed[mixed.index("--slo") + 1] == "ttft_p90=500ms,itl_p90=50ms"
    assert mixed[mixed.index("--rate") + 1] == "3"
    assert "--per-request" in mixed


def test_calibration_uses_its_own_duration() -> None:
    args = bench.parse_args(["--calibrate-duration", "20"])
    command = bench.harness_command("http://h:1", "default", args, Path("o"), calibration_rate=4.0)
    values = {flag: command[command.index(flag) + 1] for flag in ("--rate", "--duration", "--warmup")}
    assert values == {"--rate": "4", "--duration": "20", "--warmup": "5"}


# --- CPU time and governor samples --------------------------------------------------------------


def test_cpu_cores_group_processes_and_count_new_ones_whole() -> None:
    before = {1: ("api", 10.0), 2: ("engine_core", 5.0), 3: ("worker", 1.0)}
    after = {1: ("api", 11.0), 2: ("engine_core", 7.0), 3: ("worker", 5.0), 4: ("worker", 1.0)}
    assert bench.cpu_cores(before, after, 4.0) == pytest.approx(
        {"api": 0.25, "engine_core": 0.5, "worker": 1.25}
    )


def test_governor_samples_keep_values_and_drop_created_timestamps() -> None:
    page = "\n".join(
        [
            "# HELP wattserve_governor_batch_window_seconds The batching window.",
            "wattserve_governor_batch_window_seconds 0.2",
            'wattserve_governor_decisions_total{action="widen",reason="slack"} 9.0',
            'wattserve_governor_decisions_created{action="widen",reason="slack"} 1.7e9',
            "wattserve_requests_queued 0.0",
        ]
    )
    assert bench.governor_samples(page) == {
        "wattserve_governor_batch_window_seconds": 0.2,
        'wattserve_governor_decisions_total{action="widen",reason="slack"}': 9.0,
    }


# --- figures ------------------------------------------------------------------------------------


def energy_document(metered_j: float, busy_s: float, seconds: float, tiers: dict[str, tuple]) -> dict:
    """A `/v1/energy` body with the fields the benchmark reads; tiers: (requests, joules, tokens)."""
    return {
        "source": "estimated",
        "joules_since_start": metered_j,
        "attributed_joules": metered_j * 0.8,
        "idle_joules": metered_j * 0.2,
        "metered_seconds": seconds,
        "busy_seconds": busy_s,
        "idle_floor_watts": 2.5,
        "output_tokens": sum(t[2] for t in tiers.values()),
        "tiers": {
            name: {
                "requests": n,
                "joules": j,
                "dynamic_joules": j / 2,
                "output_tokens": tokens,
                "flex_lane_wait_seconds": n * 0.5,
            }
            for name, (n, j, tokens) in tiers.items()
        },
    }


def test_server_energy_is_the_difference_of_two_documents() -> None:
    before = energy_document(100.0, 10.0, 40.0, {"default": (10, 50.0, 500)})
    after = energy_document(300.0, 40.0, 100.0, {"default": (30, 150.0, 1500), "flex": (4, 10.0, 200)})
    figures = server_energy(before, after)
    assert figures["metered_joules"] == 200.0
    assert figures["busy_share"] == pytest.approx(0.5)
    assert figures["mean_watts"] == pytest.approx(200.0 / 60.0)
    assert figures["attributed_joules_per_output_token"] == pytest.approx(160.0 / 1200)
    assert figures["tiers"]["default"]["joules_per_output_token"] == pytest.approx(0.1)
    assert figures["tiers"]["default"]["dynamic_joules_per_output_token"] == pytest.approx(0.05)
    assert figures["tiers"]["flex"] == pytest.approx(
        {
            "requests": 4,
            "output_tokens": 200,
            "joules_per_output_token": 0.05,
            "dynamic_joules_per_output_token": 0.025,
            "mean_flex_lane_wait_s": 0.5,
        }
    )


def record(
    index: int, at_s: float, ttft_s: float, gap_s: float = 0.01, tier: str = "default"
) -> RequestRecord:
    return RequestRecord(
        index=index,
        point=0,
        model="m",
        service_tier=tier,
        phase="measure",
        scheduled_at_s=at_s,
        dispatched_at_s=at_s,
        sent_at_s=at_s,
        first_token_at_s=at_s + ttft_s,
        end_at_s=at_s + ttft_s + 3 * gap_s,
        itl_s=[gap_s] * 3,
        completion_tokens=4,
    )


def default_tier(records: list[RequestRecord]) -> TierSummary:
    ok = [r for r in records if r.service_tier == "default"]
    return TierSummary(
        service_tier="default",
        requests=len(ok),
        ok=len(ok),
        output_tokens=4 * len(ok),
        ttft_s=distribution([r.ttft_s for r in ok]),
        itl_s=distribution([g for r in ok for g in r.itl_s]),
        e2e_s=distribution([r.e2e_s for r in ok]),
    )


def test_slo_slices_find_a_burst_the_whole_window_hides() -> None:
    # Three 30-s slices of 20 requests; in the second, 4 of them answer slowly: its p90 is over.
    records = [record(i, i * 1.5, 0.9 if 20 <= i < 24 else 0.05) for i in range(60)]
    records.append(record(99, 5.0, 5.0, tier="flex"))  # flex has no latency objective
    verdict = slo_violations(default_tier(records), records, SLOS, (0.0, 3 * SLO_WINDOW_S))
    assert verdict["violated"] == []  # 4 slow in 60: the window's p90 is within the limit
    assert (verdict["windows"], verdict["windows_violated"]) == (3, 1)
    assert (verdict["requests_outside"], verdict["requests"]) == (4, 60)


def test_slo_violated_over_the_window_and_small_slices_skipped() -> None:
    records = [record(i, i * 5.0, 0.05, gap_s=0.08) for i in range(12)]
    verdict = slo_violations(default_tier(records), records, SLOS, (0.0, 60.0))
    assert verdict["violated"] == ["itl_p90"]
    assert verdict["windows"] == 0  # each 30-s slice holds 6 requests: too few to judge
    assert verdict["requests_outside"] == 12
    assert slo_violations(None, [], SLOS, (0.0, 60.0))["violated"] == ["itl_p90", "ttft_p90"]


def run_result(records: list[RequestRecord], verdict: str = "pass") -> RunResult:
    empty = Distribution(count=0)
    tier = default_tier(records)
    tier.joules_per_output_token = 0.08
    point = PointResult(
        index=0,
        load=LoadSpec(mode="open", arrival="poisson", rate=2.0),
        duration_s=92.0,
        window_s=90.0,
        requests=len(records),
        measured=len(records),
        ok=len(records),
        errors={},
        offered_rps=2.0,
        request_throughput=2.0,
        output_throughput=8.0,
        total_token_throughput=16.0,
        ttft_s=tier.ttft_s,
        ttft_from_schedule_s=empty,
        itl_s=tier.itl_s,
        tpot_s=empty,
        e2e_s=empty,
        e2e_from_schedule_s=empty,
        schedule_lag_s=empty,
        queue_wait_s=empty,
        client_cpu_fraction=0.2,
        tokens=TokenCounts(client_prompt=0, client_completion=0, sources={}),
        energy=EnergySummary(
            source="estimated",
            window_s=90.0,
            metered_joules=90.0,
            mean_watts=1.0,
            window_output_tokens=900.0,
            window_total_tokens=1800.0,
            joules_per_output_token=0.1,
            request_joules=empty,
            attributed_joules=80.0,
        ),
        adapters=[],
        tiers=[tier],
        validity=Validity(verdict=verdict, checks=[]),
    )
    config = {"warmup_s": 0.0, "duration_s": 95.0, "cooldown_s": 5.0}
    return RunResult(
        created="now", config=config, environment={}, slos=SLOS, points=[point], requests=records
    )


def test_run_figures_join_the_harness_the_server_and_the_cpu() -> None:
    records = [record(i, i * 1.5, 0.05) for i in range(60)]
    before = energy_document(0.0, 0.0, 0.0, {})
    after = energy_document(100.0, 50.0, 100.0, {"default": (60, 20.0, 240)})
    figures = run_figures(run_result(records), before, after, {"api": 0.1, "worker": 0.8})
    assert figures["metered_joules_per_output_token"] == 0.1
    assert figures["server"]["busy_share"] == 0.5
    assert figures["cpu_cores"] == {"api": 0.1, "worker": 0.8}
    default = figures["tiers"]["default"]
    assert default["joules_per_output_token"] == 0.08  # the harness's, from usage.energy
    assert default["server_joules_per_output_token"] == pytest.approx(20.0 / 240)
    assert default["ttft_p90_s"] == pytest.approx(0.05)
    assert figures["slo"]["windows"] == 3
    assert figures["validity"] == "pass"


# --- targets and report -------------------------------------------------------------------------


def figures(
    jpt: float, tiers: dict[str, tuple[float, float]], violated: list[str] | None = None, slices: int = 0
) -> dict:
    """One run's figures as `run_figures` gives them; tiers: (J/token, TTFT p90)."""
    return {
        "offered_rps": 3.0,
        "validity": "pass",
        "saturated": False,
        "metered_joules_per_output_token": jpt,
        "ttft_p90_s": 0.03,
        "itl_p90_s": 0.007,
        "server": {"busy_share": 0.5, "mean_watts": 18.0, "attributed_joules_per_output_token": jpt * 0.8},
        "cpu_cores": {"api": 0.1, "engine_core": 0.3, "worker": 0.8},
        "tiers": {
            name: {
                "requests": 100,
                "joules_per_output_token": j,
                "server_joules_per_output_token": j,
                "server_dynamic_joules_per_output_token": j,
                "mean_flex_lane_wait_s": None,
                "ttft_p50_s": ttft / 2,
                "ttft_p90_s": ttft,
                "itl_p90_s": 0.007,
                "e2e_p90_s": 0.4,
            }
            for name, (j, ttft) in tiers.items()
        },
        "slo": {"violated": violated or [], "windows": 4, "windows_violated": slices},
    }


def four_runs(**changes: dict) -> dict[str, dict]:
    runs = {
        "flex-off": figures(0.12, {"default": (0.09, 0.030)}),
        "mixed": figures(0.10, {"default": (0.08, 0.032), "flex": (0.05, 1.0)}),
        "governor-on": figures(0.10, {"default": (0.07, 0.2)}),
        "governor-off": figures(0.12, {"default": (0.09, 0.030)}),
    }
    return runs | changes


def test_every_target_passes_on_good_figures() -> None:
    targets = judge(four_runs())
    assert [t["pass"] for t in targets] == [True, True, True, True]
    assert targets[0]["value"] == pytest.approx(1 - 0.05 / 0.08)
    assert targets[1]["value"] == pytest.approx(0.032 / 0.030)
    assert targets[2]["value"] == pytest.approx(1 - 0.10 / 0.12)


@pytest.mark.parametrize(
    ("changes", "failed"),
    [
        ({"mixed": figures(0.1, {"default": (0.08, 0.032), "flex": (0.065, 1.0)})}, 0),  # flex 19 % cheaper
        ({"mixed": figures(0.1, {"default": (0.08, 0.034), "flex": (0.05, 1.0)})}, 1),  # TTFT × 1.13
        ({"governor-on": figures(0.105, {"default": (0.07, 0.2)})}, 2),  # 12.5 % saved
        ({"governor-on": figures(0.1, {"default": (0.07, 0.6)}, ["ttft_p90"])}, 3),  # a new violation
        ({"governor-on": figures(0.1, {"default": (0.07, 0.2)}, slices=1)}, 3),  # one slice over
    ],
)
def test_each_target_fails_on_its_own(changes: dict, failed: int) -> None:
    results = [t["pass"] for t in judge(four_runs(**changes))]
    assert results == [index != failed for index in range(4)]


def test_a_violation_the_fixed_configuration_also_has_is_not_held_against_the_governor() -> None:
    runs = four_runs(
        **{
            "governor-on": figures(0.1, {"default": (0.07, 0.6)}, ["ttft_p90"], slices=2),
            "governor-off": figures(0.12, {"default": (0.09, 0.6)}, ["ttft_p90"], slices=2),
        }
    )
    assert judge(runs)[3]["pass"]


def test_a_failed_or_saturated_run_fails_its_targets() -> None:
    broken = figures(0.10, {"default": (0.08, 0.032), "flex": (0.05, 1.0)})
    broken["validity"] = "fail"
    assert [t["pass"] for t in judge(four_runs(mixed=broken))] == [False, False, True, True]
    saturated = figures(0.10, {"default": (0.07, 0.2)})
    saturated["saturated"] = True
    assert [t["pass"] for t in judge(four_runs(**{"governor-on": saturated}))] == [True, True, False, False]


def test_markdown_has_a_row_per_run_and_tier_and_says_the_energy_is_estimated() -> None:
    runs = four_runs()
    args = argparse.Namespace(**vars(bench.parse_args([])))
    report = {
        "command": "python -m benchmarks.energy_policy",
        "created": "2026-11-23",
        "machine": {"cpus": 2},
        "settings": bench.settings(args),
        "runs": runs,
        "targets": judge(runs),
    }
    page = markdown(report)
    assert "an estimate, not a measurement" in page
    assert page.count("| mixed |") == 1 + 2 + 1  # the run, its two tiers, its CPU row
    assert "| flex-off | default |" in page
    targets = [
        line for line in page.splitlines() if line.startswith(("| flex J", "| default-tier", "| governor:"))
    ]
    assert len(targets) == 4
    assert all("| pass |" in line for line in targets)
    assert "measured window 135 s" in page
