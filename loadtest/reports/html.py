"""Write a run as one self-contained HTML page: tables, validity checks and plots inlined as PNG.

The page loads nothing from elsewhere (inline CSS, images as data URIs) so it can be mailed or archived
as a single file. Plots use matplotlib's object API on the Agg canvas, never pyplot, so writing a
report leaves no global figure state behind and needs no display.
"""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Callable, Iterable, Sequence
from html import escape
from pathlib import Path

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from loadtest.reports.console import (
    ADAPTER_HEADERS,
    MARKS_LEGEND,
    adapter_rows,
    describe_check,
    flagged_checks,
    metric_columns,
    model_names,
    point_mark,
    run_notes,
)
from loadtest.results import PointResult, RunResult, energy_field

NO_ENERGY_NOTE = (
    "No point has energy figures (the server exposed no energy meter), so the J/token plots are left out."
)
_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; }
th { background: #f3f3f3; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.verdict-fail { background: #fde8e8; } .pass { color: #11772d; } .warn { color: #9a6700; }
.fail { color: #c62828; font-weight: bold; } .note { color: #555; font-style: italic; }
figure { margin: 1em 0; } img { max-width: 100%; }
"""
_Read = Callable[[PointResult], float | None]


def _table(headers: Sequence[str], rows: Iterable[Sequence[str]], numeric_from: int = 1) -> str:
    head = f"<tr>{''.join(f'<th>{escape(h)}</th>' for h in headers)}</tr>" if headers else ""
    body = "".join(
        "<tr>"
        + "".join(f"<td{' class=num' if i >= numeric_from else ''}>{escape(c)}</td>" for i, c in enumerate(r))
        + "</tr>"
        for r in rows
    )
    return f"<table>{head}{body}</table>"


def _flatten(mapping: dict, prefix: str = "") -> list[tuple[str, str]]:
    """Nested dicts as dotted keys, other values as compact JSON (strings as they are)."""
    rows = []
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            rows += _flatten(value, f"{name}.")
        else:
            rows.append((name, value if isinstance(value, str) else json.dumps(value, default=str)))
    return rows


def _points_table(result: RunResult) -> str:
    columns = metric_columns(result)
    headers = ["point", "verdict", *(c.header.replace("\n", " ") for c in columns), "mark"]
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    rows = []
    for p in result.points:
        verdict = p.validity.verdict
        cells = "".join(f"<td class=num>{escape(c.cell(p))}</td>" for c in columns)
        rows.append(
            f'<tr class="verdict-{verdict}"><td>{escape(p.load.label)}</td>'
            f'<td class="{verdict}">{verdict}</td>{cells}<td>{escape(point_mark(result, p))}</td></tr>'
        )
    return f"<table><tr>{head}</tr>{''.join(rows)}</table><p class=note>{escape(MARKS_LEGEND)}</p>"


def _checks_section(result: RunResult) -> str:
    flagged = flagged_checks(result)
    if not flagged:
        return "<p>Every check of every point passed.</p>"
    rows = [(p.load.label, c.name, c.status, describe_check(c)) for p, c in flagged]
    return _table(("point", "check", "status", "detail"), rows, numeric_from=4)


# --- plots -------------------------------------------------------------------------------------------


def _x_label(points: Sequence[PointResult]) -> str:
    modes = {p.load.mode for p in points}
    if modes == {"closed"}:
        return "concurrency"
    return "offered load (req/s)" if modes == {"open"} else "offered load (req/s; concurrency when closed)"


def _xy(points: Iterable[PointResult], read: _Read) -> tuple[list[float], list[float]]:
    pairs = sorted((p.load.offered, v) for p in points if (v := read(p)) is not None)
    return [x for x, _ in pairs], [y for _, y in pairs]


def _series(
    ax: Axes,
    points: Sequence[PointResult],
    read: _Read,
    label: str,
    *,
    scale: float = 1.0,
    color: str | None = None,
) -> bool:
    """A line against load; failed points get a red cross on top. Returns whether anything was drawn."""
    xs, ys = _xy(points, read)
    if not xs:
        return False
    ax.plot(xs, [y * scale for y in ys], marker="o", label=label, color=color)
    fx, fy = _xy((p for p in points if p.validity.verdict == "fail"), read)
    ax.scatter(fx, [y * scale for y in fy], marker="x", s=90, color="red", zorder=5)
    return True


def _mark_failed(ax: Axes, points: Sequence[PointResult]) -> None:
    for i, x in enumerate(sorted({p.load.offered for p in points if p.validity.verdict == "fail"})):
        ax.axvline(x, color="red", linestyle=":", alpha=0.7, label="validity: fail (×)" if i == 0 else None)


def _log_if_wide(ax: Axes) -> None:
    # Latencies and J/token span decades across a sweep; a log axis keeps the small ones readable.
    ys = [y for line in ax.get_lines() for y in line.get_ydata()]
    if ys and min(ys) > 0 and max(ys) / min(ys) > 20:
        ax.set_yscale("log")


def _figure() -> tuple[Figure, Axes]:
    fig = Figure(figsize=(8, 4.5), layout="constrained")
    return fig, fig.add_subplot()


def _plot_latency(result: RunResult) -> Figure | None:
    fig, ax = _figure()
    pts = result.points
    drawn = [
        _series(ax, pts, lambda p: p.ttft_s.p50, "TTFT p50", scale=1e3),
        _series(ax, pts, lambda p: p.ttft_s.p99, "TTFT p99", scale=1e3),
        _series(ax, pts, lambda p: p.itl_s.p50, "ITL p50", scale=1e3),
        _series(ax, pts, lambda p: p.itl_s.p99, "ITL p99", scale=1e3),
        _series(ax, pts, lambda p: p.e2e_s.p99, "e2e p99", scale=1e3),
    ]
    if not any(drawn):
        return None
    _log_if_wide(ax)
    _mark_failed(ax, pts)
    ax.set(xlabel=_x_label(pts), ylabel="latency (ms)", title="Latency vs load")
    ax.legend(fontsize=8)
    return fig


def _plot_throughput(result: RunResult) -> Figure:
    fig, ax = _figure()
    pts = result.points
    _series(ax, pts, lambda p: p.output_throughput, "output tok/s")
    right = ax.twinx()
    # The twin axis starts its own colour cycle; pin the colour so the two lines differ.
    _series(right, pts, lambda p: p.request_throughput, "req/s", color="C1")
    _mark_failed(ax, pts)
    ax.set(xlabel=_x_label(pts), ylabel="output tokens/s", title="Throughput vs load")
    right.set_ylabel("requests/s")
    handles, labels = ax.get_legend_handles_labels()
    more_handles, more_labels = right.get_legend_handles_labels()
    ax.legend(handles + more_handles, labels + more_labels, fontsize=8)
    return fig


def _energy_title(result: RunResult, title: str) -> str:
    estimated = any(p.energy is not None and p.energy.source == "estimated" for p in result.points)
    return f"{title} (estimated, not measured)" if estimated else title


def _plot_energy(result: RunResult) -> Figure | None:
    fig, ax = _figure()
    pts = [p for p in result.points if p.energy is not None]
    total = _series(ax, pts, energy_field("joules_per_output_token"), "J/output token")
    above = _series(ax, pts, energy_field("joules_per_output_token_above_idle"), "above idle")
    if not (total or above):
        return None
    _log_if_wide(ax)
    _mark_failed(ax, pts)
    ax.set(xlabel=_x_label(pts), ylabel="joules per output token")
    ax.set_title(_energy_title(result, "Energy per output token vs load"))
    ax.legend(fontsize=8)
    return fig


def _plot_front(result: RunResult) -> Figure | None:
    def xy(p: PointResult) -> tuple[float, float] | None:
        x, y = p.e2e_from_schedule_s.p99, energy_field("joules_per_output_token")(p)
        return None if x is None or y is None else (x, y)

    placed = {p.index: (p, xy_) for p in result.points if (xy_ := xy(p)) is not None}
    if not placed:
        return None
    fig, ax = _figure()
    for failed, style in ((False, {"color": "C0"}), (True, {"facecolors": "none", "edgecolors": "grey"})):
        group = [xy_ for p, xy_ in placed.values() if (p.validity.verdict == "fail") == failed]
        if group:
            label = "validity: fail (hollow)" if failed else "valid"
            ax.scatter([x for x, _ in group], [y for _, y in group], s=50, label=label, **style)
    front = sorted(placed[i][1] for i in result.pareto if i in placed)
    if front:
        ax.plot([x for x, _ in front], [y for _, y in front], color="C1", label="Pareto front")
    if result.best in placed:
        bx, by = placed[result.best][1]
        ax.scatter([bx], [by], marker="*", s=300, color="gold", edgecolors="black", zorder=6, label="best")
    for p, (x, y) in placed.values():
        ax.annotate(p.load.label, (x, y), textcoords="offset points", xytext=(5, 5), fontsize=7)
    ax.set(xlabel="p99 end-to-end latency from schedule (s)", ylabel="joules per output token")
    ax.set_title(_energy_title(result, "Energy vs tail latency"))
    ax.legend(fontsize=8)
    return fig


def _img(fig: Figure, plot_id: str, alt: str) -> str:
    buffer = io.BytesIO()
    FigureCanvasAgg(fig).print_png(buffer)
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f'<figure><img id="{plot_id}" alt="{escape(alt)}" src="data:image/png;base64,{data}"></figure>'


def _plots_section(result: RunResult) -> str:
    parts = []
    latency = _plot_latency(result)
    alt = "TTFT, ITL and end-to-end latency percentiles against offered load"
    parts.append(_img(latency, "plot-latency", alt) if latency else "<p class=note>No latencies to plot.</p>")
    alt = "output tokens/s and requests/s against offered load"
    parts.append(_img(_plot_throughput(result), "plot-throughput", alt))
    if all(p.energy is None for p in result.points):
        return "".join(parts) + f'<p class=note id="no-energy">{escape(NO_ENERGY_NOTE)}</p>'
    energy = _plot_energy(result)
    alt = "joules per output token, total and above idle, against offered load"
    parts.append(_img(energy, "plot-energy", alt) if energy else "<p class=note>No J/token to plot.</p>")
    front = _plot_front(result)
    alt = "joules per output token against p99 latency, with the Pareto front and the best point"
    parts.append(_img(front, "plot-front", alt) if front else "<p class=note>No point to place.</p>")
    return "".join(parts)


def write_html(result: RunResult, path: str | Path) -> Path:
    """Write the report of a run as one HTML file with everything inlined.

    Args:
        result: The run.
        path: The file to write.

    Returns:
        The path written.
    """
    sections = [
        f"<h1>wattserve load test</h1><p>created {escape(result.created)}</p>",
        "<h2>Summary</h2>" + _table((), run_notes(result), numeric_from=2),
        "<h2>Points</h2>" + _points_table(result),
        "<h2>Plots</h2>" + _plots_section(result),
    ]
    if len(model_names(result)) > 1:
        sections.append("<h2>Per model</h2>")
        for point in result.points:
            sections.append(
                f"<h3>{escape(point.load.label)}</h3>" + _table(ADAPTER_HEADERS, adapter_rows(point))
            )
    sections += [
        "<h2>Validity checks</h2>" + _checks_section(result),
        "<h2>Configuration</h2>" + _table(("key", "value"), _flatten(result.config), numeric_from=2),
        "<h2>Environment</h2>" + _table(("key", "value"), _flatten(result.environment), numeric_from=2),
    ]
    page = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>wattserve load test {escape(result.created)}</title><style>{_CSS}</style></head>"
        f"<body>{''.join(sections)}</body></html>\n"
    )
    path = Path(path)
    path.write_text(page, encoding="utf-8")
    return path
