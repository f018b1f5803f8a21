"""What the reports say beyond the figures: saturated points, per-tier figures, a 120-column console."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest
from rich.console import Console

from loadtest.reports import (
    compare_markdown,
    compare_results,
    render_summary,
    write_breakdown_csv,
    write_csv,
    write_html,
    write_json,
)
from loadtest.reports.cells import SATURATED_MARK, format_ms, format_number
from loadtest.results import LoadSpec, PointResult, RunResult
from tests.unit.test_loadtest_reports import make_result

CONSOLE_WIDTH = 120


def saturate(point: PointResult) -> None:
    """Mark a point as the aggregation marks a saturated one."""
    point.validity.saturated = True
    point.request_throughput = 0.5 * (point.offered_rps or 1.0)
    if point.energy is not None:
        point.energy.at_saturation = True
    for group in (*point.adapters, *point.tiers):
        group.at_saturation = True


def saturated_result() -> RunResult:
    """Point 1 (of a pass, a saturated warn and a fail) is saturated; the front and best avoid it."""
    result = make_result()
    saturate(result.points[1])
    result.pareto, result.best = [0], 0
    return result


def console_text(result: RunResult, width: int = CONSOLE_WIDTH) -> str:
    console = Console(record=True, width=width)
    render_summary(result, console)
    return console.export_text()


def table_rows(text: str, point: PointResult) -> list[str]:
    """The lines of the points tables that start with a point's label (the checks below are indented more)."""
    return [line for line in text.splitlines() if line.startswith(f" {point.load.label} ")]


# --- saturation in every format -----------------------------------------------------------------------


def test_json_carries_the_saturation_flags_next_to_the_figures(tmp_path: Path) -> None:
    points = json.loads(write_json(saturated_result(), tmp_path / "r.json").read_text())["points"]
    assert [p["validity"]["saturated"] for p in points] == [False, True, False]
    assert [p["energy"]["at_saturation"] for p in points] == [False, True, False]
    assert all(a["at_saturation"] for a in points[1]["adapters"] + points[1]["tiers"])
    assert not any(a["at_saturation"] for a in points[0]["adapters"] + points[0]["tiers"])


def test_csv_carries_the_saturation_flags(tmp_path: Path) -> None:
    result = saturated_result()
    rows = list(csv.DictReader(write_csv(result, tmp_path / "p.csv").read_text().splitlines()))
    assert [r["saturated"] for r in rows] == ["false", "true", "false"]
    assert [r["energy_at_saturation"] for r in rows] == ["false", "true", "false"]
    assert float(rows[1]["offered_rps"]) == result.points[1].offered_rps
    breakdown = list(csv.DictReader(write_breakdown_csv(result, tmp_path / "b.csv").read_text().splitlines()))
    assert {r["at_saturation"] for r in breakdown if r["point"] == "1"} == {"true"}
    assert {r["at_saturation"] for r in breakdown if r["point"] != "1"} == {"false"}


def test_console_marks_the_saturated_point_and_each_of_its_energy_figures() -> None:
    result = saturated_result()
    text = console_text(result)
    saturated, healthy = result.points[1], result.points[0]
    rows = table_rows(text, saturated)
    assert len(rows) == 3  # throughput, latency, energy
    throughput_row, _, energy_row = rows
    assert "saturated" in throughput_row
    assert f"{format_number(saturated.request_throughput)} {SATURATED_MARK}" in throughput_row
    jpt = format_number(saturated.energy.joules_per_output_token)
    assert f"{jpt} {SATURATED_MARK}" in energy_row
    assert energy_row.count(SATURATED_MARK) == 5  # J/out, above idle, marginal, J/total, J/request
    assert not any(SATURATED_MARK in line for line in table_rows(text, healthy))
    assert f"saturated points: {saturated.load.label}" in text
    assert "taken at a saturated point" in text  # the legend


def test_html_marks_the_saturated_point(tmp_path: Path) -> None:
    page = write_html(saturated_result(), tmp_path / "r.html").read_text()
    assert page.count('class="verdict-warn saturated"') == 3
    assert '<td class="saturated">saturated</td>' in page
    assert f"{SATURATED_MARK}</td>" in page
    assert "taken at a saturated point" in page


def test_compare_notes_a_saturated_point() -> None:
    compared = compare_results(make_result(), saturated_result())
    assert [cp.note for cp in compared] == ["", "saturated in B", ""]
    assert "(saturated in B)" in compare_markdown(make_result(), saturated_result())


# --- per service tier ---------------------------------------------------------------------------------


def test_breakdown_csv_has_a_row_per_point_and_model_and_tier(tmp_path: Path) -> None:
    result = make_result()
    rows = list(csv.DictReader(write_breakdown_csv(result, tmp_path / "b.csv").read_text().splitlines()))
    assert len(rows) == 3 * (2 + 2)
    for point in result.points:
        mine = [r for r in rows if int(r["point"]) == point.index]
        assert {r["label"] for r in mine} == {point.load.label}
        assert [(r["group"], r["name"]) for r in mine] == [
            ("model", "base"),
            ("model", "sql-lora"),
            ("service_tier", "auto"),
            ("service_tier", "flex"),
        ]
        flex = point.tiers[1]
        row = mine[3]
        assert row["response_tiers"] == "flex=18;none=1"
        assert int(row["requests"]) == flex.requests
        assert float(row["ttft_p50_s"]) == pytest.approx(flex.ttft_s.p50)
        assert float(row["output_throughput"]) == pytest.approx(flex.output_throughput)
        assert float(row["joules_per_output_token"]) == pytest.approx(flex.joules_per_output_token)
        assert mine[0]["response_tiers"] == ""


def test_console_and_html_show_the_per_tier_figures(tmp_path: Path) -> None:
    result = make_result()
    text = console_text(result)
    page = write_html(result, tmp_path / "r.html").read_text()
    for point in result.points:
        assert f"per service tier, {point.load.label}" in text
        for tier in point.tiers:
            cells = (
                tier.service_tier,
                format_ms(tier.ttft_s.p50),
                format_number(tier.joules_per_output_token),
            )
            assert any(all(cell in line for cell in cells) for line in text.splitlines()), cells
    assert "default 19" in text
    assert "flex 18, none 1" in text
    assert 'id="per-tier"' in page
    assert "flex 18, none 1" in page


def test_without_tiers_there_is_no_tier_table(tmp_path: Path) -> None:
    result = make_result()
    for point in result.points:
        point.tiers = []
    assert "per service tier" not in console_text(result)
    assert 'id="per-tier"' not in write_html(result, tmp_path / "r.html").read_text()


# --- console width ------------------------------------------------------------------------------------


def long_labels(result: RunResult) -> RunResult:
    """The widest loads a sweep labels: gamma arrivals under a concurrency cap, large figures."""
    for i, point in enumerate(result.points):
        point.load = LoadSpec(
            mode="open", arrival="gamma", rate=1000.0 * (i + 1), burstiness=0.25, concurrency=512
        )
        point.offered_rps = point.load.rate
        point.output_throughput = 123456.7
        point.measured, point.ok = 12345, 12000
        point.e2e_from_schedule_s.p99 = 123.456 * (i + 1)
    return result


@pytest.mark.parametrize("saturated", [False, True])
def test_console_tables_fit_120_columns_without_cutting_a_figure(saturated: bool) -> None:
    result = long_labels(saturated_result() if saturated else make_result())
    text = console_text(result)
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= CONSOLE_WIDTH
    assert "…" not in text  # rich's mark of a cut cell
    for point in result.points:
        rows = table_rows(text, point)
        assert len(rows) == 3, point.load.label  # each table's row on one line, its label whole
        throughput, latency, energy = rows
        assert "12000/12345" in throughput
        assert format_number(point.output_throughput) in throughput
        assert format_ms(point.e2e_from_schedule_s.p99) in latency
        assert format_number(point.energy.mean_watts) in energy
    # The per-group tables keep their figures whole too.
    model_rows = [line for line in lines if line.lstrip().startswith("sql-lora")]
    assert len(model_rows) == len(result.points)
    assert all(re.search(r"\b20\s+19\b", row) for row in model_rows)
