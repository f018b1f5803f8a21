"""Compare two runs point by point: each headline metric in A, in B, and the ratio B/A.

Points are paired by position, which is how a sweep numbers them; a pair whose loads differ is still
compared, with a note, so that two sweeps of different shapes can be lined up on purpose.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import zip_longest

from rich.console import Console
from rich.table import Table
from rich.text import Text

from loadtest.aggregate import ratio
from loadtest.reports.cells import DASH, format_ms, format_number
from loadtest.results import PointResult, RunResult, energy_field

# Ratios within this band of 1 are left uncoloured: run-to-run noise of a point is a few per cent.
NOISE = 0.05


@dataclass(frozen=True)
class Metric:
    """A compared metric: its key (base units), a display name, how to read and format it, and its sense."""

    key: str
    name: str
    read: Callable[[PointResult], float | None]
    fmt: Callable[[float | None], str]
    higher_is_better: bool


METRICS = (
    Metric("request_throughput", "req/s", lambda p: p.request_throughput, format_number, True),
    Metric("output_throughput", "output tok/s", lambda p: p.output_throughput, format_number, True),
    Metric("ttft_p50_s", "TTFT p50 ms", lambda p: p.ttft_s.p50, format_ms, False),
    Metric("ttft_p99_s", "TTFT p99 ms", lambda p: p.ttft_s.p99, format_ms, False),
    Metric("itl_p50_s", "ITL p50 ms", lambda p: p.itl_s.p50, format_ms, False),
    Metric("itl_p99_s", "ITL p99 ms", lambda p: p.itl_s.p99, format_ms, False),
    Metric("e2e_p99_s", "e2e p99 ms", lambda p: p.e2e_s.p99, format_ms, False),
    Metric(
        "joules_per_output_token",
        "J/out token",
        energy_field("joules_per_output_token"),
        format_number,
        False,
    ),
    Metric(
        "joules_per_output_token_above_idle",
        "J/out token above idle",
        energy_field("joules_per_output_token_above_idle"),
        format_number,
        False,
    ),
)


@dataclass(frozen=True)
class MetricComparison:
    """One metric of a pair of points; values in base units."""

    metric: Metric
    a: float | None
    b: float | None
    ratio: float | None  # b / a; None when either is missing or a is 0


@dataclass(frozen=True)
class ComparedPoint:
    """A pair of points at the same position in the two runs."""

    position: int
    label_a: str | None  # None when run A has no point here
    label_b: str | None
    note: str  # why the pair is not like for like (loads differ, saturated); empty when it is
    metrics: tuple[MetricComparison, ...]

    @property
    def label(self) -> str:
        """The label to show: the shared one, or both when they differ."""
        if self.label_a == self.label_b:
            return self.label_a or ""
        return f"{self.label_a or DASH} | {self.label_b or DASH}"


def compare_results(a: RunResult, b: RunResult) -> list[ComparedPoint]:
    """Pair the points of two runs by position and compare `METRICS` on each pair.

    Args:
        a: The reference run (the denominator of the ratios).
        b: The run compared with it.

    Returns:
        One entry per position present in either run.
    """
    compared = []
    for position, (pa, pb) in enumerate(zip_longest(a.points, b.points)):
        label_a = None if pa is None else pa.load.label
        label_b = None if pb is None else pb.load.label
        if pa is None or pb is None:
            note = f"only in {'B' if pa is None else 'A'}"
        elif label_a != label_b:
            note = "loads differ"
        else:
            note = ""
        # Figures of a saturated point describe a server that could not keep up: say so beside them.
        saturated = [run for run, p in (("A", pa), ("B", pb)) if p is not None and p.validity.saturated]
        if saturated:
            note = ", ".join(filter(None, (note, f"saturated in {' and '.join(saturated)}")))
        metrics = []
        for metric in METRICS:
            va = None if pa is None else metric.read(pa)
            vb = None if pb is None else metric.read(pb)
            metrics.append(MetricComparison(metric, va, vb, ratio(vb, va)))
        compared.append(ComparedPoint(position, label_a, label_b, note, tuple(metrics)))
    return compared


def format_ratio(value: float | None) -> str:
    """Format B/A as a multiplier."""
    return DASH if value is None else f"{value:.2f}×"


def _ratio_style(comparison: MetricComparison) -> str:
    if comparison.ratio is None or abs(comparison.ratio - 1) <= NOISE:
        return ""
    better = (comparison.ratio > 1) == comparison.metric.higher_is_better
    return "green" if better else "red"


def _rows(a: RunResult, b: RunResult) -> list[tuple[ComparedPoint, MetricComparison, bool]]:
    """Every (pair, metric), with whether it is the first row of its pair."""
    return [(cp, mc, i == 0) for cp in compare_results(a, b) for i, mc in enumerate(cp.metrics)]


def render_compare(a: RunResult, b: RunResult, console: Console, names: Sequence[str] = ("A", "B")) -> None:
    """Print the comparison of two runs as a table.

    Args:
        a: The reference run.
        b: The run compared with it.
        console: Where to print.
        names: What to call the two runs in the headers.
    """
    name_a, name_b = names
    table = Table(title=f"{name_b} vs {name_a}", caption=f"green: {name_b} better by more than {NOISE:.0%}")
    table.add_column("point", no_wrap=True)
    table.add_column("metric", no_wrap=True)
    table.add_column(name_a, justify="right")
    table.add_column(name_b, justify="right")
    table.add_column(f"{name_b}/{name_a}", justify="right")
    rows = _rows(a, b)
    for i, (cp, mc, first) in enumerate(rows):
        point = Text(f"{cp.label}  ({cp.note})" if cp.note else cp.label) if first else Text("")
        last_of_pair = i + 1 == len(rows) or rows[i + 1][2]
        table.add_row(
            point,
            mc.metric.name,
            mc.metric.fmt(mc.a),
            mc.metric.fmt(mc.b),
            Text(format_ratio(mc.ratio), style=_ratio_style(mc)),
            end_section=last_of_pair,
        )
    console.print(table)


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|")


def compare_markdown(a: RunResult, b: RunResult, names: Sequence[str] = ("A", "B")) -> str:
    """The comparison as a GitHub-markdown table, one row per point and metric.

    Args:
        a: The reference run.
        b: The run compared with it.
        names: What to call the two runs in the headers.

    Returns:
        The table, lines joined by newlines, without a trailing one.
    """
    name_a, name_b = (_md_escape(n) for n in names)
    lines = [
        f"| point | metric | {name_a} | {name_b} | {name_b}/{name_a} |",
        "| --- | --- | ---: | ---: | ---: |",
    ]
    for cp, mc, first in _rows(a, b):
        point = _md_escape(f"{cp.label} ({cp.note})" if cp.note else cp.label) if first else ""
        cells = (point, mc.metric.name, mc.metric.fmt(mc.a), mc.metric.fmt(mc.b), format_ratio(mc.ratio))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
