"""Write a run as one self-contained HTML page: tables, validity checks and plots inlined as PNG.

The page loads nothing from elsewhere (inline CSS, images as data URIs) so it can be mailed or archived
as a single file. The plots come from `loadtest.reports.plots`, rendered on the Agg canvas.
"""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterable, Sequence
from html import escape
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

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
    single_line,
    tier_rows,
    verdict_text,
)
from loadtest.reports.plots import plot_energy, plot_front, plot_latency, plot_throughput
from loadtest.results import RunResult

NO_ENERGY_NOTE = (
    "No point has energy figures (the server exposed no energy meter), so the J/token plots are left out."
)
_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; }
th { background: #f3f3f3; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.verdict-fail { background: #fde8e8; } tr.saturated { background: #fff1e0; }
.pass { color: #11772d; } .warn { color: #9a6700; } td.saturated { color: #b35900; font-weight: bold; }
.fail { color: #c62828; font-weight: bold; } .note { color: #555; font-style: italic; }
figure { margin: 1em 0; } img { max-width: 100%; }
"""


def _table(headers: Sequence[str], rows: Iterable[Sequence[str]], numeric_from: int = 1) -> str:
    head = f"<tr>{''.join(f'<th>{escape(h)}</th>' for h in single_line(headers))}</tr>" if headers else ""
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


def _points_table(result: RunResult, spec: PointsTable) -> str:
    headers = ["point", *(["verdict"] if spec.marks else []), *single_line([c.header for c in spec.columns])]
    headers += ["mark"] if spec.marks else []
    rows = []
    for p in result.points:
        verdict = verdict_text(p)
        classes = f"verdict-{p.validity.verdict}" + (f" {SATURATED}" if p.validity.saturated else "")
        cells = [f"<td>{escape(p.load.label)}</td>"]
        if spec.marks:
            cells.append(f'<td class="{verdict}">{verdict}</td>')
        cells += [f"<td class=num>{escape(c.cell(p))}</td>" for c in spec.columns]
        if spec.marks:
            cells.append(f"<td>{escape(point_mark(result, p))}</td>")
        rows.append(f'<tr class="{classes}">{"".join(cells)}</tr>')
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    return f"<h3>{escape(spec.title)}</h3><table><tr>{head}</tr>{''.join(rows)}</table>"


def _points_section(result: RunResult) -> str:
    tables = "".join(_points_table(result, spec) for spec in points_tables(result))
    return tables + f"<p class=note>{escape(MARKS_LEGEND)}</p>"


def _groups_sections(result: RunResult) -> list[str]:
    sections = []
    # One model name means the per-model tables would repeat the points tables.
    if len(model_names(result)) > 1:
        sections.append("<h2>Per model</h2>")
        for point in result.points:
            table = _table(ADAPTER_HEADERS, adapter_rows(point))
            sections.append(f"<h3>{escape(point.load.label)}</h3>" + table)
    if any(point.tiers for point in result.points):
        sections.append('<h2 id="per-tier">Per service tier</h2>')
        for point in result.points:
            table = _table(TIER_HEADERS, tier_rows(point), numeric_from=2)
            sections.append(f"<h3>{escape(point.load.label)}</h3>" + table)
    return sections


def _checks_section(result: RunResult) -> str:
    flagged = flagged_checks(result)
    if not flagged:
        return "<p>Every check of every point passed.</p>"
    rows = [(p.load.label, c.name, c.status, describe_check(c)) for p, c in flagged]
    return _table(("point", "check", "status", "detail"), rows, numeric_from=4)


def _img(fig: Figure, plot_id: str, alt: str) -> str:
    buffer = io.BytesIO()
    FigureCanvasAgg(fig).print_png(buffer)
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f'<figure><img id="{plot_id}" alt="{escape(alt)}" src="data:image/png;base64,{data}"></figure>'


def _plots_section(result: RunResult) -> str:
    parts = []
    latency = plot_latency(result)
    alt = "TTFT, ITL and end-to-end latency percentiles against offered load"
    parts.append(_img(latency, "plot-latency", alt) if latency else "<p class=note>No latencies to plot.</p>")
    alt = "requests/s answered and offered, and output tokens/s, against offered load, on two panels"
    parts.append(_img(plot_throughput(result), "plot-throughput", alt))
    if all(p.energy is None for p in result.points):
        return "".join(parts) + f'<p class=note id="no-energy">{escape(NO_ENERGY_NOTE)}</p>'
    energy = plot_energy(result)
    alt = "joules per output token, total and above idle, against offered load"
    parts.append(_img(energy, "plot-energy", alt) if energy else "<p class=note>No J/token to plot.</p>")
    front = plot_front(result)
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
        "<h2>Points</h2>" + _points_section(result),
        "<h2>Plots</h2>" + _plots_section(result),
        *_groups_sections(result),
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
