"""The report writers and `compare`, on a synthetic run."""

from __future__ import annotations

import base64
import csv
import json
import re
from html import escape
from pathlib import Path

import pytest
from rich.console import Console

from loadtest.reports import (
    compare_markdown,
    compare_results,
    read_json,
    render_compare,
    render_summary,
    write_csv,
    write_html,
    write_json,
    write_requests_jsonl,
)
from loadtest.results import (
    AdapterSummary,
    Check,
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

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def dist(base: float, count: int = 40) -> Distribution:
    return Distribution(
        count=count,
        mean=base * 1.1,
        p50=base,
        p90=base * 1.7,
        p95=base * 2.1,
        p99=base * 3.3,
        p999=base * 4.0,
        max=base * 4.4,
    )


def make_point(index: int, load: LoadSpec, *, energy: bool, verdict: str = "pass") -> PointResult:
    scale = 1.0 + index
    checks = [Check(name="errors", status="pass", value=0.0, limit=0.01)]
    if verdict != "pass":
        checks.append(
            Check(
                name="schedule_lag", status=verdict, value=0.31, limit=0.05, detail="the client fell behind"
            )
        )
    adapters = [
        AdapterSummary(
            model=model,
            requests=20,
            ok=19,
            output_tokens=2000 + 100 * index,
            request_throughput=0.6 * scale,
            output_throughput=150.25 * scale,
            ttft_s=dist(0.05 * scale),
            itl_s=dist(0.011 * scale),
            e2e_s=dist(1.3 * scale),
            joules=150.0 * scale if energy else None,
            joules_per_output_token=0.07 * scale if energy else None,
        )
        for model in ("base", "sql-lora")
    ]
    tiers = [
        TierSummary(
            service_tier=tier,
            response_tiers=served,
            requests=20,
            ok=19,
            output_tokens=1900,
            request_throughput=0.6 * scale,
            output_throughput=150.25 * scale,
            ttft_s=dist(0.05 * scale * (3 if tier == "flex" else 1)),
            itl_s=dist(0.011 * scale),
            e2e_s=dist(1.3 * scale),
            joules=140.0 * scale if energy else None,
            joules_per_output_token=0.0737 * scale if energy else None,
        )
        for tier, served in (("auto", {"default": 19}), ("flex", {"flex": 18, "none": 1}))
    ]
    energy_summary = None
    if energy:
        energy_summary = EnergySummary(
            source="nvml",
            window_s=30.0,
            metered_joules=4500.5 * scale,
            mean_watts=150.0 + 40 * index,
            window_output_tokens=9000.0 * scale,
            window_total_tokens=27000.0 * scale,
            joules_per_output_token=0.5 / scale,
            joules_per_total_token=0.17 / scale,
            idle_watts=60.25,
            joules_per_output_token_above_idle=0.3 / scale,
            marginal_joules_per_output_token=None if index == 0 else 0.123 * index,
            request_joules=dist(11.0 * scale),
            attributed_joules=4400.0 * scale,
            server_attributed_joules=4401.5 * scale,
            attribution_match=True,
        )
    return PointResult(
        index=index,
        load=load.model_copy(),
        duration_s=33.5,
        window_s=30.0,
        requests=50 + index,
        measured=40,
        ok=38 - index,
        errors={"timeout": 1, "http_5xx": 1 + index},
        offered_rps=load.rate,
        answer_span_s=30.0,
        request_throughput=1.25 * scale,
        output_throughput=300.5 * scale,
        total_token_throughput=900.25 * scale,
        ttft_s=dist(0.05 * scale),
        ttft_from_schedule_s=dist(0.06 * scale),
        itl_s=dist(0.012 * scale),
        tpot_s=dist(0.013 * scale),
        e2e_s=dist(1.5 * scale),
        e2e_from_schedule_s=dist(1.6 * scale),
        schedule_lag_s=dist(0.001 * scale),
        queue_wait_s=dist(0.002 * scale),
        client_cpu_fraction=0.05 * scale,
        goodput=1.1 * scale if index < 2 else None,
        slo_met=index < 2,
        tokens=TokenCounts(
            client_prompt=10000 * (index + 1),
            client_completion=9000 * (index + 1),
            sources={"usage": 50 + index},
            server_prompt=10000 * (index + 1),
            server_completion=None if index == 2 else 9000 * (index + 1),
            match=index != 2,
        ),
        energy=energy_summary,
        adapters=adapters,
        tiers=tiers,
        validity=Validity(verdict=verdict, checks=checks),
    )


LOADS = (
    LoadSpec(mode="open", arrival="constant", rate=1.0),
    LoadSpec(mode="open", arrival="poisson", rate=2.5, concurrency=8),
    LoadSpec(mode="open", arrival="gamma", rate=5.0, burstiness=0.5),
)


def make_records() -> list[RequestRecord]:
    ok = RequestRecord(
        index=0,
        point=0,
        model="base",
        phase="measure",
        scheduled_at_s=1.0,
        dispatched_at_s=1.001,
        sent_at_s=1.002,
        first_token_at_s=1.052,
        end_at_s=2.002,
        itl_s=[0.01, 0.012],
        prompt_tokens=100,
        completion_tokens=51,
        token_source="usage",
        energy_joules=12.5,
        energy_source="nvml",
        status_code=200,
    )
    failed = RequestRecord(
        index=1,
        point=2,
        model="sql-lora",
        phase="measure",
        scheduled_at_s=3.0,
        dispatched_at_s=3.0,
        sent_at_s=3.0,
        status_code=503,
        error="http_5xx",
        error_detail="overloaded",
    )
    return [ok, failed]


def make_result(*, energy: bool = True, records: bool = True) -> RunResult:
    verdicts = ("pass", "warn", "fail")
    return RunResult(
        created="2025-01-02T03:04:05Z",
        config={
            "server": "http://localhost:8000",
            "profile": {"kind": "constant_rate", "rates": [1, 2.5, 5]},
        },
        environment={"gpu": "H100", "client_host": "bench-1"},
        slos={"ttft_p90": 0.5},
        idle_watts_before=60.0 if energy else None,
        idle_watts_after=60.5 if energy else None,
        points=[make_point(i, load, energy=energy, verdict=verdicts[i]) for i, load in enumerate(LOADS)],
        pareto=[0, 1] if energy else [],
        best=1 if energy else None,
        stopped_because="p99 TTFT above 10 s at 5 req/s",
        requests=make_records() if records else None,
    )


# --- files ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("records", [True, False])
def test_json_round_trips(tmp_path: Path, records: bool) -> None:
    result = make_result(records=records)
    path = write_json(result, tmp_path / "run.json")
    assert read_json(path) == result
    assert ("requests" in json.loads(path.read_text())) is records


def test_read_json_refuses_another_version(tmp_path: Path) -> None:
    path = write_json(make_result().model_copy(update={"version": 99}), tmp_path / "run.json")
    with pytest.raises(ValueError, match="version 99"):
        read_json(path)


CSV_FROM_JSON = {
    "point": ("index",),
    "mode": ("load", "mode"),
    "arrival": ("load", "arrival"),
    "rate": ("load", "rate"),
    "concurrency": ("load", "concurrency"),
    "verdict": ("validity", "verdict"),
    "saturated": ("validity", "saturated"),
    "requests": ("requests",),
    "measured": ("measured",),
    "ok": ("ok",),
    "offered_rps": ("offered_rps",),
    "answer_span_s": ("answer_span_s",),
    "request_throughput": ("request_throughput",),
    "output_throughput": ("output_throughput",),
    "total_token_throughput": ("total_token_throughput",),
    "ttft_p50_s": ("ttft_s", "p50"),
    "ttft_p90_s": ("ttft_s", "p90"),
    "ttft_p99_s": ("ttft_s", "p99"),
    "ttft_from_schedule_p99_s": ("ttft_from_schedule_s", "p99"),
    "itl_p50_s": ("itl_s", "p50"),
    "itl_p90_s": ("itl_s", "p90"),
    "itl_p99_s": ("itl_s", "p99"),
    "tpot_p50_s": ("tpot_s", "p50"),
    "e2e_p50_s": ("e2e_s", "p50"),
    "e2e_p99_s": ("e2e_s", "p99"),
    "e2e_from_schedule_p99_s": ("e2e_from_schedule_s", "p99"),
    "schedule_lag_p99_s": ("schedule_lag_s", "p99"),
    "queue_wait_p99_s": ("queue_wait_s", "p99"),
    "client_cpu_fraction": ("client_cpu_fraction",),
    "goodput": ("goodput",),
    "slo_met": ("slo_met",),
    "client_prompt_tokens": ("tokens", "client_prompt"),
    "client_completion_tokens": ("tokens", "client_completion"),
    "server_prompt_tokens": ("tokens", "server_prompt"),
    "server_completion_tokens": ("tokens", "server_completion"),
    "energy_source": ("energy", "source"),
    "metered_joules": ("energy", "metered_joules"),
    "mean_watts": ("energy", "mean_watts"),
    "energy_at_saturation": ("energy", "at_saturation"),
    "joules_per_output_token": ("energy", "joules_per_output_token"),
    "joules_per_total_token": ("energy", "joules_per_total_token"),
    "joules_per_output_token_above_idle": ("energy", "joules_per_output_token_above_idle"),
    "marginal_joules_per_output_token": ("energy", "marginal_joules_per_output_token"),
    "request_joules_p50": ("energy", "request_joules", "p50"),
    "request_joules_p99": ("energy", "request_joules", "p99"),
    "attributed_joules": ("energy", "attributed_joules"),
    "server_attributed_joules": ("energy", "server_attributed_joules"),
}
CSV_HEADER = ["point", "label", "mode", "arrival", "rate", "concurrency", "verdict", "saturated", "requests"]
CSV_HEADER += ["measured", "ok", "errors", *list(CSV_FROM_JSON)[10:]]


def json_value(point: dict, keys: tuple[str, ...]) -> object:
    value: object = point
    for key in keys:
        if value is None:
            return None
        value = value[key]  # type: ignore[index]
    return value


def assert_cell(cell: str, expected: object, column: str) -> None:
    if expected is None:
        assert cell == "", column
    elif isinstance(expected, bool):
        assert cell == str(expected).lower(), column
    elif isinstance(expected, (int, float)):
        assert float(cell) == expected, column
    else:
        assert cell == expected, column


@pytest.mark.parametrize("energy", [True, False])
def test_csv_has_one_row_per_point_equal_to_the_json(tmp_path: Path, energy: bool) -> None:
    result = make_result(energy=energy)
    points = json.loads(write_json(result, tmp_path / "run.json").read_text())["points"]
    with write_csv(result, tmp_path / "run.csv").open(newline="") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
    assert reader.fieldnames == CSV_HEADER
    assert len(rows) == len(points) == 3
    for row, point, spec in zip(rows, points, result.points, strict=True):
        for column, keys in CSV_FROM_JSON.items():
            assert_cell(row[column], json_value(point, keys), column)
        assert row["label"] == spec.load.label
        assert int(row["errors"]) == sum(point["errors"].values())
    assert (rows[0]["energy_source"] == "nvml") is energy


def test_requests_jsonl_has_each_record_with_its_latencies(tmp_path: Path) -> None:
    result = make_result()
    lines = write_requests_jsonl(result, tmp_path / "requests.jsonl").read_text().splitlines()
    assert len(lines) == len(result.requests)
    rows = [json.loads(line) for line in lines]
    for row, record in zip(rows, result.requests, strict=True):
        assert row["index"] == record.index
        assert row["error"] == record.error
        for key in ("ttft_s", "e2e_s", "tpot_s", "ttft_from_schedule_s", "e2e_from_schedule_s"):
            assert row[key] == getattr(record, key)
    assert rows[0]["ttft_s"] == pytest.approx(0.05)
    assert rows[0]["tpot_s"] == pytest.approx(0.019)
    assert rows[0]["ok"] is True
    assert rows[1]["ttft_s"] is None
    assert rows[1]["ok"] is False


def test_requests_jsonl_refuses_a_run_without_records(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no per-request records"):
        write_requests_jsonl(make_result(records=False), tmp_path / "requests.jsonl")


# --- html ----------------------------------------------------------------------------------------------

IMG = re.compile(r"<img ([^>]*)>")


def images(page: str) -> list[dict[str, str]]:
    return [dict(re.findall(r'(\w+)="([^"]*)"', attrs)) for attrs in IMG.findall(page)]


def test_html_has_four_png_plots_and_every_label(tmp_path: Path) -> None:
    result = make_result()
    page = write_html(result, tmp_path / "report.html").read_text()
    imgs = images(page)
    assert len(imgs) == 4
    assert len({img["id"] for img in imgs}) == 4
    for img in imgs:
        assert img["alt"]
        prefix, payload = img["src"].split(",", 1)
        assert prefix == "data:image/png;base64"
        assert base64.b64decode(payload, validate=True).startswith(PNG_SIGNATURE)
    for point in result.points:
        assert escape(point.load.label) in page
    assert 'id="no-energy"' not in page


def test_html_is_self_contained_and_escaped(tmp_path: Path) -> None:
    result = make_result()
    result.config["note"] = "<script>alert(1)</script>"
    page = write_html(result, tmp_path / "report.html").read_text()
    assert "<script>alert(1)</script>" not in page
    assert escape("<script>alert(1)</script>") in page
    assert not re.search(r'(src|href)="(?!data:)', page)
    assert "<link" not in page
    assert "the client fell behind" in page  # a failed check's detail
    # The failed point's row, once in each points table: throughput, latency, energy.
    assert page.count('class="verdict-fail"') == 3


def test_html_without_energy_renders_and_says_so(tmp_path: Path) -> None:
    result = make_result(energy=False, records=False)
    page = write_html(result, tmp_path / "report.html").read_text()
    assert 'id="no-energy"' in page
    assert "No point has energy figures" in page
    assert [img["id"] for img in images(page)] == ["plot-latency", "plot-throughput"]


# --- console -------------------------------------------------------------------------------------------


def test_console_summary_shows_every_point_and_what_went_wrong() -> None:
    result = make_result()
    console = Console(record=True, width=200)
    render_summary(result, console)
    text = console.export_text()
    for point in result.points:
        assert point.load.label in text
    assert "per model, 1 req/s constant" in text  # two model names: adapter tables
    assert "sql-lora" in text
    assert "60.0 W before, 60.5 W after" in text
    assert "schedule_lag" in text
    assert "the client fell behind" in text
    assert result.stopped_because in text
    assert "estimated, not measured" not in text


def test_console_summary_says_when_energy_is_estimated() -> None:
    result = make_result()
    for point in result.points:
        point.energy.source = "estimated"
    console = Console(record=True, width=200)
    render_summary(result, console)
    assert "estimated (estimated, not measured)" in console.export_text()


# --- compare -------------------------------------------------------------------------------------------


def compared_pair() -> tuple[RunResult, RunResult]:
    a = make_result()
    b = make_result()
    b.points[0].request_throughput = a.points[0].request_throughput * 2
    b.points[0].ttft_s.p99 = a.points[0].ttft_s.p99 / 4
    a.points[1].itl_s.p50 = 0.0
    b.points[1].energy = None
    b.points[2].load.rate = 6.0
    return a, b


def test_compare_ratios_are_b_over_a_and_none_safe() -> None:
    a, b = compared_pair()
    compared = compare_results(a, b)
    assert len(compared) == 3
    by_key = [{m.metric.key: m for m in cp.metrics} for cp in compared]
    assert by_key[0]["request_throughput"].ratio == pytest.approx(2.0)
    assert by_key[0]["ttft_p99_s"].ratio == pytest.approx(0.25)
    assert by_key[0]["output_throughput"].ratio == pytest.approx(1.0)
    assert by_key[0]["joules_per_output_token"].a == a.points[0].energy.joules_per_output_token
    assert by_key[1]["itl_p50_s"].ratio is None  # a is 0
    assert by_key[1]["joules_per_output_token"].b is None
    assert by_key[1]["joules_per_output_token"].ratio is None
    assert [cp.note for cp in compared] == ["", "", "loads differ"]
    assert compared[2].label_b == "6 req/s gamma(0.5)"


def test_compare_keeps_points_present_in_one_run_only() -> None:
    a = make_result()
    b = make_result()
    b.points.pop()
    compared = compare_results(a, b)
    assert compared[2].note == "only in A"
    assert all(m.b is None and m.ratio is None for m in compared[2].metrics)


def test_compare_markdown_is_a_table_of_every_point_and_metric() -> None:
    a, b = compared_pair()
    table = compare_markdown(a, b, names=("before", "after"))
    lines = table.splitlines()
    assert lines[0] == "| point | metric | before | after | after/before |"
    assert set(lines[1].replace("|", "").split()) <= {"---", "---:"}
    assert len(lines) == 2 + 3 * 9
    assert all(line.startswith("| ") and line.endswith(" |") for line in lines)
    assert all(line.count(" | ") == 4 for line in lines)  # no stray pipes from the labels
    assert "| req/s | 1.25 | 2.5 | 2.00× |" in table
    assert "5 req/s gamma(0.5) \\| 6 req/s gamma(0.5) (loads differ)" in table


def test_render_compare_prints_every_point() -> None:
    a, b = compared_pair()
    console = Console(record=True, width=200)
    render_compare(a, b, console, names=("before", "after"))
    text = console.export_text()
    for point in a.points:
        assert point.load.label in text
    assert "after/before" in text
    assert "2.00×" in text
    assert "0.25×" in text
