"""Print a run's summary to the terminal: a table of points, then adapters, idle power and checks.

The plain-text cells and notes are built here once and reused by the HTML report, so both show the
same numbers in the same units.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from rich.console import Console
from rich.table import Table
from rich.text import Text

from loadtest.results import Check, PointResult, RunResult, energy_field

DASH = "—"
BEST_MARK = "★"
PARETO_MARK = "◆"
VERDICT_STYLES = {"pass": "green", "warn": "yellow", "fail": "bold red"}
ADAPTER_HEADERS = ("model", "requests", "ok", "TTFT p50 ms", "ITL p50 ms", "J/out tok")


def format_number(value: float | None, digits: int = 3) -> str:
    """Format a number for a table: `digits` significant digits, thousands separated, "—" for None."""
    if value is None:
        return DASH
    if abs(value) >= 10**digits:
        return f"{value:,.0f}"
    return f"{value:.{digits}g}"


def format_ms(seconds: float | None) -> str:
    """Format a duration given in seconds as milliseconds."""
    return DASH if seconds is None else format_number(seconds * 1e3)


@dataclass(frozen=True)
class Column:
    """One numeric column of the points table: a header and how to read a point's cell."""

    header: str
    cell: Callable[[PointResult], str]


_METRIC_COLUMNS = (
    Column("ok/\nmeasured", lambda p: f"{p.ok}/{p.measured}"),
    Column("errors", lambda p: str(sum(p.errors.values()))),
    Column("req/s", lambda p: format_number(p.request_throughput)),
    Column("out\ntok/s", lambda p: format_number(p.output_throughput)),
    Column("TTFT\np50 ms", lambda p: format_ms(p.ttft_s.p50)),
    Column("TTFT\np99 ms", lambda p: format_ms(p.ttft_s.p99)),
    Column("ITL\np50 ms", lambda p: format_ms(p.itl_s.p50)),
    Column("ITL\np99 ms", lambda p: format_ms(p.itl_s.p99)),
    Column("e2e\np99 ms", lambda p: format_ms(p.e2e_s.p99)),
    Column("sched lag\np99 ms", lambda p: format_ms(p.schedule_lag_s.p99)),
    Column("goodput\nreq/s", lambda p: format_number(p.goodput)),
    Column("J/out\ntok", lambda p: format_number(energy_field("joules_per_output_token")(p))),
    Column(
        "J/out tok\nabove idle",
        lambda p: format_number(energy_field("joules_per_output_token_above_idle")(p)),
    ),
    Column(
        "marginal\nJ/out tok", lambda p: format_number(energy_field("marginal_joules_per_output_token")(p))
    ),
)


def metric_columns(result: RunResult) -> list[Column]:
    """The numeric columns of the points table; goodput only when some point has it (SLOs were set)."""
    with_goodput = any(p.goodput is not None for p in result.points)
    return [c for c in _METRIC_COLUMNS if with_goodput or not c.header.startswith("goodput")]


def point_mark(result: RunResult, point: PointResult) -> str:
    """The mark of a point: best, on the Pareto front, or nothing."""
    if result.best == point.index:
        return BEST_MARK
    return PARETO_MARK if point.index in result.pareto else ""


MARKS_LEGEND = f"{BEST_MARK} best (lowest J/out token meeting the SLOs)   {PARETO_MARK} on the Pareto front"


def model_names(result: RunResult) -> set[str]:
    """Every model name (base model or adapter) seen by any point."""
    return {a.model for p in result.points for a in p.adapters}


def adapter_rows(point: PointResult) -> list[tuple[str, ...]]:
    """The cells of a point's per-adapter table, in `ADAPTER_HEADERS` order."""
    return [
        (
            a.model,
            str(a.requests),
            str(a.ok),
            format_ms(a.ttft_s.p50),
            format_ms(a.itl_s.p50),
            format_number(a.joules_per_output_token),
        )
        for a in point.adapters
    ]


def meter_description(result: RunResult) -> str:
    """Which energy meter the points were measured with; an estimate is never passed off as a measurement."""
    sources = sorted({p.energy.source for p in result.points if p.energy is not None})
    if not sources:
        return "none: no point has energy figures"
    if "estimated" in sources:
        return ", ".join(sources) + " (estimated, not measured)"
    return ", ".join(sources)


def run_notes(result: RunResult) -> list[tuple[str, str]]:
    """Key/value lines that go under the points table: idle power, meter, SLOs, why a sweep stopped."""

    def watts(value: float | None) -> str:
        return DASH if value is None else f"{value:.1f} W"

    notes = [
        ("idle power", f"{watts(result.idle_watts_before)} before, {watts(result.idle_watts_after)} after"),
        ("energy meter", meter_description(result)),
    ]
    if result.slos:
        notes.append(("SLOs", ", ".join(f"{k} ≤ {v:g}" for k, v in result.slos.items())))
    if result.stopped_because:
        notes.append(("stopped because", result.stopped_because))
    return notes


def describe_check(check: Check) -> str:
    """One line for a check: its detail, then the value against the limit when both are known."""
    parts = [check.detail] if check.detail else []
    if check.value is not None and check.limit is not None:
        parts.append(f"value {check.value:g}, limit {check.limit:g}")
    return "; ".join(parts)


def flagged_checks(result: RunResult) -> list[tuple[PointResult, Check]]:
    """The checks that did not pass, point by point."""
    return [(p, c) for p in result.points for c in p.validity.checks if c.status != "pass"]


def render_summary(result: RunResult, console: Console) -> None:
    """Print the summary of a run.

    Args:
        result: The run to summarise.
        console: Where to print; its width decides how much the table wraps.
    """
    columns = metric_columns(result)
    table = Table(title=f"load test {result.created}", caption=MARKS_LEGEND)
    table.add_column("point", no_wrap=True)
    table.add_column("verdict")
    for column in columns:
        table.add_column(column.header, justify="right")
    table.add_column("", no_wrap=True)
    for point in result.points:
        verdict = point.validity.verdict
        table.add_row(
            point.load.label,
            Text(verdict, style=VERDICT_STYLES[verdict]),
            *(column.cell(point) for column in columns),
            point_mark(result, point),
        )
    console.print(table)

    # One model name means the adapter tables would repeat the points table.
    if len(model_names(result)) > 1:
        for point in result.points:
            adapters = Table(title=f"per model, {point.load.label}", title_justify="left")
            for i, header in enumerate(ADAPTER_HEADERS):
                adapters.add_column(header, justify="left" if i == 0 else "right")
            for row in adapter_rows(point):
                adapters.add_row(*row)
            console.print(adapters)

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
