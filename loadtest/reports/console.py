"""Print a run's summary to the terminal: points tables, per model and tier, idle power and checks.

The tables are laid out to fit 120 columns without cutting a figure: one table per theme (load and
throughput, latency, energy) rather than one table too wide to read.
"""

from __future__ import annotations

from collections.abc import Sequence

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from loadtest.reports.cells import (
    ADAPTER_HEADERS,
    MARKS_LEGEND,
    SATURATED,
    TIER_HEADERS,
    PointsTable,
    adapter_rows,
    describe_check,
    flagged_checks,
    model_names,
    point_mark,
    points_tables,
    run_notes,
    tier_rows,
    verdict_text,
)
from loadtest.results import RunResult

__all__ = ["VERDICT_STYLES", "render_summary"]

VERDICT_STYLES = {"pass": "green", "warn": "yellow", "fail": "bold red", SATURATED: "bold magenta"}


def _table(title: str) -> Table:
    # Rules between columns but no outer frame and one space of padding: about 3 columns of chrome
    # per column, so that nine figures and a point label fit 120 columns.
    return Table(
        title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True
    )


def _points_table(result: RunResult, spec: PointsTable) -> Table:
    table = _table(spec.title)
    table.add_column("point", no_wrap=True)
    if spec.marks:
        table.add_column("verdict", no_wrap=True)
    for column in spec.columns:
        table.add_column(column.header, justify="right", no_wrap=True)
    if spec.marks:
        table.add_column("", no_wrap=True)
    for point in result.points:
        cells: list[str | Text] = [point.load.label]
        if spec.marks:
            verdict = verdict_text(point)
            cells.append(Text(verdict, style=VERDICT_STYLES[verdict]))
        cells += [column.cell(point) for column in spec.columns]
        if spec.marks:
            cells.append(point_mark(result, point))
        table.add_row(*cells)
    return table


def _group_table(title: str, headers: Sequence[str], rows: list[tuple[str, ...]], text_columns: int) -> Table:
    table = _table(title)
    for i, header in enumerate(headers):
        table.add_column(header, justify="left" if i < text_columns else "right", no_wrap=i >= text_columns)
    for row in rows:
        table.add_row(*row)
    return table


def render_summary(result: RunResult, console: Console) -> None:
    """Print the summary of a run.

    Args:
        result: The run to summarise.
        console: Where to print; 120 columns hold every table whole.
    """
    console.print(Text(f"load test {result.created}", style="bold"))
    for spec in points_tables(result):
        console.print(_points_table(result, spec))
    console.print(Text(MARKS_LEGEND, style="dim"))

    # One model name means the per-model tables would repeat the points tables.
    if len(model_names(result)) > 1:
        for point in result.points:
            title = f"per model, {point.load.label}"
            console.print(_group_table(title, ADAPTER_HEADERS, adapter_rows(point), text_columns=1))
    for point in result.points:
        if point.tiers:
            title = f"per service tier, {point.load.label}"
            console.print(_group_table(title, TIER_HEADERS, tier_rows(point), text_columns=2))

    for key, value in run_notes(result):
        console.print(f"[bold]{key}:[/bold] ", Text(value), sep="")
    flagged = flagged_checks(result)
    if flagged:
        console.print("[bold]checks that did not pass:[/bold]")
        for point, check in flagged:
            line = Text(f"  {point.load.label}  ")
            line.append(check.status, style=VERDICT_STYLES[check.status])
            line.append(f"  {check.name}: {describe_check(check)}")
            console.print(line)
