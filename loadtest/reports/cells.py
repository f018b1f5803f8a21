"""The plain-text cells of a run's tables and notes, built once for the console and the HTML report.

Both show the same numbers in the same units and the same marks: best point, Pareto front, and a
dagger on every figure taken at a saturated point.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from loadtest.results import Check, GroupSummary, PointResult, RunResult, TierSummary, energy_field

DASH = "—"
BEST_MARK = "★"
PARETO_MARK = "◆"
SATURATED_MARK = "†"
SATURATED = "saturated"
MARKS_LEGEND = (
    f"{BEST_MARK} best (lowest J/out token meeting the SLOs)   {PARETO_MARK} on the Pareto front   "
    f"{SATURATED_MARK} taken at a saturated point (answered under 90 % of the offered rate), "
    "kept out of both"
)


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


def at_saturation(value: str, saturated: bool) -> str:
    """A formatted figure, with the saturation mark when it was taken at a saturated point."""
    return f"{value} {SATURATED_MARK}" if saturated and value != DASH else value


def verdict_text(point: PointResult) -> str:
    """The verdict to show: a saturated point's warning says why, a failure stays a failure."""
    if point.validity.saturated and point.validity.verdict != "fail":
        return SATURATED
    return point.validity.verdict


@dataclass(frozen=True)
class Column:
    """One numeric column of a points table: a header (two lines at most) and how to read a cell."""

    header: str
    cell: Callable[[PointResult], str]


@dataclass(frozen=True)
class PointsTable:
    """A table with one row per point: its title and its numeric columns."""

    title: str
    columns: tuple[Column, ...]
    marks: bool = False  # ends with the best/front mark column


def _energy_cell(name: str) -> Callable[[PointResult], str]:
    read = energy_field(name)
    return lambda p: at_saturation(format_number(read(p)), p.validity.saturated)


def _request_joules(p: PointResult) -> str:
    value = None if p.energy is None else p.energy.request_joules.p50
    return at_saturation(format_number(value), p.validity.saturated)


THROUGHPUT = PointsTable(
    "load and throughput",
    (
        Column("ok/\nmeasured", lambda p: f"{p.ok}/{p.measured}"),
        Column("errors", lambda p: str(sum(p.errors.values()))),
        Column("offered\nreq/s", lambda p: format_number(p.offered_rps)),
        Column(
            "answered\nreq/s",
            lambda p: at_saturation(format_number(p.request_throughput), p.validity.saturated),
        ),
        Column("out\ntok/s", lambda p: format_number(p.output_throughput)),
        Column("goodput\nreq/s", lambda p: format_number(p.goodput)),
        Column("sched lag\np99 ms", lambda p: format_ms(p.schedule_lag_s.p99)),
    ),
    marks=True,
)
LATENCY = PointsTable(
    "latency (ms)",
    (
        Column("TTFT\np50", lambda p: format_ms(p.ttft_s.p50)),
        Column("TTFT\np90", lambda p: format_ms(p.ttft_s.p90)),
        Column("TTFT\np99", lambda p: format_ms(p.ttft_s.p99)),
        Column("ITL\np50", lambda p: format_ms(p.itl_s.p50)),
        Column("ITL\np99", lambda p: format_ms(p.itl_s.p99)),
        Column("TPOT\np50", lambda p: format_ms(p.tpot_s.p50)),
        Column("e2e\np50", lambda p: format_ms(p.e2e_s.p50)),
        Column("e2e\np99", lambda p: format_ms(p.e2e_s.p99)),
        Column("e2e p99\nfrom sched", lambda p: format_ms(p.e2e_from_schedule_s.p99)),
    ),
)
ENERGY = PointsTable(
    "energy",
    (
        Column("mean\nwatts", lambda p: format_number(energy_field("mean_watts")(p))),
        Column("J/out\ntok", _energy_cell("joules_per_output_token")),
        Column("J/out tok\nabove idle", _energy_cell("joules_per_output_token_above_idle")),
        Column("marginal\nJ/out tok", _energy_cell("marginal_joules_per_output_token")),
        Column("J/total\ntok", _energy_cell("joules_per_total_token")),
        Column("J/request\np50", _request_joules),
    ),
    marks=True,
)


def points_tables(result: RunResult) -> list[PointsTable]:
    """The tables of points to show: goodput only with SLOs, energy only when some point has it."""
    with_goodput = any(p.goodput is not None for p in result.points)
    throughput = PointsTable(
        THROUGHPUT.title,
        tuple(c for c in THROUGHPUT.columns if with_goodput or not c.header.startswith("goodput")),
        marks=True,
    )
    tables = [throughput, LATENCY]
    if any(p.energy is not None for p in result.points):
        tables.append(ENERGY)
    return tables


def point_mark(result: RunResult, point: PointResult) -> str:
    """The mark of a point: best, on the Pareto front, or nothing."""
    if result.best == point.index:
        return BEST_MARK
    return PARETO_MARK if point.index in result.pareto else ""


# --- per model and per service tier ---------------------------------------------------------------

GROUP_HEADERS = (
    "requests",
    "ok",
    "req/s",
    "out\ntok/s",
    "TTFT\np50 ms",
    "TTFT\np99 ms",
    "ITL\np50 ms",
    "e2e\np99 ms",
    "J/out\ntok",
)
ADAPTER_HEADERS = ("model", *GROUP_HEADERS)
TIER_HEADERS = ("tier", "server\nsaid", *GROUP_HEADERS)


def _group_cells(group: GroupSummary) -> tuple[str, ...]:
    return (
        str(group.requests),
        str(group.ok),
        format_number(group.request_throughput),
        format_number(group.output_throughput),
        format_ms(group.ttft_s.p50),
        format_ms(group.ttft_s.p99),
        format_ms(group.itl_s.p50),
        format_ms(group.e2e_s.p99),
        at_saturation(format_number(group.joules_per_output_token), group.at_saturation),
    )


def model_names(result: RunResult) -> set[str]:
    """Every model name (base model or adapter) seen by any point."""
    return {a.model for p in result.points for a in p.adapters}


def adapter_rows(point: PointResult) -> list[tuple[str, ...]]:
    """The cells of a point's per-model table, in `ADAPTER_HEADERS` order."""
    return [(a.model, *_group_cells(a)) for a in point.adapters]


def response_tiers_text(tier: TierSummary) -> str:
    """What the server said it served the tier's answered requests with, most frequent first."""
    counts = sorted(tier.response_tiers.items(), key=lambda item: (-item[1], item[0]))
    return ", ".join(f"{name} {count}" for name, count in counts) or DASH


def tier_rows(point: PointResult) -> list[tuple[str, ...]]:
    """The cells of a point's per-service-tier table, in `TIER_HEADERS` order."""
    return [(t.service_tier, response_tiers_text(t), *_group_cells(t)) for t in point.tiers]


# --- notes and checks -----------------------------------------------------------------------------


def meter_description(result: RunResult) -> str:
    """Which energy meter the points were measured with; an estimate is never passed off as a measurement."""
    sources = sorted({p.energy.source for p in result.points if p.energy is not None})
    if not sources:
        return "none: no point has energy figures"
    if "estimated" in sources:
        return ", ".join(sources) + " (estimated, not measured)"
    return ", ".join(sources)


def run_notes(result: RunResult) -> list[tuple[str, str]]:
    """Key/value lines that go under the points tables: idle power, meter, SLOs, saturation, stop."""

    def watts(value: float | None) -> str:
        return DASH if value is None else f"{value:.1f} W"

    notes = [
        ("idle power", f"{watts(result.idle_watts_before)} before, {watts(result.idle_watts_after)} after"),
        ("energy meter", meter_description(result)),
    ]
    if result.slos:
        notes.append(("SLOs", ", ".join(f"{k} ≤ {v:g}" for k, v in result.slos.items())))
    saturated = [p.load.label for p in result.points if p.validity.saturated]
    if saturated:
        notes.append(("saturated points", ", ".join(saturated)))
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


def single_line(headers: Sequence[str]) -> list[str]:
    """Two-line headers on one line, for formats that wrap by themselves."""
    return [h.replace("\n", " ") for h in headers]
